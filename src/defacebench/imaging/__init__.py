"""The imaging layer every stage shares: registration (:mod:`.registration`), brain extraction
(:mod:`.brain`), grids and the one resampler (:mod:`.grids`), templates (:mod:`.templates`),
masks (:mod:`.masks`) and block means (:mod:`.blocks`).

Nothing here knows about a study directory or a stage; heavy libraries (ANTsPy, deepbet)
are imported by the functions that need them.
"""
