"""One fine-tuning iteration: a task's batch, its method's plugin and an Optuna search → the best model.

The steps, each reported as the task's progress stage:

1. find the method among the plugins (an unknown name lists the known ones and the broken files);
2. check the batch: it exists, it is closed, it holds sessions;
3. let the plugin store the starting model once (``iteration / initial``) and build the task;
4. start from the newest model of an earlier iteration of the method, or from the initial one;
5. search the plugin's parameter space with Optuna (seeded TPE, median pruning on the main metric):
   each trial is an MLflow run named by the parameters' id; a restarted task reuses finished runs;
6. keep the best run's model (best on the validation queries) in MLflow and delete the models it
   superseded; with ``ES_TRAIN_REFIT`` (off by default), train its parameters once more on the
   training and validation queries together, for the epochs and with the WiSE-FT mix the validation
   chose (a run of its own, tagged ``es.refit_of``), and keep that model instead;
7. judge it against the starting model on the test queries, over the whole item universe
   (``trainer.judgement``): ``ModelReady`` only when the lift is significant.

Queries are split once per task by a hash of their normalised text (``trainer.fine_tune.split_for``):
training, validation (epochs, trials) and test (the announcement, nothing else). A batch with too
few judged test queries ends ``done`` before any training, saying so.

Why one module of some 500 lines: the steps share one task's state (its plugin, batch, split, tracker
and stage reports) and read top to bottom as the task runs; the trial's inputs (``TrialInputs``),
the measures (``trainer.evaluation``) and the gate (``trainer.judgement``) already live apart.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from schemas.models import ModelReady
from schemas.sessions import BatchStatus, StoredSession
from schemas.settings import Settings
from schemas.tasks import TaskProgress
from session_store.base import SessionStore
from trainer.evaluation import CatalogEvaluator
from trainer.examples import HeldOutQuery, held_out_queries
from trainer.fine_tune import (FineTuneCanceled, FineTuneResult, NotEnoughData, TrainingSettings, fine_tune, refit,
                               split_for)
from trainer.judgement import GateSettings, Judgement, judge
from trainer.lightning_module import ValidationRecord
from trainer.loaders.cache import CachedItemLoader
from trainer.ranking_measures import higher_is_better
from trainer.params import FineTuningParams, first_choices, suggest_params, validate_space
from trainer.plugin_loader import UnknownMethod, discover_plugins
from trainer.propensity import Propensity, estimate_propensity
from trainer.plugins import FineTuningBuilder, FineTuningMethod, PluginContext
from trainer.task_control import TaskCanceled, TaskControl, TaskFailed, TaskResult
from trainer.task_store import Task
from trainer.tracking import (TAG_BATCH, TAG_METHOD, TAG_MODEL, TAG_REFIT_OF, TAG_TASK, ExperimentTracker, RunRef,
                              iteration_experiment_name)

log = logging.getLogger(__name__)

BASELINE_PREFIX = "baseline_"
REFIT_PREFIX = "refit:"  # the refit run's params-id tag: the chosen trial's id behind it


@dataclass(frozen=True)
class TrialInputs:
    """What every trial of one task trains on: the same for all of them, so built once."""

    builder: FineTuningBuilder
    training: TrainingSettings
    start_model: Path
    texts: dict[str, str]  # every item of the universe
    sessions: Sequence[StoredSession]
    experiment_id: str
    trials: int
    propensity: Propensity | None = None  # examination by position; None: clicks unweighted

    @property
    def work(self) -> int:
        """Training runs the task makes, for its progress fraction: the trials, then a refit."""
        return self.trials + (1 if self.training.refit else 0)


@dataclass
class TrialOutcome:
    run_id: str
    value: float
    metrics: dict[str, float]
    baseline: dict[str, float]
    params: FineTuningParams
    epochs: int = 1  # whole epochs up to the kept validation: what a refit trains
    wise_ft_alpha: float = 1.0


class IterationRunner:
    """The trainer service's executor: ``runner(control) -> TaskResult``."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionStore,
        tracker: ExperimentTracker,
        publish_model_ready: Callable[[ModelReady], None],
        work_root: Path,
        training_overrides: dict | None = None,
    ):
        self.settings = settings
        self.sessions = sessions
        self.tracker = tracker
        self.publish_model_ready = publish_model_ready
        self.work_root = work_root
        # e.g. {"progress_bar": True} from the CLI, {"eval_every_steps": 5} from tests.
        self.training_overrides = training_overrides or {}

    def __call__(self, control: TaskControl) -> TaskResult:
        return _Iteration(self, control).run()


