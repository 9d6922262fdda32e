"""Analysis of trained runs: what it reads (:mod:`.inputs`), metrics (:mod:`.metrics`),
statistical tests (:mod:`.statistics`), figures (:mod:`.figures`) and the stage that writes
them all (:mod:`.stage`).

Reads ``STUDY/runs/<condition>/run-<k>/predictions.csv`` and writes ``STUDY/results/*.csv``
and ``STUDY/figures/*.png`` (docs/analysis.md; paths from :mod:`defacebench.layout`).
"""
