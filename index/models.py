"""Embedding models by URI, loaded once per process: the catalog is embedded with a model's item
tower and queries with its query tower (the same model when it has one tower)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from trainer.precision import autocast

_lock = threading.Lock()
_cache: dict[tuple[str, str], Any] = {}


def embedder(model_uri: str, tracking_uri: str | None, tower: str):
    """The SentenceTransformer of ``model_uri`` (``runs:/…``, a local folder, …) for ``tower``."""
    key = (model_uri, tower)
    with _lock:
        if key not in _cache:
            from trainer.serving import load_model

            _cache[key] = load_model(model_uri, tracking_uri, device=None, tower=tower)
            while len(_cache) > 4:  # the served model, the next one, and their towers
                _cache.pop(next(iter(_cache)))
        return _cache[key]


def encode(model, texts: list[str], batch_size: int = 64, precision: str = "auto") -> np.ndarray:
    """Unit vectors (the index's metric is cosine), as float32 numpy rows.

    ``precision``: "fp32", "bf16" (autocast) or "auto" (bf16 where the hardware computes it natively;
    see ``trainer.precision`` for what it gains and costs, ``bench/index.py`` prints both).
    """
    with autocast(model.device.type, precision):
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=False,
                               convert_to_tensor=True, show_progress_bar=False)
    return vectors.float().cpu().numpy()
