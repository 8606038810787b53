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


def load_model(model_uri: str, tracking_uri: str | None = None, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(resolve_model_dir(model_uri, tracking_uri)), device=device)
