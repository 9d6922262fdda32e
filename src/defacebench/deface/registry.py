"""The methods by name: the paper's defacers, quickshear, then the refacers."""

from __future__ import annotations

import importlib
from types import ModuleType

from defacebench.conditions import METHODS, parse_methods
from defacebench.io.errors import InputError

__all__ = ["BACKENDS", "METHODS", "get_method", "parse_methods"]

BACKENDS: tuple[str, ...] = ("builtin", "native")


def get_method(name: str) -> ModuleType:
    """The module implementing a built-in method (``removal_mask(ctx)``, ``NEEDS``)."""
    if name not in METHODS:
        raise InputError(f"unknown defacing method {name!r}; choose from {', '.join(METHODS)}")
    return importlib.import_module(f"defacebench.deface.{name}")
