"""The small serving path: load a model by the URI a ModelReady event carries and embed texts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow.artifacts


def resolve_model_dir(model_uri: str, tracking_uri: str | None = None) -> Path:
    """A local folder holding the SentenceTransformer of ``model_uri`` (``runs:/…``,
    ``mlflow-artifacts:/…``, ``models:/…``, or a local path)."""
    local = Path(model_uri)
    if "://" not in model_uri and ":/" not in model_uri and local.exists():
        return local
    destination = tempfile.mkdtemp(prefix="es-model-")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=destination,
                                                    tracking_uri=tracking_uri))


def load_model(model_uri: str, tracking_uri: str | None = None, device: str | None = None, tower: str = "query"):
    """The SentenceTransformer of ``model_uri``; for a model with separate towers, the one named by
    ``tower`` ("query" embeds search queries, "items" embeds the catalog)."""
    from sentence_transformers import SentenceTransformer

    from trainer.towers import TOWERS_FILE

    folder = resolve_model_dir(model_uri, tracking_uri)
    if (folder / TOWERS_FILE).is_file():
        if tower not in ("query", "items"):
            raise ValueError(f"tower must be 'query' or 'items', not {tower!r}")
        folder = folder / tower
    return SentenceTransformer(str(folder), device=device)