class _Iteration:
    def __init__(self, runner: IterationRunner, control: TaskControl):
        self.runner = runner
        self.control = control
        self.task: Task = control.task
        self.work_dir = runner.work_root / self.task.task_id
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.progress = TaskProgress(stage="starting")

    # --- the steps -----------------------------------------------------------------------------
    def run(self) -> TaskResult:
        plugin = self._plugin()
        sessions = self._batch_sessions()
        builder = self._builder(plugin, sessions)
        settings = builder.fine_tuning_settings
        training = TrainingSettings.from_settings(settings, **{
            "precision": self.runner.settings.train_precision, "embed_precision": self.runner.settings.embed_precision,
            **self.runner.training_overrides})
        propensity = self._propensity(sessions)
        test_queries = held_out_queries(split_for(sessions, training).test, propensity)
        gate = GateSettings.from_settings(self.runner.settings)
        judged = sum(1 for q in test_queries if q.gains)
        if judged < gate.min_test_queries:
            return TaskResult(f"{judged} held-out queries, at least {gate.min_test_queries} needed to judge a model "
                              f"(ES_GATE_MIN_TEST_QUERIES); nothing announced")
        texts = self._item_texts(builder, sessions)
        experiment_id = self.runner.tracker.experiment_id(
            iteration_experiment_name(self.task.fine_tuning_method, self.task.batch_id)
        )
        start_model = self._start_model(experiment_id)
        inputs = TrialInputs(builder, training, start_model, texts, sessions, experiment_id,
                             min(settings.trials, _grid_size(builder.initial_params)), propensity)
        best = self._search(inputs)
        try:
            if best is not None and training.refit:
                best = self._refit(best, inputs)
            return self._conclude(best, inputs, test_queries, gate)
        finally:
            shutil.rmtree(self.work_dir / "trials", ignore_errors=True)

    def _propensity(self, sessions: Sequence[StoredSession]) -> Propensity | None:
        settings = self.runner.settings
        if not settings.click_propensity_weighting:
            return None
        found = estimate_propensity(sessions, prior_eta=settings.click_propensity_prior_eta)
        log.info("task %s: examination propensity (%s): %s; still looking after 1, 2, ... clicks: %s",
                 self.task.task_id, found.source, ", ".join(f"{v:.2f}" for v in found.by_position),
                 ", ".join(f"{v:.2f}" for v in found.continuation[1:]))
        return found

    def _plugin(self) -> FineTuningMethod:
        self._stage("loading plugin")
        registry = discover_plugins(self.runner.settings.plugins_path)
        try:
            method = registry.get(self.task.fine_tuning_method)
        except UnknownMethod as error:
            raise TaskFailed(str(error)) from None
        self.tracker = self.runner.tracker.for_method(self.task.fine_tuning_method)
        context = PluginContext(self.runner.settings, self.tracker, self.work_dir / "plugin")
        context.work_dir.mkdir(parents=True, exist_ok=True)
        plugin = _call_plugin(method.meta.name, "__init__", lambda: method(context))
        _call_plugin(method.meta.name, "upload_initial_model", plugin.upload_initial_model)
        return plugin

    def _batch_sessions(self) -> list[StoredSession]:
        self._stage("reading batch")
        batch_id = self.task.batch_id
        batch = self.runner.sessions.get_batch(batch_id)
        if batch is None:
            raise TaskFailed(f"batch {batch_id!r} does not exist in the session store")
        if batch.status == BatchStatus.open:
            raise TaskFailed(f"batch {batch_id!r} is still open; release it first or create the task without batch_id")
        sessions = list(self.runner.sessions.iter_sessions(batch_id))
        if not sessions:
            raise TaskFailed(f"batch {batch_id!r} holds no sessions: nothing to train on")
        self._check_stop()
        return sessions

    def _builder(self, plugin: FineTuningMethod, sessions: Sequence[StoredSession]) -> FineTuningBuilder:
        name = plugin.meta.name
        builder = _call_plugin(name, "get_fine_tuning_builder", lambda: plugin.get_fine_tuning_builder(sessions))
        if not isinstance(builder, FineTuningBuilder):
            raise TaskFailed(f"plugin {name!r}: get_fine_tuning_builder returned {type(builder).__name__}, "
                             "not a FineTuningBuilder")
        try:
            validate_space(builder.initial_params)
        except ValueError as error:
            raise TaskFailed(f"plugin {name!r}: {error}") from None
        return builder

    def _item_texts(self, builder: FineTuningBuilder, sessions: Sequence[StoredSession]) -> dict[str, str]:
        """Texts of every item the task knows: those the batch showed, and the whole catalog when the
        loader can list it (the held-out queries are searched over all of them)."""
        self._stage("loading items")
        shown = sorted({r.object_id for s in sessions for r in s.search_results})
        loader = CachedItemLoader(builder.item_loader, self.work_dir / "items")
        try:
            catalog = list(builder.item_loader.list_ids() or [])
            texts = loader.load_all(shown)
            if catalog:
                texts.update(builder.item_loader.load_all([i for i in catalog if i not in texts]))
        except Exception as error:  # noqa: BLE001 - a data source failure ends the task with its reason
            raise TaskFailed(f"loading item texts failed: {type(error).__name__}: {error}") from None
        if not texts:
            raise TaskFailed(f"none of the batch's {len(shown)} items has a text; check ES_ITEMS_URL")
        log.info("task %s: %d item texts (%d shown in the batch, %d in the catalog; %d fetched, rest cached)",
                 self.task.task_id, len(texts), len(shown), len(catalog), loader.fetched)
        return texts

    def _start_model(self, experiment_id: str) -> Path:
        self._stage("downloading model")
        tracker = self.tracker
        ref = tracker.latest_model(self.task.fine_tuning_method, exclude_experiment=experiment_id)
        ref = ref or tracker.initial_model()
        if ref is None:
            raise TaskFailed("no starting model: the plugin's upload_initial_model stored nothing")
        destination = self.work_dir / "start" / ref.run_id
        if not destination.is_dir():
            tracker.download_model(ref.run_id, destination.parent / (ref.run_id + ".part"))
            (destination.parent / (ref.run_id + ".part")).rename(destination)
        log.info("task %s starts from run %s", self.task.task_id, ref.run_id)
        return destination / "model"

    # --- the search ----------------------------------------------------------------------------
    def _search(self, inputs: TrialInputs) -> TrialOutcome | None:
        """Optuna over the plugin's grid, each trial valued on the validation queries."""
        maximize = higher_is_better(inputs.training.monitor)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize" if maximize else "minimize",
            sampler=optuna.samplers.TPESampler(seed=inputs.training.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
        )
        study.enqueue_trial(first_choices(inputs.builder.initial_params))
        best: TrialOutcome | None = None
        tried: dict[str, float | None] = {}  # params id -> value (None: pruned)
        asked = 0
        while len(tried) < inputs.trials and asked < 20 * inputs.trials:
            self._check_stop()
            asked += 1
            trial = study.ask()
            params = suggest_params(trial, inputs.builder.initial_params)
            if params.id in tried:
                # A sampler may suggest a point again; answer from memory rather than spend a trial.
                value = tried[params.id]
                study.tell(trial, value, state=None if value is not None else optuna.trial.TrialState.PRUNED)
                continue
            try:
                outcome = self._trial(len(tried), trial, params, inputs)
            except optuna.TrialPruned:
                tried[params.id] = None
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            tried[params.id] = outcome.value
            study.tell(trial, outcome.value)
            if best is None or (outcome.value > best.value if maximize else outcome.value < best.value):
                if best is not None:
                    self.runner.tracker.delete_model(best.run_id)
                best = outcome
            else:
                self.runner.tracker.delete_model(outcome.run_id)
        return best

    def _trial(self, number: int, trial: optuna.Trial, params: FineTuningParams, inputs: TrialInputs) -> TrialOutcome:
        tracker = self.runner.tracker
        metric = inputs.training.monitor
        trials = inputs.trials
        done = tracker.find_run(inputs.experiment_id, params.id)
        if done is not None and done.info.status == "FINISHED" and metric in done.data.metrics:
            log.info("trial %d: parameters %s already trained in run %s", number + 1, params.id[:12], done.info.run_id)
            return _outcome_of(done, metric, params)
        if done is not None:
            tracker.client.delete_run(done.info.run_id)  # an unfinished run of a dead trainer

        run = tracker.start_run(inputs.experiment_id, params.id, params.to_mlflow_params(), self._run_tags(),
                                run_name=f"trial {number + 1} · {params.id[:12]}")
        if inputs.propensity is not None:
            tracker.log_metrics(run.run_id, inputs.propensity.as_metrics(), step=0)
            tracker.client.set_tag(run.run_id, "es.propensity", inputs.propensity.source)
        self._report(stage="training", trial=number + 1, trials=trials, epochs=inputs.training.epochs)

        def on_progress(epoch: int, epochs: int, step: int, steps: int) -> None:
            done_fraction = _run_fraction(epoch, epochs, step, steps)
            self._report(stage="training", trial=number + 1, trials=trials, epoch=epoch + 1, epochs=epochs,
                         step=step, steps=steps, fraction=min(1.0, (number + done_fraction) / inputs.work))

        def on_validation(record: ValidationRecord) -> None:
            tracker.log_metrics(run.run_id, record.metrics, step=record.step)
            value = record.metrics.get(metric)
            if value is not None:
                trial.report(value, record.step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"{metric}={value:.4f} below the median of earlier trials")

        try:
            result = fine_tune(
                inputs.start_model, inputs.sessions, inputs.texts, params, self.work_dir / "trials" / params.id[:16],
                settings=inputs.training, universe=sorted(inputs.texts), propensity=inputs.propensity,
                on_progress=on_progress,
                should_stop=self.control.should_stop, on_validation=on_validation,
            )
        except FineTuneCanceled:
            tracker.end_run(run.run_id, "KILLED")
            raise TaskCanceled() from None
        except optuna.TrialPruned:
            tracker.client.set_tag(run.run_id, "es.pruned", "true")
            tracker.end_run(run.run_id, "FINISHED")
            raise
        except NotEnoughData as error:
            tracker.end_run(run.run_id, "FAILED")
            raise TaskFailed(f"not enough data in batch {self.task.batch_id!r}: {error}") from None
        except BaseException:
            tracker.end_run(run.run_id, "FAILED")
            raise
        return self._record(run, result)

    def _refit(self, best: TrialOutcome, inputs: TrialInputs) -> TrialOutcome:
        """The chosen trial trained again on training + validation queries (``trainer.fine_tune.refit``).

        Its own MLflow run, keyed by the trial's parameters, so that a restarted task reuses it; it
        replaces the trial's model. The outcome keeps the trial's validation figures, which chose it."""
        tracker = self.runner.tracker
        key = REFIT_PREFIX + best.params.id
        done = tracker.find_run(inputs.experiment_id, key)
        if done is not None and done.info.status == "FINISHED" and done.data.tags.get(TAG_MODEL) == "uploaded":
            log.info("refit of run %s already trained in run %s", best.run_id, done.info.run_id)
            tracker.delete_model(best.run_id)
            return replace(best, run_id=done.info.run_id)
        if done is not None:
            tracker.client.delete_run(done.info.run_id)
        run = tracker.start_run(inputs.experiment_id, key, best.params.to_mlflow_params(),
                                {**self._run_tags(), TAG_REFIT_OF: best.run_id}, run_name=f"refit · {best.params.id[:12]}")
        # No trial number: the refit is no trial, and a status reading "trial 4/4" would say it is.
        self._report(stage="refitting", trial=0, trials=0, epochs=best.epochs, fraction=inputs.trials / inputs.work)

        def on_progress(epoch: int, epochs: int, step: int, steps: int) -> None:
            done_fraction = _run_fraction(epoch, epochs, step, steps)
            self._report(stage="refitting", trial=0, trials=0, epoch=epoch + 1, epochs=epochs, step=step, steps=steps,
                         fraction=min(1.0, (inputs.trials + done_fraction) / inputs.work))

        try:
            result = refit(inputs.start_model, inputs.sessions, inputs.texts, best.params, self.work_dir / "refit",
                           epochs=best.epochs, wise_ft_alpha=best.wise_ft_alpha, settings=inputs.training,
                           universe=sorted(inputs.texts), propensity=inputs.propensity, on_progress=on_progress,
                           should_stop=self.control.should_stop)
        except FineTuneCanceled:
            tracker.end_run(run.run_id, "KILLED")
            raise TaskCanceled() from None
        except BaseException:
            tracker.end_run(run.run_id, "FAILED")
            raise
        log.info("task %s: refit the chosen trial on %d sessions (%d triples, %d epoch(s), WiSE-FT alpha %.2f)",
                 self.task.task_id, result.train_sessions, result.train_triples, result.epochs, result.wise_ft_alpha)
        # No validation figures: the refit learned from the validation queries; its trial's run has them.
        tracker.log_metrics(run.run_id, {"refit_sessions": float(result.train_sessions), "epochs": float(result.epochs),
                                         "train_triples": float(result.train_triples),
                                         "wise_ft_alpha": result.wise_ft_alpha}, step=0)
        self._upload(run, result.model_path)
        tracker.delete_model(best.run_id)
        return replace(best, run_id=run.run_id)

    def _record(self, run: RunRef, result: FineTuneResult) -> TrialOutcome:
        tracker = self.runner.tracker
        baseline = {BASELINE_PREFIX + k: v for k, v in result.baseline_metrics.items()}
        final = {**result.best_metrics, **baseline, "best_epoch": float(result.best_epoch),
                 "train_triples": float(result.train_triples), "missing_items": float(len(result.missing_items)),
                 "validation_queries": float(result.validation_queries)}
        tracker.log_metrics(run.run_id, final, step=result.best_step + 1)
        self._upload(run, result.model_path)
        return TrialOutcome(run.run_id, result.best_value, dict(result.best_metrics), dict(result.baseline_metrics),
                            result.params, result.best_epoch + 1, result.wise_ft_alpha)

    def _run_tags(self) -> dict[str, str]:
        return {TAG_METHOD: self.task.fine_tuning_method, TAG_BATCH: self.task.batch_id or "",
                TAG_TASK: self.task.task_id}

    def _upload(self, run: RunRef, model_path: Path) -> None:
        """Store a finished run's model in MLflow and drop the local copy."""
        self._report(stage="uploading model")
        self.runner.tracker.log_model(run.run_id, model_path)
        self.runner.tracker.end_run(run.run_id, "FINISHED")
        shutil.rmtree(model_path.parent, ignore_errors=True)

    # --- the outcome ---------------------------------------------------------------------------
    def _conclude(self, best: TrialOutcome | None, inputs: TrialInputs, test_queries: list[HeldOutQuery],
                  gate: GateSettings) -> TaskResult:
        if best is None:
            raise TaskFailed("every trial was pruned or failed; no model was kept")
        self._stage("judging on test queries")
        model_dir = self.runner.tracker.download_model(best.run_id, self.work_dir / "best")
        judgement, tested = self._judge(inputs, model_dir, test_queries, gate)
        tracker = self.runner.tracker
        tracker.log_metrics(best.run_id, {f"judgement_{k}": float(v) for k, v in judgement.as_fields().items()}, step=0)
        if not judgement.announce:
            # The next iteration should start from the model that is still the best one.
            if self.runner.settings.keep_rejected_models:
                tracker.reject_model(best.run_id)
            else:
                tracker.delete_model(best.run_id)
            shutil.rmtree(self.work_dir / "best", ignore_errors=True)
            return TaskResult(f"no better model: {judgement.reason} ({judgement.summary()}); nothing announced",
                              judgement=judgement.as_task_judgement())
        model_uri = RunRef(best.run_id, inputs.experiment_id).model_uri
        self._stage("announcing model")
        self.runner.publish_model_ready(ModelReady(
            task_id=self.task.task_id, batch_id=self.task.batch_id, fine_tuning_method=self.task.fine_tuning_method,
            model_uri=model_uri, run_id=best.run_id, embedding_dim=_embedding_dim(model_dir),
            model_fingerprint=_fingerprint(model_dir), main_metric="test_" + judgement.metric,
            metrics=tested["tuned"], baseline_metrics=tested["base"], **judgement.as_fields(),
        ))
        shutil.rmtree(self.work_dir / "best", ignore_errors=True)
        return TaskResult(f"better model: {judgement.summary()}", model_uri, judgement.as_task_judgement())

    def _judge(self, inputs: TrialInputs, model_dir: Path, test_queries: list[HeldOutQuery],
               gate: GateSettings) -> tuple[Judgement, dict[str, dict[str, float]]]:
        """The starting and the tuned model on the test queries, searched over the whole universe."""
        from trainer.evaluation import mean_of
        from trainer.towers import EmbeddingTowers

        same = inputs.training.same_query_and_items
        evaluator = CatalogEvaluator({"test": test_queries}, sorted(inputs.texts), inputs.texts)
        precision = inputs.training.embed_precision
        base_towers = EmbeddingTowers.load(inputs.start_model, same_query_and_items=same, device="cpu",
                                           embed_precision=precision)
        evaluator.set_baseline(evaluator.embed(base_towers))
        base = evaluator.per_query(evaluator.baseline, "test")
        del base_towers
        self._check_stop()
        tuned = evaluator.per_query(evaluator.embed(EmbeddingTowers.load(
            model_dir, same_query_and_items=same, device="cpu", embed_precision=precision)), "test")
        tested = {side: {f"test_{k}": v for k, v in mean_of(found).items()}
                        for side, found in (("base", base), ("tuned", tuned))}
        judgement = judge(base, tuned, inputs.training.metric, gate, {q.key: sorted(q.gains) for q in test_queries})
        log.info("task %s: %s: %s", self.task.task_id, judgement.reason, judgement.summary())
        return judgement, tested

    # --- progress ------------------------------------------------------------------------------
    def _stage(self, stage: str) -> None:
        self._check_stop()
        self._report(stage=stage)

    def _report(self, **fields) -> None:
        fields.setdefault("fraction", self.progress.fraction)
        for name in ("trial", "trials"):
            fields.setdefault(name, getattr(self.progress, name))
        self.progress = TaskProgress(**fields)
        self.control.report(self.progress)

    def _check_stop(self) -> None:
        if self.control.should_stop():
            raise TaskCanceled()


