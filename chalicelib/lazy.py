"""Imports on first use, so a cold start pays only for what the request it serves needs.

`import app` is the Lambda's init: every module it imports is paid for once per container, by
whichever request comes first, though most routes need a fraction of them (`/` and the nonce no
compute code). app.py names its route modules here, and each is imported the first time a route
touches it.
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def module(name: str) -> ModuleType:
    """`name`, executed on first attribute access (importlib's LazyLoader); the module itself
    if it is imported already."""
    found = sys.modules.get(name)
    if found is not None:
        return found
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    lazy = importlib.util.module_from_spec(spec)
    sys.modules[name] = lazy
    loader.exec_module(lazy)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, lazy)  # as a real import binds it on its package
    return lazy

