"""What the real models need beyond boundlab's own dependencies, and the error that says so."""

from __future__ import annotations

import importlib


class ExtraMissing(ImportError):
    """A real model was asked for but the ``models`` extra (or the model's wheel) is missing."""


def require(modules: tuple[str, ...], what: str, hint: str) -> tuple:
    """Import ``modules`` (dotted names) and return them, or raise ``ExtraMissing`` naming the first
    missing one, what needed it and how to install it."""
    try:
        return tuple(importlib.import_module(name) for name in modules)
    except ImportError as error:
        missing = error.name or str(error)
        raise ExtraMissing(f"{what} needs the models extra and its wheel ({missing} is missing): {hint}") from error
