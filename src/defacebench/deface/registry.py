"""The defacing methods by name, in the paper's order (plus quickshear)."""

from __future__ import annotations

import importlib
from types import ModuleType

from defacebench.io.errors import InputError

METHODS: tuple[str, ...] = ("afni", "fsl", "pydeface", "spm", "quickshear")
BACKENDS: tuple[str, ...] = ("builtin", "native")


def get_method(name: str) -> ModuleType:
    """The module implementing a built-in method (``removal_mask(ctx)``, ``NEEDS``)."""
    if name not in METHODS:
        raise InputError(f"unknown defacing method {name!r}; choose from {', '.join(METHODS)}")
    return importlib.import_module(f"defacebench.deface.{name}")


def parse_methods(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"afni,fsl"`` -> ``("afni", "fsl")``; InputError on unknown or empty."""
    items = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if not items:
        raise InputError("no defacing method given")
    for item in items:
        if item not in METHODS:
            raise InputError(f"unknown defacing method {item!r}; choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(items))
