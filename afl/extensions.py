"""Code from outside afl named in a config: an import path ``"package.module:OBJECT"`` or the name
of an installed entry point of a group (``afl.rules``, ``afl.models``, ``afl.datasets``). No torch: the login node
checks names here; what the object must be is its caller's business (docs/extending.md)."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util

from afl.errors import config_fail

RULE_GROUP = "afl.rules"  # entry points of installed server rules (afl.rules.Rule objects)
MODEL_GROUP = "afl.models"  # entry points of installed model factories (afl.learning.models.build)
DATA_GROUP = "afl.datasets"  # entry points of installed dataset providers (afl.data.datasets.load)


def external(group: str, name: str, key: str | None = None) -> bool:
    """Whether ``name`` names code outside afl: an import path, or an installed entry point of ``group``.
    With ``key``, an import path whose module cannot be found on this node is a ``ConfigError``
    naming ``key``: found, not imported (``findable``), so a login node checks a model's or a
    dataset's path without running the user's code or loading torch."""
    if ":" not in name:
        return bool(importlib.metadata.entry_points(group=group, name=name))
    module, _, attr = name.partition(":")
    if key is not None and not (module and attr and findable(module)):
        config_fail(key, f"cannot find module {module or '(none)'} of {name!r} on this node"
                    + ("" if attr else " nor an object after the colon"),
                    "write 'package.module:OBJECT' and put the package's folder on PYTHONPATH or pip install it")
    return True


def findable(module: str) -> bool:
    """Whether the dotted ``module`` can be found on ``sys.path``, without executing any of it: the top
    package is looked up by its spec, each submodule in its parent's folders."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for depth in range(2, len(parts) + 1):
            if spec is None or not spec.submodule_search_locations:
                return False
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), spec.submodule_search_locations)
    except (ImportError, ValueError):
        return False
    return spec is not None


def load_function(group: str, key: str, name: str, what: str, signature: str):
    """``load``, and a ``ConfigError`` naming ``key`` unless the object is callable: ``what`` it is
    for (e.g. "model factory") and its ``signature`` (e.g. "(input_shape, num_classes) -> nn.Module")."""
    obj = load(group, key, name)
    if not callable(obj):
        config_fail(key, f"{name} is a {type(obj).__name__}, not a {what}", f"point it at a function {signature}")
    return obj


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
