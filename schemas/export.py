"""JSON Schema export of every contract (`embedding-studio schemas export DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from schemas.clickstream import ClickstreamEvent
from schemas.tasks import TaskCommand
from schemas.topics import contract_types


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<Name>.v<version>.schema.json`` per contract plus the two topic unions; return paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for model in contract_types():
        written.append(_write(directory / f"{model.__name__}.v{model.SCHEMA_VERSION}.schema.json",
                              model.model_json_schema()))
    unions = {"ClickstreamEvent": ClickstreamEvent, "TaskCommand": TaskCommand}
    for name, union in unions.items():
        written.append(_write(directory / f"{name}.v1.schema.json", TypeAdapter(union).json_schema()))
    return written


def _write(path: Path, schema: dict) -> Path:
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return path
