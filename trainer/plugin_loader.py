"""Discovery of fine-tuning methods: every ``*.py`` in the plugins folder is imported on its own; a
file that fails to import, or defines a method badly, is reported by name and the others still load."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from trainer.plugins import FineTuningMethod, PluginMeta

log = logging.getLogger(__name__)


class UnknownMethod(LookupError):
    pass


@dataclass
class PluginRegistry:
    methods: dict[str, type[FineTuningMethod]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file name -> what went wrong

    def get(self, name: str) -> type[FineTuningMethod]:
        try:
            return self.methods[name]
        except KeyError:
            known = ", ".join(sorted(self.methods)) or "none"
            broken = f"; plugin files that failed to load: {', '.join(sorted(self.errors))}" if self.errors else ""
            raise UnknownMethod(f"unknown fine-tuning method {name!r} (known: {known}{broken})") from None


def discover_plugins(directory: Path) -> PluginRegistry:
    registry = PluginRegistry()
    if not directory.is_dir():
        registry.errors[str(directory)] = "plugins folder does not exist"
        return registry
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            found = _load_file(path)
        except BaseException as error:  # a plugin may raise anything at import, even SystemExit
            registry.errors[path.name] = _one_line(error)
            log.error("plugin file %s failed to load: %s", path.name, registry.errors[path.name])
            continue
        for method in found:
            name = method.meta.name
            if name in registry.methods:
                registry.errors[path.name] = f"method name {name!r} is already defined by another plugin"
                continue
            registry.methods[name] = method
    return registry


def _load_file(path: Path) -> list[type[FineTuningMethod]]:
    # A unique module name per file so that two plugin folders never collide in sys.modules.
    module_name = f"es_plugin_{path.stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    methods = []
    for _, candidate in inspect.getmembers(module, inspect.isclass):
        if not issubclass(candidate, FineTuningMethod) or candidate.__module__ != module_name:
            continue
        if inspect.isabstract(candidate):
            continue
        if not isinstance(getattr(candidate, "meta", None), PluginMeta):
            raise TypeError(f"{candidate.__name__} has no `meta = PluginMeta(name, version, description)`")
        methods.append(candidate)
    return methods


def _one_line(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"
