"""`module.path:name` references in configs (a game, a feature extractor) to code outside distgan."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from distgan.errors import ConfigError


def import_object(spec: str, key: str) -> Any:
    """The object `spec` = `module.path:name` names; ConfigError naming `key` when it cannot be
    imported. The working directory is searched too, as `python -m` does, so a module next to
    the user's configs works from the `distgan` command."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}={spec!r}: expected module.path:name")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after the installed packages: never shadows them
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{key}={spec!r}: cannot import it ({exc})") from None
