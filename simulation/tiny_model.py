"""A tiny random model for runs that must take seconds (the tests, and the benches' ``--model tiny``):
a 2-layer, hidden-64 BERT with all-MiniLM-L6-v2's tokenizer, saved as a SentenceTransformer folder
(mean pooling, normalised). Built locally, nothing downloaded. It knows nothing: what it learns
in a run is all the run taught it."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from trainer.base_model import minilm_path


def build_tiny_model(path: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 64, max_seq_length: int = 64) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    path = Path(path)
    hf_dir = path / "_hf"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=max(128, max_seq_length),
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        BertModel(config).save_pretrained(str(hf_dir))
    finally:
        torch.random.set_rng_state(state)
    tokenizer.save_pretrained(str(hf_dir))
    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, "mean"), Normalize()], device="cpu")
    model.save(str(path), safe_serialization=True, create_model_card=False)
    _remove_tree(hf_dir)
    return path


def _remove_tree(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
