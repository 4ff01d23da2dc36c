"""Objects named `module:attribute` on the command line (plugged-in rewards and domains), found as `python -m` finds
modules: from the current directory too."""

import importlib
import importlib.metadata
import os
import sys


def entry_points(group: str) -> dict[str, str]:
    """The installed entry points of `group`: name -> "module:attribute"."""
    return {entry.name: entry.value for entry in importlib.metadata.entry_points(group=group)}


def import_object(target: str):
    """The object `module:attribute` names; ValueError saying what is wrong (the module's own import error too)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{target}: expected module:attribute")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any import-time failure of the user's module
        raise ValueError(f"cannot import {module_name} ({type(error).__name__}: {error})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{module_name} has no {attribute!r}") from None
