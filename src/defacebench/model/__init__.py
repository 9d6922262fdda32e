"""The brain-age model: the paper's 3D CNN (:mod:`.cnn`), its augmentation (:mod:`.augment`),
the science settings of a run (:mod:`.profiles`), the training loop (:mod:`.feed`,
:mod:`.trainer`, :mod:`.train`), the load-and-predict API analysis may use
(:mod:`.inference`) and the fast paths with their speed settings (:mod:`.accel`).

Torch is imported by the submodules, not here, so ``import defacebench.model`` is cheap.
"""
