"""Preprocessing: one scan into a template grid for every condition (:mod:`.scan`, with the
N4 bias field of :mod:`.bias`), per-scan work files (:mod:`.work`), condition stores
(:mod:`.stores`), QC (:mod:`.qc`) and the stage over a cohort (:mod:`.stage`)."""
