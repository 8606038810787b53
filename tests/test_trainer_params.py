"""FineTuningParams: validated, identified by content, and rebuilt from MLflow's strings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainer.params import ExamplesType, FineTuningParams, first_choices, suggest_params, validate_space


def test_defaults_are_a_valid_point_training_on_all_examples():
    params = FineTuningParams()
    assert params.examples_order == (ExamplesType.all_examples,)
    assert params.min_abs_difference_threshold == 0.0 and params.max_abs_difference_threshold == 1.0


def test_strings_are_coerced_as_mlflow_returns_them():
    params = FineTuningParams(
        num_fixed_layers="4",
        query_lr="1e-05",
        items_lr="5e-06",
        query_weight_decay="0",
        items_weight_decay="0.0001",
        margin="0.05",
        not_irrelevant_only="False",
        negative_downsampling="0.5",
        examples_order="soft_all,hard_all",
    )
    assert params.num_fixed_layers == 4 and params.query_lr == 1e-5 and params.not_irrelevant_only is False
    assert params.examples_order == (ExamplesType.soft_all, ExamplesType.hard_all)


@pytest.mark.parametrize(
    "field, value",
    [
        ("query_lr", 0),
        ("items_lr", "-1e-5"),
        ("query_weight_decay", -0.1),
        ("negative_downsampling", 0),
        ("negative_downsampling", 1.5),
        ("margin", 0),
        ("num_fixed_layers", -1),
        ("num_fixed_layers", "2.5"),
        ("max_abs_difference_threshold", 2.5),
    ],
)
def test_out_of_range_values_are_refused(field, value):
    with pytest.raises(ValidationError):
        FineTuningParams(**{field: value})


def test_thresholds_must_be_ordered():
    with pytest.raises(ValidationError, match="must be below"):
        FineTuningParams(min_abs_difference_threshold=0.5, max_abs_difference_threshold=0.5)


def test_unimplemented_examples_types_are_refused_with_the_supported_list():
    with pytest.raises(ValidationError, match="'hard_positive' is not implemented; supported: all_examples, hard_all"):
        FineTuningParams(examples_order=[5])
    assert FineTuningParams(examples_order=[11]).examples_order == (ExamplesType.all_examples,)


def test_id_depends_on_content_only():
    assert FineTuningParams(margin=0.1).id == FineTuningParams(margin="0.1").id
    assert FineTuningParams(margin=0.1).id != FineTuningParams(margin=0.2).id
    assert len(FineTuningParams().id) == 64


def test_params_survive_a_round_trip_through_a_real_mlflow(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = FineTuningParams(
        num_fixed_layers=3, query_lr=5e-5, items_lr=1e-6, query_weight_decay=1e-6, items_weight_decay=0.0,
        margin=0.025, not_irrelevant_only=False, negative_downsampling=0.3,
        min_abs_difference_threshold=0.01, max_abs_difference_threshold=0.9,
        examples_order=["soft_all", "medium_all", "hard_all"],
    )
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_name=params.id[:16]) as run:
            mlflow.log_params(params.to_mlflow_params())
            mlflow.log_param("batch_id", "not-a-param-field")
    finally:
        mlflow.set_tracking_uri(None)

    stored = MlflowClient(uri).get_run(run.info.run_id).data.params
    assert all(isinstance(value, str) for value in stored.values())
    rebuilt = FineTuningParams.from_mlflow_params(stored)
    assert rebuilt == params
    assert rebuilt.id == params.id


def test_an_optuna_trial_picks_each_field_from_the_grid():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {
        "num_fixed_layers": [0, 1],
        "query_lr": [1e-5, 5e-5],
        "margin": [0.05],
        "examples_order": [[11], ["soft_all", "hard_all"]],
    }
    picked = []

    def objective(trial):
        params = suggest_params(trial, space)
        picked.append(params)
        return params.query_lr

    optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).optimize(objective, n_trials=8)
    assert all(p.num_fixed_layers in (0, 1) and p.query_lr in (1e-5, 5e-5) and p.margin == 0.05 for p in picked)
    orders = {p.examples_order for p in picked}
    assert orders <= {(ExamplesType.all_examples,), (ExamplesType.soft_all, ExamplesType.hard_all)}
    assert picked[0].items_lr == FineTuningParams().items_lr  # not in the grid: the default


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_first_trial_trains_the_grids_first_choices_whatever_the_sampler_seed(seed):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {
        "num_fixed_layers": [2, 0, 4],
        "query_lr": [1e-4, 5e-5, 2e-5],
        "negative_downsampling": [0.25, 1.0],
        "examples_order": [["soft_all", "hard_all"], [11]],
    }
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(first_choices(space))
    picked = [suggest_params(study.ask(), space) for _ in range(3)]
    assert picked[0] == FineTuningParams(num_fixed_layers=2, query_lr=1e-4, negative_downsampling=0.25,
                                         examples_order=(ExamplesType.soft_all, ExamplesType.hard_all))


def test_a_bad_grid_is_refused_before_any_trial():
    with pytest.raises(ValueError, match="unknown parameter"):
        validate_space({"learning_rate": [1e-5]})
    with pytest.raises(ValueError, match="query_lr=0"):
        validate_space({"query_lr": [1e-5, 0]})
    with pytest.raises(ValueError, match="non-empty list"):
        validate_space({"margin": []})
