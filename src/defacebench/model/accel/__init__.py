"""Fast paths of the brain-age CNN's training step: the same functions, computed faster.

:mod:`.settings` holds the speed switches (:class:`~.settings.SpeedSettings`), apart from
the science settings of :mod:`defacebench.model.profiles`; :mod:`.fast` is the fused first
block; :mod:`.triton_block` and :mod:`.triton_rotate` are its CUDA kernels. Each is checked
against the plain module or the PyTorch operation it replaces (tests/test_model_cnn.py,
tests/test_triton_*.py); the measurements that chose the defaults are in docs/training.md.
"""
