"""The model being tuned: a query tower and an items tower, each a SentenceTransformer.

By default both are one model (text-to-text search embeds queries and items alike). A method that
asks for separate towers gets two independent copies of the starting model, trained with their own
optimizers. Saved models are SentenceTransformer folders with safetensors weights only:

- shared: the folder itself, loadable with ``SentenceTransformer(path)``;
- separate: ``path/query`` and ``path/items``, each such a folder, and ``path/towers.json``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from trainer.precision import autocast

log = logging.getLogger(__name__)

TOWERS_FILE = "towers.json"


class EmbeddingTowers(nn.Module):
    def __init__(self, query: SentenceTransformer, items: SentenceTransformer | None = None,
                 embed_precision: str = "auto", train_precision: str = "auto"):
        super().__init__()
        self.query_tower = query
        # trainer.precision: of embed_* (no gradient) and of encode_* (training; weights stay float32).
        self.embed_precision = embed_precision
        self.train_precision = train_precision
        # A shared model is registered once, so state_dict and the optimizer see each weight once.
        if items is not None:
            self.items_tower_module = items

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, same_query_and_items: bool = True, device: str | None = None,
             embed_precision: str = "auto", train_precision: str = "auto") -> EmbeddingTowers:
        """Load a saved model: a SentenceTransformer folder (split into copies when separate towers
        are asked for), or a folder saved by ``save`` with separate towers."""
        path = Path(path)
        if (path / TOWERS_FILE).is_file():
            if same_query_and_items:
                raise ValueError(f"{path} holds separate query and items towers; cannot load them as one")
            query = SentenceTransformer(str(path / "query"), device=device)
            return cls(query, SentenceTransformer(str(path / "items"), device=device), embed_precision, train_precision)
        query = SentenceTransformer(str(path), device=device)
        return cls(query, None if same_query_and_items else copy.deepcopy(query), embed_precision, train_precision)

    @property
    def shared(self) -> bool:
        return "items_tower_module" not in self._modules

    @property
    def items_tower(self) -> SentenceTransformer:
        return self.query_tower if self.shared else self.items_tower_module

    def towers(self) -> list[SentenceTransformer]:
        return [self.query_tower] if self.shared else [self.query_tower, self.items_tower]

    @property
    def device(self) -> torch.device:
        return next(self.query_tower.parameters()).device

    # --- freezing -------------------------------------------------------------------------------
    def freeze_layers(self, num_fixed_layers: int) -> None:
        """Freeze the embeddings and the first ``num_fixed_layers`` transformer layers of each tower.

        0 freezes nothing. At least one layer must stay trainable: freezing them all would leave
        nothing to tune (pooling and normalisation have no weights).
        """
        if num_fixed_layers <= 0:
            return
        for tower in self.towers():
            embeddings, layers = _transformer_parts(tower)
            if num_fixed_layers >= len(layers):
                raise ValueError(
                    f"num_fixed_layers={num_fixed_layers} leaves nothing to train: the model has {len(layers)} layers"
                )
            embeddings.requires_grad_(False)
            for layer in layers[:num_fixed_layers]:
                layer.requires_grad_(False)

    # --- encoding -------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str]) -> Tensor:
        """Embeddings with gradient (float32 rows, the forward at ``train_precision``), in the towers'
        current train/eval mode."""
        with autocast(self.device.type, self.train_precision):
            return _forward(self.query_tower, texts).float()

    def encode_items(self, texts: Sequence[str]) -> Tensor:
        with autocast(self.device.type, self.train_precision):
            return _forward(self.items_tower, texts).float()

    @torch.no_grad()
    def embed_queries(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """Evaluation embeddings (float32 rows): no gradient, dropout off, length-sorted batches at
        ``embed_precision``; the mode is restored after."""
        return _embed(self.query_tower, texts, batch_size, self.embed_precision)

    @torch.no_grad()
    def embed_items(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        return _embed(self.items_tower, texts, batch_size, self.embed_precision)

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.shared:
            self.query_tower.save(str(path), safe_serialization=True, create_model_card=False)
        else:
            self.query_tower.save(str(path / "query"), safe_serialization=True, create_model_card=False)
            self.items_tower.save(str(path / "items"), safe_serialization=True, create_model_card=False)
            (path / TOWERS_FILE).write_text(json.dumps({"query": "query", "items": "items"}))
        return path


def _transformer_parts(tower: SentenceTransformer) -> tuple[nn.Module, Sequence[nn.Module]]:
    """The embeddings module and the list of transformer layers of a tower's first module."""
    hf_model = getattr(tower[0], "model", None)
    if hf_model is None:
        hf_model = getattr(tower[0], "auto_model", None)  # sentence-transformers < 6
    if hf_model is None:
        raise TypeError(f"cannot freeze layers of {type(tower[0]).__name__}: not a transformer module")
    base = getattr(hf_model, "base_model", hf_model)
    embeddings = getattr(base, "embeddings", None)
    # BERT, RoBERTa, MiniLM, MPNet, XLM-R: encoder.layer; DistilBERT: transformer.layer.
    holder = getattr(base, "encoder", None)
    if holder is None:
        holder = getattr(base, "transformer", None)
    layers = getattr(holder, "layer", None)
    if embeddings is None or layers is None:
        raise TypeError(f"layer freezing does not know the layout of {type(base).__name__}")
    return embeddings, layers


def _features(tower: SentenceTransformer, texts: Sequence[str]) -> dict:
    features = tower.preprocess(list(texts))
    device = next(tower.parameters()).device
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in features.items()}


def _forward(tower: SentenceTransformer, texts: Sequence[str]) -> Tensor:
    if not texts:
        raise ValueError("nothing to encode")
    return tower(_features(tower, texts))["sentence_embedding"]


def _embed(tower: SentenceTransformer, texts: Sequence[str], batch_size: int, precision: str) -> Tensor:
    device = next(tower.parameters()).device
    if not texts:
        return torch.empty((0, tower.get_embedding_dimension() or 0), device=device)
    # Texts of similar length share a batch, so little of it is padding; rows go back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    was_training = tower.training
    tower.eval()
    try:
        with autocast(device.type, precision):
            chunks = [_forward(tower, [texts[i] for i in order[start:start + batch_size]]).float()
                      for start in range(0, len(order), batch_size)]
    finally:
        tower.train(was_training)
    vectors = torch.empty((len(texts), chunks[0].shape[1]), dtype=torch.float32, device=chunks[0].device)
    vectors[torch.tensor(order, device=vectors.device)] = torch.cat(chunks)
    return vectors
