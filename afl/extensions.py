"""Code from outside afl named in a config: an import path ``"package.module:OBJECT"`` or the name
of an installed entry point of a group (``afl.rules``, ``afl.models``, ``afl.datasets``). No torch: the login node
checks names here; what the object must be is its caller's business (docs/extending.md)."""

from __future__ import annotations

import importlib
import importlib.metadata

from afl.errors import config_fail

RULE_GROUP = "afl.rules"  # entry points of installed server rules (afl.rules.Rule objects)
MODEL_GROUP = "afl.models"  # entry points of installed model factories (afl.learning.models.build)
DATA_GROUP = "afl.datasets"  # entry points of installed dataset providers (afl.data.datasets.load)


def external(group: str, name: str) -> bool:
    """Whether ``name`` names code outside afl: an import path, or an installed entry point of ``group``."""
    return ":" in name or bool(importlib.metadata.entry_points(group=group, name=name))


def load(group: str, key: str, name: str):
    """The object ``name`` names (``external``); a ``ConfigError`` naming ``key`` if it cannot be loaded."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            config_fail(key, f"cannot import {module} for {name} ({exc})",
                        "put the package's folder on PYTHONPATH or pip install it")
        except AttributeError:
            config_fail(key, f"{module} has no {attr}", f"name an object defined in {module}")
    found = importlib.metadata.entry_points(group=group, name=name)  # the config checked: one is
    try:
        return next(iter(found)).load()
    except Exception as exc:  # the user's package failed to import: say which, in one line
        config_fail(key, f"the {group} entry point {name} does not load ({type(exc).__name__}: {exc})",
                    "fix or reinstall the package that provides it")
