"""Analysis of trained runs: metrics (:mod:`.metrics`), statistical tests
(:mod:`.statistics`), figures (:mod:`.figures`) and the stage that writes them all
(:mod:`.study`).

Reads ``STUDY/runs/<condition>/run-<k>/predictions.csv`` and writes ``STUDY/results/*.csv``
and ``STUDY/figures/*.png`` (docs/analysis.md).
"""
