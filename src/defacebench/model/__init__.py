"""The brain-age model: the paper's 3D CNN (:mod:`.cnn`), its augmentation (:mod:`.augment`),
training profiles (:mod:`.profiles`) and training loop (:mod:`.train`).

Torch is imported by the submodules, not here, so ``import defacebench.model`` is cheap.
"""
