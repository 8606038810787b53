"""Discovery of fine-tuning methods.

Methods come from two places:

- installed packages, through the ``embedding_studio.fine_tuning_methods`` entry-point group (this
  project registers *Default Fine Tuning Method* there, so an installed wheel always has a working
  default, whatever the working directory);
- the folders of ``ES_PLUGINS_PATH`` (several, separated by ``os.pathsep`` or commas), where every
  ``*.py`` file is imported on its own.

A file that fails to import, or defines a method badly, is reported by its file name and the others
still load. A folder that does not exist is a configuration error: ``check_plugin_folders`` names it
at start-up, and a task asking for an unknown method names it too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from trainer.plugins import FineTuningMethod, PluginMeta

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "embedding_studio.fine_tuning_methods"

PluginPath = str | Path | Sequence[str | Path] | None


class UnknownMethod(LookupError):
    pass


class PluginPathError(ValueError):
    """``ES_PLUGINS_PATH`` names a folder that does not exist (or is not a folder)."""


@dataclass
class PluginRegistry:
    methods: dict[str, type[FineTuningMethod]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # plugin file (or entry point) -> what went wrong
    missing_folders: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # method name -> where it was found

    def get(self, name: str) -> type[FineTuningMethod]:
        try:
            return self.methods[name]
        except KeyError:
            known = ", ".join(sorted(self.methods)) or "none"
            broken = f"; plugin files that failed to load: {', '.join(sorted(self.errors))}" if self.errors else ""
            missing = (f"; ES_PLUGINS_PATH folders that do not exist: {', '.join(self.missing_folders)}"
                       if self.missing_folders else "")
            raise UnknownMethod(f"unknown fine-tuning method {name!r} (known: {known}{broken}{missing})") from None

    def _add(self, method: type[FineTuningMethod], source: str) -> None:
        name = method.meta.name
        if self.methods.get(name) is method:
            return  # the same class reached twice (one distribution seen through two paths)
        if name in self.methods:
            raise TypeError(f"method name {name!r} is already defined by {self.sources[name]}")
        self.methods[name] = method
        self.sources[name] = source


def plugin_folders(value: PluginPath) -> list[Path]:
    """The folders of an ``ES_PLUGINS_PATH`` value: a string of paths separated by ``os.pathsep`` or
    commas, a path, or a list of them; empty parts are ignored."""
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        parts = re.split(f"[{re.escape(os.pathsep)},]", str(value))
    else:
        parts = [str(item) for item in value]
    return [Path(part.strip()).expanduser() for part in parts if part.strip()]


def check_plugin_folders(value: PluginPath) -> list[Path]:
    """The folders, resolved; raises PluginPathError naming every one that is not an existing folder."""
    folders = plugin_folders(value)
    bad = [folder for folder in folders if not folder.is_dir()]
    if bad:
        described = ", ".join(f"{folder.resolve()} ({'not a folder' if folder.exists() else 'does not exist'})"
                              for folder in bad)
        raise PluginPathError(f"ES_PLUGINS_PATH: {described}")
    return [folder.resolve() for folder in folders]


def discover_plugins(folders: PluginPath = None, *, packaged: bool = True) -> PluginRegistry:
    """Every method: the installed ones (entry points) first, then each folder's files in order."""
    registry = PluginRegistry()
    packaged_files: set[Path] = set()
    if packaged:
        packaged_files = _load_entry_points(registry)
    for folder in plugin_folders(folders):
        if not folder.is_dir():
            registry.missing_folders.append(str(folder.resolve()))
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_") or path.resolve() in packaged_files:
                continue  # a packaged method's own file (ES_PLUGINS_PATH=plugins in the repository)
            _load_path(registry, path)
    return registry


def _load_entry_points(registry: PluginRegistry) -> set[Path]:
    files = set()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        label = f"entry point {point.name} ({point.value})"
        try:
            method = point.load()
            if not (inspect.isclass(method) and issubclass(method, FineTuningMethod)):
                raise TypeError(f"{point.value} is not a FineTuningMethod subclass")
            _check_meta(method)
            registry._add(method, label)
            module_file = getattr(sys.modules.get(method.__module__), "__file__", None)
            if module_file:
                files.add(Path(module_file).resolve())
        except BaseException as error:  # an installed plugin may raise anything at import
            registry.errors[label] = _one_line(error)
            log.error("%s failed to load: %s", label, registry.errors[label])
    return files


def _load_path(registry: PluginRegistry, path: Path) -> None:
    # Reported by file name; the full path only when two folders hold files of the same name.
    label = path.name if path.name not in registry.errors else str(path)
    try:
        found = _load_file(path)
    except BaseException as error:  # a plugin may raise anything at import, even SystemExit
        registry.errors[label] = _one_line(error)
        log.error("plugin file %s failed to load: %s", path, registry.errors[label])
        return
    for method in found:
        try:
            registry._add(method, str(path))
        except TypeError as error:
            registry.errors[label] = str(error)


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
        _check_meta(candidate)
        methods.append(candidate)
    return methods


def _check_meta(method: type) -> None:
    if not isinstance(getattr(method, "meta", None), PluginMeta):
        raise TypeError(f"{method.__name__} has no `meta = PluginMeta(name, version, description)`")


def _one_line(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"
