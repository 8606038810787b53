"""The towers: freezing that really freezes, encoding with and without gradient, safetensors saves."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer

from simulation.tiny_model import build_tiny_model
from trainer.towers import EmbeddingTowers

VOCAB, HIDDEN, POSITIONS, INTERMEDIATE = 30522, 64, 128, 128


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def trainable(towers: EmbeddingTowers) -> int:
    return sum(p.numel() for p in towers.parameters() if p.requires_grad)


def test_the_tiny_model_is_a_two_layer_hidden_64_bert_with_minilm_tokens(tiny_path):
    model = SentenceTransformer(str(tiny_path), device="cpu")
    assert model.get_embedding_dimension() == HIDDEN
    assert model[0].model.config.num_hidden_layers == 2
    assert model.tokenizer.vocab_size == VOCAB
    assert torch.linalg.norm(torch.as_tensor(model.encode(["a query"])), dim=-1).item() == pytest.approx(1.0, abs=1e-5)


def test_freezing_n_layers_freezes_the_embeddings_and_exactly_those_layers(tiny_path):
    towers = EmbeddingTowers.load(tiny_path, device="cpu")
    before = trainable(towers)
    towers.freeze_layers(1)
    embeddings = VOCAB * HIDDEN + POSITIONS * HIDDEN + 2 * HIDDEN + 2 * HIDDEN  # words, positions, types, LayerNorm
    layer = (
        4 * (HIDDEN * HIDDEN + HIDDEN)  # query, key, value, attention output
        + 2 * HIDDEN  # attention LayerNorm
        + (HIDDEN * INTERMEDIATE + INTERMEDIATE)
        + (INTERMEDIATE * HIDDEN + HIDDEN)
        + 2 * HIDDEN  # output LayerNorm
    )
    assert before - trainable(towers) == embeddings + layer
    layers = towers.query_tower[0].model.encoder.layer
    assert all(not p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())


def test_zero_fixed_layers_trains_everything_and_too_many_is_refused(tiny_path):
    towers = EmbeddingTowers.load(tiny_path, device="cpu")
    before = trainable(towers)
    towers.freeze_layers(0)
    assert trainable(towers) == before
    with pytest.raises(ValueError, match="leaves nothing to train: the model has 2 layers"):
        towers.freeze_layers(2)


def test_separate_towers_are_independent_copies(tiny_path):
    shared = EmbeddingTowers.load(tiny_path, device="cpu")
    separate = EmbeddingTowers.load(tiny_path, same_query_and_items=False, device="cpu")
    assert shared.shared and shared.items_tower is shared.query_tower
    assert not separate.shared
    assert trainable(separate) == 2 * trainable(shared)
    query_weight = separate.query_tower[0].model.embeddings.word_embeddings.weight
    items_weight = separate.items_tower[0].model.embeddings.word_embeddings.weight
    assert query_weight.data_ptr() != items_weight.data_ptr() and torch.equal(query_weight, items_weight)


def test_training_encodes_with_gradient_and_evaluation_without(tiny_path):
    towers = EmbeddingTowers.load(tiny_path, device="cpu")
    towers.train()
    assert towers.encode_queries(["red shoes"]).requires_grad
    embedded = towers.embed_items(["red shoes", "blue hat", "green scarf"], batch_size=2)
    assert embedded.shape == (3, HIDDEN) and not embedded.requires_grad
    assert towers.query_tower.training  # the mode is restored after an evaluation pass


def test_a_saved_model_is_a_safetensors_sentence_transformer(tiny_path, tmp_path):
    towers = EmbeddingTowers.load(tiny_path, device="cpu", embed_precision="fp32")  # compared with plain encode
    with torch.no_grad():
        weight = towers.query_tower[0].model.encoder.layer[1].output.dense.weight
        weight.add_(torch.randn_like(weight))
    saved = towers.save(tmp_path / "saved")
    files = {p.name for p in saved.rglob("*") if p.is_file()}
    assert "model.safetensors" in files
    assert not {f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))}
    reloaded = SentenceTransformer(str(saved), device="cpu")
    texts = ["a query", "an item text"]
    assert torch.allclose(torch.as_tensor(reloaded.encode(texts)), towers.embed_queries(texts), atol=1e-5)
    original = SentenceTransformer(str(tiny_path), device="cpu")
    assert not torch.allclose(torch.as_tensor(original.encode(texts)), towers.embed_queries(texts), atol=1e-3)


def test_separate_towers_save_and_load_both(tiny_path, tmp_path):
    towers = EmbeddingTowers.load(tiny_path, same_query_and_items=False, device="cpu")
    with torch.no_grad():
        weight = towers.items_tower[0].model.encoder.layer[1].output.dense.weight
        weight.add_(torch.randn_like(weight))  # a constant shift would vanish in LayerNorm
    saved = towers.save(tmp_path / "two")
    again = EmbeddingTowers.load(saved, same_query_and_items=False, device="cpu")
    texts = ["same text"]
    assert torch.allclose(again.embed_items(texts), towers.embed_items(texts), atol=1e-5)
    assert not torch.allclose(again.embed_queries(texts), again.embed_items(texts), atol=1e-3)
    with pytest.raises(ValueError, match="separate query and items towers"):
        EmbeddingTowers.load(saved, same_query_and_items=True)
