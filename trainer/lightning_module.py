"""The training loop: manual optimisation of the towers, validation on held-out sessions.

Manual optimisation because a separate items tower has its own optimizer (its own learning rate and
weight decay). With manual optimisation Lightning steps neither optimizers nor schedulers, so both
are stepped here, every training step (the reference EmbeddingStudio never stepped their schedulers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from trainer.curriculum import epoch_examples_type, select_triples
from trainer.evaluation import CatalogEvaluator
from trainer.mining import mine_negatives
from trainer.losses import LossBatch, RankingLoss
from trainer.params import FineTuningParams
from trainer.towers import EmbeddingTowers
from trainer.triples import Triple, TripleBatch, TripleCollator, relevant_by_query



@dataclass
class ValidationRecord:
    epoch: int
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


def _can_fuse(named: list[tuple[str, torch.Tensor]]) -> bool:
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for _, p in named)


def _no_decay(name: str) -> bool:
    # Decaying biases and LayerNorm scales towards zero only hurts; the usual transformer practice.
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or ".norm" in name


class FineTuningModule(L.LightningModule):
    def __init__(
        self,
        towers: EmbeddingTowers,
        params: FineTuningParams,
        *,
        train_triples: Sequence[Triple],
        relevant: Mapping[str, frozenset[str]] | None = None,
        texts: Mapping[str, str],
        evaluator: CatalogEvaluator | None = None,
        losses: Sequence[RankingLoss],
        batch_size: int = 16,
        grad_cache_chunk: int | None = None,
        mined_negatives: int = 0,
        mining_window: tuple[int, int] = (10, 50),
        epochs: int = 1,
        warmup_fraction: float = 0.1,
        seed: int = 0,
        eval_batch_size: int = 32,
    ):
        super().__init__()
        if not losses:
            raise ValueError("no loss to train with")
        self.automatic_optimization = False
        self.towers = towers
        self.params = params
        self.train_triples = list(train_triples)
        if not self.train_triples:
            raise ValueError("no training triples")
        self.collate = TripleCollator(dict(relevant) if relevant is not None else relevant_by_query(()))
        self.texts = texts
        self.evaluator = evaluator
        self.batch_size = batch_size
        self.epochs = epochs
        self.warmup_fraction = warmup_fraction
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.losses = nn.ModuleList(losses)
        self.grad_cache_chunk = grad_cache_chunk
        self.mined_negatives = mined_negatives
        self.mining_window = mining_window
        self.relevant = dict(relevant) if relevant is not None else {}
        self.history: list[ValidationRecord] = []
        self.training_steps = 0
        self._epoch_losses: list[float] = []
        self._val_metrics: dict[str, float] | None = None
        self._baseline_positive: dict[tuple[str, str], float] = {}

    # --- optimisation -------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        # An upper bound: a curriculum epoch may train on fewer triples than all of them; mined
        # negatives add per_positive triples per (query, positive) row.
        rows = len({(t.query, t.positive) for t in self.train_triples if t.positive is not None})
        triples = len(self.train_triples) + self.mined_negatives * rows
        return max(1, self.epochs * math.ceil(triples / self.batch_size))

    def configure_optimizers(self):
        tower_settings = [(self.towers.query_tower, self.params.query_lr, self.params.query_weight_decay)]
        if not self.towers.shared:
            tower_settings.append((self.towers.items_tower, self.params.items_lr, self.params.items_weight_decay))
        optimizers, schedulers = [], []
        for tower, lr, weight_decay in tower_settings:
            named = [(n, p) for n, p in tower.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in named if not _no_decay(n)], "weight_decay": weight_decay},
                {"params": [p for n, p in named if _no_decay(n)], "weight_decay": 0.0},
            ]
            # The fused kernel: the default per-tensor loop costs about a third of a CPU step.
            optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=_can_fuse(named))
            optimizers.append(optimizer)
            schedulers.append(
                {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor), "interval": "step"}
            )
        return optimizers, schedulers

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up over the first steps, then linear decay towards zero at the last step."""
        warmup = max(1, int(self.warmup_fraction * self.total_steps))
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (self.total_steps - step) / (self.total_steps - warmup + 1))

    def _as_list(self, value) -> list:
        return list(value) if isinstance(value, (list, tuple)) else [value]

    # --- data ----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        # Rebuilt every epoch (reload_dataloaders_every_n_epochs=1): a curriculum picks its triples
        # with the weights as they are now.
        epoch = self.current_epoch if self._trainer is not None else 0
        examples_type = epoch_examples_type(self.params.examples_order, epoch)
        triples = select_triples(self.train_triples, examples_type, self.towers, self.texts, self.params.margin)
        if self.mined_negatives:
            triples = triples + mine_negatives(self.towers, triples, self.texts, self.relevant,
                                               per_positive=self.mined_negatives, window=self.mining_window,
                                               seed=self.seed * 1000 + epoch)
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return DataLoader(triples, batch_size=self.batch_size, shuffle=True, generator=generator, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        # One step: the evaluator embeds the whole item universe and searches it for every query.
        return DataLoader([0] if self.evaluator is not None else [], batch_size=1, collate_fn=list)

    # --- training -------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # The starting model's cosine of each (query, positive) row, for the train DistanceShift.
        rows = sorted({(t.query, t.positive) for t in self.train_triples if t.positive is not None})
        if not rows:
            return
        queries = sorted({q for q, _ in rows})
        items = sorted({p for _, p in rows})
        q_vectors = dict(zip(queries, self.towers.embed_queries(queries)))
        i_vectors = dict(zip(items, self.towers.embed_items([self.texts[i] for i in items])))
        self._baseline_positive = {(q, p): float(torch.dot(q_vectors[q], i_vectors[p])) for q, p in rows}

    def on_train_epoch_start(self) -> None:
        self._epoch_losses = []

    def batch_loss(self, batch: TripleBatch) -> tuple[Tensor, Tensor]:
        """The configured losses summed, and the rows' query-positive cosines."""
        queries = self.towers.encode_queries(batch.queries)
        items = self.towers.encode_items([self.texts[i] for i in batch.positives + batch.negatives])
        inputs = self._loss_batch(batch, queries, items)
        return self._loss(inputs), inputs.positive_scores()

    def _loss_batch(self, batch: TripleBatch, queries: Tensor, items: Tensor) -> LossBatch:
        return LossBatch(queries=queries, positives=items[: len(batch)], negatives=items[len(batch):],
                         known_relevant=batch.known_relevant, margin_pairs=batch.margin_pairs,
                         weights=getattr(batch, "weights", None))

    def _loss(self, inputs: LossBatch) -> Tensor:
        total = inputs.queries.new_zeros(())
        for loss in self.losses:
            total = total + loss(inputs)
        return total

    def _cached_step(self, batch: TripleBatch) -> tuple[Tensor, Tensor]:
        """Gradient caching: embed the step in chunks without a graph, take the loss and its gradient
        with respect to the embeddings, then re-embed chunk by chunk with a graph and push those
        gradients through. Memory is that of one chunk, whatever the batch; the random state of each
        chunk is replayed so that dropout masks match between the two passes."""
        size = self.grad_cache_chunk
        item_texts = [self.texts[i] for i in batch.positives + batch.negatives]
        plan = [(self.towers.encode_queries, batch.queries[i:i + size]) for i in range(0, len(batch.queries), size)]
        plan += [(self.towers.encode_items, item_texts[i:i + size]) for i in range(0, len(item_texts), size)]
        states, outputs = [], []
        with torch.no_grad():
            for encode, texts in plan:
                states.append(torch.get_rng_state())
                outputs.append(encode(texts))
        n_query_chunks = math.ceil(len(batch.queries) / size)
        queries = torch.cat(outputs[:n_query_chunks]).detach().requires_grad_()
        items = torch.cat(outputs[n_query_chunks:]).detach().requires_grad_()
        inputs = self._loss_batch(batch, queries, items)
        loss = self._loss(inputs)
        loss.backward()
        gradients = list(torch.split(queries.grad, size)) + list(torch.split(items.grad, size))
        for (encode, texts), state, gradient in zip(plan, states, gradients, strict=True):
            torch.set_rng_state(state)
            self.manual_backward((encode(texts) * gradient).sum())
        return loss.detach(), inputs.positive_scores().detach()

    def training_step(self, batch: TripleBatch, batch_idx: int) -> Tensor | None:
        if len(batch) == 0:
            return None  # only negatives of irrelevant sessions, with no query row to train
        optimizers = self._as_list(self.optimizers())
        schedulers = self._as_list(self.lr_schedulers())
        for optimizer in optimizers:
            optimizer.zero_grad()
        if self.grad_cache_chunk and len(batch) + len(batch.negatives) > self.grad_cache_chunk:
            loss, positive_scores = self._cached_step(batch)
        else:
            loss, positive_scores = self.batch_loss(batch)
            self.manual_backward(loss)
        for optimizer in optimizers:
            self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        # Lightning's global_step counts every optimizer's steps; a training step is what we mean.
        self.training_steps += 1
        self._epoch_losses.append(float(loss.detach()))
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=len(batch))
        baseline = [self._baseline_positive.get((q, p)) for q, p in zip(batch.queries, batch.positives)]
        if all(b is not None for b in baseline):
            shift = (positive_scores.detach().cpu() - torch.tensor(baseline)).mean()
            self.log("train_not_irrelevant_dist_shift", shift, batch_size=len(batch))
        self.log("lr", float(schedulers[0].get_last_lr()[0]), batch_size=len(batch))
        return loss.detach()

    # --- validation -----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_metrics = None

    def validation_step(self, batch: list[int], batch_idx: int) -> None:
        snapshot = self.evaluator.embed(self.towers)
        self._val_metrics = self.evaluator.metrics(snapshot, "validation")

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None or self._val_metrics is None:
            return
        metrics = {f"val_{name}": value for name, value in self._val_metrics.items()}
        self.log_dict(metrics, batch_size=1)
        if self._epoch_losses:
            metrics["train_loss"] = sum(self._epoch_losses) / len(self._epoch_losses)
        self.history.append(ValidationRecord(self.current_epoch, self.training_steps, metrics))
