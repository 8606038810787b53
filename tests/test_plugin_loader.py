"""Fine-tuning methods are discovered from a folder; a broken file is reported by name and the
others still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.plugin_loader import UnknownMethod, discover_plugins

GOOD = '''
from trainer.plugins import FineTuningMethod, PluginMeta

class Good(FineTuningMethod):
    meta = PluginMeta(name="Good Method", version="2.0.0", description="works")
    def upload_initial_model(self): pass
    def get_fine_tuning_builder(self, clickstream): raise NotImplementedError
'''


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


def test_the_shipped_default_method_is_discovered():
    registry = discover_plugins(Path(__file__).resolve().parents[1] / "plugins")

    method = registry.get("Default Fine Tuning Method")

    assert method.meta.version == "1.0.0"
    assert registry.errors == {}


def test_broken_files_are_reported_by_name_and_the_rest_load(tmp_path):
    _write(tmp_path, "good.py", GOOD)
    _write(tmp_path, "syntax_error.py", "def broken(:\n")
    _write(tmp_path, "raises.py", "raise RuntimeError('no GPU driver')\n")
    _write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    _write(tmp_path, "no_meta.py", GOOD.replace('meta = PluginMeta(name="Good Method", version="2.0.0", description="works")', "pass").replace("Good(", "NoMeta("))

    registry = discover_plugins(tmp_path)

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

    registry = discover_plugins(tmp_path)

    assert list(registry.methods) == ["Good Method"]
    assert "already defined" in registry.errors["b.py"]