def _call_plugin(name: str, what: str, call: Callable):
    """Run plugin code; anything it raises ends the task with the plugin's name and the reason."""
    try:
        return call()
    except (TaskFailed, TaskCanceled):
        raise
    except Exception as error:  # noqa: BLE001
        log.exception("plugin %r failed in %s", name, what)
        raise TaskFailed(f"plugin {name!r} failed in {what}: {type(error).__name__}: {error}") from None


def _outcome_of(run, metric: str, params: FineTuningParams) -> TrialOutcome:
    metrics = dict(run.data.metrics)
    baseline = {k[len(BASELINE_PREFIX):]: v for k, v in metrics.items() if k.startswith(BASELINE_PREFIX)}
    tuned = {k: v for k, v in metrics.items() if k.startswith("val_")}
    return TrialOutcome(run.info.run_id, metrics[metric], tuned, baseline, params,
                        int(metrics.get("best_epoch", 0)) + 1, metrics.get("wise_ft_alpha", 1.0))


def _run_fraction(epoch: int, epochs: int, step: int, steps: int) -> float:
    """How far one training run is, from Lightning's (0-based epoch, 1-based step) progress."""
    return (epoch * steps + step) / max(1, epochs * steps)


def _weights_files(model_dir: Path) -> list[Path]:
    return sorted(model_dir.rglob("*.safetensors"))


def _fingerprint(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in _weights_files(model_dir):
        digest.update(path.relative_to(model_dir).as_posix().encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _embedding_dim(model_dir: Path) -> int:
    from trainer.serving import load_model

    model = load_model(str(model_dir), device="cpu")
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(dimension())


def _grid_size(space: dict[str, list]) -> int:
    size = 1
    for choices in space.values():
        size *= len(choices)
    return size
