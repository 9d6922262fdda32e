"""The imaging layer every stage shares: registration (:mod:`.registration`), brain extraction
(:mod:`.brain`), grids (:mod:`.grids`), resampling (:mod:`.resample`), templates
(:mod:`.templates`), masks (:mod:`.masks`), block means (:mod:`.blocks`) and an optional
atrophy-invariant placement (:mod:`.placement`, needs intracranial masks).

Nothing here knows about a study directory or a stage; heavy libraries (ANTsPy, deepbet)
are imported by the functions that need them.
"""
