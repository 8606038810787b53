"""Embedding and training precision (ES_EMBED_PRECISION, ES_TRAIN_PRECISION): bf16 autocast only where
the hardware computes it, vectors that still point where float32 ones do."""

from __future__ import annotations

import numpy as np
import pytest

from index.models import encode
from trainer import precision as precisions
from trainer.precision import resolved_precision


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    from simulation.tiny_model import build_tiny_model

    return SentenceTransformer(str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")), device="cpu")


def test_bf16_vectors_are_unit_rows_close_to_float32(tiny):
    texts = [f"waterproof hiking jacket number {i}" for i in range(40)]
    exact = encode(tiny, texts, precision="fp32")
    fast = encode(tiny, texts, precision="bf16")
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-3)
    assert np.min(np.sum(fast * exact, axis=1)) > 0.999


def test_auto_takes_bf16_on_a_cpu_only_where_it_computes_bf16(monkeypatch):
    monkeypatch.setattr(precisions, "_cpu_computes_bf16", lambda: True)
    assert resolved_precision("cpu") == "bf16"
    monkeypatch.setattr(precisions, "_cpu_computes_bf16", lambda: False)
    assert resolved_precision("cpu") == "fp32"
    assert resolved_precision("cpu", "bf16") == "bf16"  # asked for explicitly, it is used anyway


def test_an_unknown_precision_is_an_error_that_lists_the_known_ones():
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolved_precision("cpu", "fp8")
