"""MLflow bookkeeping of fine-tuning iterations.

- experiment ``iteration / initial`` holds each method's starting model (a run ``initial_model``
  tagged with the method, so two plugins never share one);
- each task is an experiment ``iteration / <method> / <batch_id>`` with one run per parameter set,
  named by the parameters' id, so a restarted task finds and skips the runs it already finished;
- only the best run of an iteration keeps its model (a SentenceTransformer folder with safetensors
  weights under artifact path ``model``); a superseded best has its artifacts deleted.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run, RunStatus
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

INITIAL_EXPERIMENT = "iteration / initial"
INITIAL_RUN = "initial_model"
MODEL_ARTIFACT = "model"
TAG_PARAMS_ID = "es.params_id"
TAG_MODEL = "es.model"  # "uploaded" | "deleted" | "rejected" (kept for a look, never continued from)
TAG_METHOD = "es.method"
TAG_BATCH = "es.batch_id"
TAG_TASK = "es.task_id"
TAG_REFIT_OF = "es.refit_of"  # on a refit run: the trial run whose parameters it trained again


def iteration_experiment_name(method: str, batch_id: str) -> str:
    return f"iteration / {method} / {batch_id}"


@dataclass(frozen=True)
class RunRef:
    run_id: str
    experiment_id: str

    @property
    def model_uri(self) -> str:
        return f"runs:/{self.run_id}/{MODEL_ARTIFACT}"


class ExperimentTracker:
    def __init__(self, tracking_uri: str, method: str = ""):
        self.tracking_uri = tracking_uri
        self.method = method  # whose initial model upload_initial_model/initial_model mean
        self.client = MlflowClient(tracking_uri)

    def for_method(self, method: str) -> "ExperimentTracker":
        """The tracker a plugin sees: its initial model is its own."""
        bound = ExperimentTracker.__new__(ExperimentTracker)
        bound.tracking_uri, bound.method, bound.client = self.tracking_uri, method, self.client
        return bound

    # --- experiments ------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        return self.client.create_experiment(name)

    # --- the starting model -----------------------------------------------------------------
    def upload_initial_model(self, model_dir: Path) -> RunRef:
        """Store the starting model once; later calls return the stored one."""
        experiment_id = self.experiment_id(INITIAL_EXPERIMENT)
        existing = self._runs(experiment_id, self._initial_filter())
        if existing:
            return RunRef(existing[0].info.run_id, experiment_id)
        run = self.client.create_run(experiment_id, run_name=INITIAL_RUN, tags={TAG_METHOD: self.method})
        self.client.log_artifacts(run.info.run_id, str(model_dir), MODEL_ARTIFACT)
        self.client.set_tag(run.info.run_id, TAG_MODEL, "uploaded")
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        return RunRef(run.info.run_id, experiment_id)

    def initial_model(self) -> RunRef | None:
        experiment = self.client.get_experiment_by_name(INITIAL_EXPERIMENT)
        if experiment is None:
            return None
        runs = self._runs(experiment.experiment_id, self._initial_filter())
        return RunRef(runs[0].info.run_id, experiment.experiment_id) if runs else None

    def _initial_filter(self) -> str:
        return (f"tags.`{TAG_MODEL}` = 'uploaded' and attributes.run_name = '{INITIAL_RUN}' "
                f"and tags.`{TAG_METHOD}` = '{_like_escape(self.method)}'")

    def latest_model(self, method: str, exclude_experiment: str | None = None) -> RunRef | None:
        """The kept model of the newest finished iteration of ``method``, to continue from."""
        prefix = f"iteration / {method} / "
        experiments = [
            e for e in self.client.search_experiments(filter_string=f"name LIKE '{_like_escape(prefix)}%'")
            if e.experiment_id != exclude_experiment
        ]
        if not experiments:
            return None
        runs = self.client.search_runs(
            [e.experiment_id for e in experiments],
            filter_string=f"tags.{TAG_MODEL} = 'uploaded'",
            order_by=["attributes.end_time DESC"],
            max_results=1,
        )
        return RunRef(runs[0].info.run_id, runs[0].info.experiment_id) if runs else None

    # --- runs -----------------------------------------------------------------------------------
    def find_run(self, experiment_id: str, params_id: str) -> Run | None:
        runs = self._runs(experiment_id, f"tags.`{TAG_PARAMS_ID}` = '{params_id}'")
        return runs[0] if runs else None

    def start_run(self, experiment_id: str, params_id: str, params: dict[str, str], tags: dict[str, str],
                  run_name: str | None = None) -> RunRef:
        run = self.client.create_run(experiment_id, run_name=run_name or params_id[:16],
                                     tags={TAG_PARAMS_ID: params_id, **tags})
        for key, value in params.items():
            self.client.log_param(run.info.run_id, key, value)
        return RunRef(run.info.run_id, experiment_id)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value), step=step)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def best_run(self, experiment_id: str, metric: str, higher_is_better: bool = True) -> Run | None:
        """The best finished run of an iteration that still holds its model."""
        order = "DESC" if higher_is_better else "ASC"
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_MODEL}` = 'uploaded' and attributes.status = 'FINISHED'",
            order_by=[f"metrics.`{metric}` {order}"],
            max_results=1,
        )
        return runs[0] if runs else None

    # --- models --------------------------------------------------------------------------------
    def log_model(self, run_id: str, model_dir: Path) -> None:
        self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
        self.client.set_tag(run_id, TAG_MODEL, "uploaded")

    def reject_model(self, run_id: str) -> None:
        """Keep a model the gate did not announce, marked so that no iteration continues from it."""
        self.client.set_tag(run_id, TAG_MODEL, "rejected")

    def rejected_model(self, task_id: str) -> RunRef | None:
        """The model a task's gate rejected, when it was kept (``ES_KEEP_REJECTED_MODELS``)."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(
            experiments, filter_string=f"tags.`{TAG_MODEL}` = 'rejected' and tags.`{TAG_TASK}` = '{task_id}'",
            max_results=1)
        return RunRef(runs[0].info.run_id, runs[0].info.experiment_id) if runs else None

    def delete_model(self, run_id: str) -> None:
        """Delete a superseded model's artifacts; the run, its params and metrics stay."""
        run = self.client.get_run(run_id)
        if run.data.tags.get(TAG_MODEL) == "deleted":
            return
        repository = get_artifact_repository(run.info.artifact_uri, tracking_uri=self.tracking_uri)
        repository.delete_artifacts(MODEL_ARTIFACT)
        self.client.set_tag(run_id, TAG_MODEL, "deleted")

    def download_model(self, run_id: str, destination: Path | None = None) -> Path:
        destination = destination or Path(tempfile.mkdtemp(prefix="es-model-"))
        local = self.client.download_artifacts(run_id, MODEL_ARTIFACT, str(destination))
        return Path(local)

    def _runs(self, experiment_id: str, filter_string: str) -> list[Run]:
        return self.client.search_runs(
            [experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"]
        )


def _like_escape(text: str) -> str:
    return text.replace("'", "\\'")
