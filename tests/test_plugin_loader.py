"""Fine-tuning methods are discovered from the installed package (entry points) and from the folders of
ES_PLUGINS_PATH; a broken file is reported by name and the others still load; a folder that does not
exist is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer.plugin_loader import (PluginPathError, UnknownMethod, check_plugin_folders, discover_plugins,
                                   plugin_folders)

GOOD = '''
from trainer.plugins import FineTuningMethod, PluginMeta

class Good(FineTuningMethod):
    meta = PluginMeta(name="Good Method", version="2.0.0", description="works")
    def upload_initial_model(self): pass
    def get_fine_tuning_builder(self, clickstream): raise NotImplementedError
'''


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


def test_the_default_method_ships_in_the_package_without_any_plugins_folder():
    registry = discover_plugins(None)

    method = registry.get("Default Fine Tuning Method")

    assert method.meta.version == "1.0.0"
    assert registry.errors == {} and registry.missing_folders == []
    assert registry.sources["Default Fine Tuning Method"].startswith("entry point")


def test_the_repository_plugins_folder_on_the_path_does_not_define_the_default_twice():
    registry = discover_plugins(Path(__file__).resolve().parents[1] / "plugins")

    assert "Default Fine Tuning Method" in registry.methods
    assert registry.errors == {}


def test_several_folders_separated_by_pathsep_or_commas_all_load(tmp_path):
    first, second, third = (tmp_path / name for name in ("one", "two", "three"))
    for folder, name in ((first, "A"), (second, "B"), (third, "C")):
        folder.mkdir()
        _write(folder, f"{name.lower()}.py", GOOD.replace("Good Method", f"Method {name}").replace("Good(", f"{name}("))

    registry = discover_plugins(f"{first}{os.pathsep}{second},{third}")

    assert {"Method A", "Method B", "Method C", "Default Fine Tuning Method"} <= set(registry.methods)
    assert plugin_folders(f"{first}{os.pathsep} ,{second}") == [first, second]


def test_a_folder_that_does_not_exist_is_a_start_up_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-plugins"
    (tmp_path / "a-file.py").write_text("")

    with pytest.raises(PluginPathError) as raised:
        check_plugin_folders(f"{tmp_path},{missing},{tmp_path / 'a-file.py'}")

    message = str(raised.value)
    assert f"{missing} (does not exist)" in message and "a-file.py (not a folder)" in message
    assert str(tmp_path) + " " not in message  # the good folder is not blamed


def test_an_unknown_method_calls_a_missing_folder_a_folder_not_a_plugin_file(tmp_path):
    missing = tmp_path / "gone"

    with pytest.raises(UnknownMethod) as raised:
        discover_plugins(missing).get("Mine")

    message = str(raised.value)
    assert "plugin files that failed" not in message
    assert f"ES_PLUGINS_PATH folders that do not exist: {missing}" in message
    assert "Default Fine Tuning Method" in message


def test_broken_files_are_reported_by_name_and_the_rest_load(tmp_path):
    _write(tmp_path, "good.py", GOOD)
    _write(tmp_path, "syntax_error.py", "def broken(:\n")
    _write(tmp_path, "raises.py", "raise RuntimeError('no GPU driver')\n")
    _write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    _write(tmp_path, "no_meta.py", GOOD.replace('meta = PluginMeta(name="Good Method", version="2.0.0", description="works")', "pass").replace("Good(", "NoMeta("))

    registry = discover_plugins(tmp_path, packaged=False)

    assert list(registry.methods) == ["Good Method"]
    assert set(registry.errors) == {"syntax_error.py", "raises.py", "exits.py", "no_meta.py"}
    assert "no GPU driver" in registry.errors["raises.py"]
    assert "SyntaxError" in registry.errors["syntax_error.py"]
    assert "PluginMeta" in registry.errors["no_meta.py"]


def test_an_unknown_method_names_the_known_ones_and_the_broken_files(tmp_path):
    _write(tmp_path, "good.py", GOOD)
    _write(tmp_path, "raises.py", "raise RuntimeError('boom')\n")

    with pytest.raises(UnknownMethod) as raised:
        discover_plugins(tmp_path).get("Missing Method")

    message = str(raised.value)
    assert "'Missing Method'" in message and "Good Method" in message and "raises.py" in message


def test_a_duplicate_method_name_is_an_error_of_the_second_file(tmp_path):
    _write(tmp_path, "a.py", GOOD)
    _write(tmp_path, "b.py", GOOD.replace("class Good", "class Other"))

    registry = discover_plugins(tmp_path, packaged=False)

    assert list(registry.methods) == ["Good Method"]
    assert "already defined" in registry.errors["b.py"]
