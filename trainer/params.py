"""One point of the hyperparameter space: what a single fine-tuning run is trained with.

The reference EmbeddingStudio's fields are kept, with two fixes: validators coerce strings (MLflow stores every param as
a string, and a rerun of the best parameters must rebuild them from there), and ``id`` hashes a
canonical JSON of the values so that equal parameters always get the same run name.
"""

from __future__ import annotations

import hashlib
import json
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    import optuna


class ExamplesType(IntEnum):
    """Which training pairs an epoch uses, by difficulty under the current model (see ``trainer.curriculum``).

    The numbers are the reference EmbeddingStudio's so that existing plugin grids (``examples_order: [[11]]``) still read.
    """

    medium_all = 1
    hard_all = 2
    soft_all = 3
    all_examples = 11


SUPPORTED_EXAMPLES_TYPES = frozenset(ExamplesType)

# The reference EmbeddingStudio's other numbers, never implemented there or here: known only so that a
# grid written for it is refused as "not implemented" rather than as a typo.
_REFERENCE_ONLY_EXAMPLES_TYPES = {
    4: "medium_positive", 5: "hard_positive", 6: "soft_positive", 7: "medium_negative", 8: "hard_negative",
    9: "soft_negative", 10: "negative_only",
}


SearchSpace = dict[str, list[Any]]
"""A plugin's grid: each field name maps to the values a search may pick (the reference EmbeddingStudio's INITIAL_PARAMS)."""


class FineTuningParams(BaseModel):
    """Hyperparameters of one fine-tuning run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_fixed_layers: int = Field(
        default=0, ge=0, description="0 trains everything; n > 0 freezes the embeddings and the first n layers."
    )
    query_lr: float = Field(default=2e-5, gt=0, description="Learning rate of the query tower (of the shared one).")
    items_lr: float = Field(default=2e-5, gt=0, description="Learning rate of the items tower when separate.")
    query_weight_decay: float = Field(default=0.01, ge=0)
    items_weight_decay: float = Field(default=0.01, ge=0)
    margin: float = Field(default=0.1, gt=0, description="Margin of the ranking losses, in cosine units.")
    not_irrelevant_only: bool = Field(default=True, description="Drop sessions marked irrelevant.")
    negative_downsampling: float = Field(
        default=1.0, gt=0, le=1, description="Fraction of each session's negatives kept (sampled without replacement)."
    )
    min_abs_difference_threshold: float = Field(default=0.0, ge=0, le=2)
    max_abs_difference_threshold: float = Field(default=1.0, ge=0, le=2)
    examples_order: tuple[ExamplesType, ...] = Field(
        default=(ExamplesType.all_examples,),
        min_length=1,
        description="Epoch i uses examples_order[min(i, len - 1)]: e.g. soft_all, medium_all, hard_all is a curriculum.",
    )

    @field_validator("num_fixed_layers", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        # "4.0" (a float written by some tool) is still the integer 4; "4.5" is refused by the int check.
        if isinstance(value, str):
            value = value.strip()
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if number.is_integer() else value
        return value

    @field_validator("not_irrelevant_only", mode="before")
    @classmethod
    def _boolean(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("examples_order", mode="before")
    @classmethod
    def _examples_types(cls, value: Any) -> Any:
        if isinstance(value, (str, int, ExamplesType)):
            value = [part for part in str(value).split(",") if part.strip()] if isinstance(value, str) else [value]
        result = []
        for item in value:
            result.append(_examples_type(item))
        return tuple(result)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> FineTuningParams:
        if self.min_abs_difference_threshold >= self.max_abs_difference_threshold:
            raise ValueError(
                f"min_abs_difference_threshold ({self.min_abs_difference_threshold}) must be below "
                f"max_abs_difference_threshold ({self.max_abs_difference_threshold})"
            )
        return self

    # --- identity and MLflow -----------------------------------------------------------------
    def canonical_json(self) -> str:
        content = self.model_dump(mode="python")
        content["examples_order"] = [kind.name for kind in self.examples_order]
        return json.dumps(content, sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_mlflow_params(self) -> dict[str, str]:
        params = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "examples_order":
                params[name] = ",".join(kind.name for kind in value)
            else:
                # repr of a float round-trips exactly, so the id survives the trip through strings.
                params[name] = repr(value) if isinstance(value, float) else str(value)
        return params

    @classmethod
    def from_mlflow_params(cls, params: dict[str, str]) -> FineTuningParams:
        """Rebuild from a run's params; keys that are not ours (tags, iteration info) are ignored."""
        return cls(**{name: value for name, value in params.items() if name in cls.model_fields})


def _examples_type(item: Any) -> ExamplesType:
    if isinstance(item, ExamplesType):
        return item
    text = str(item).strip()
    name = text
    if text.lstrip("-").isdigit():
        try:
            return ExamplesType(int(text))
        except ValueError:
            name = _REFERENCE_ONLY_EXAMPLES_TYPES.get(int(text), text)
    elif text in ExamplesType.__members__:
        return ExamplesType[text]
    if name in _REFERENCE_ONLY_EXAMPLES_TYPES.values():
        supported = ", ".join(sorted(k.name for k in SUPPORTED_EXAMPLES_TYPES))
        raise ValueError(f"examples type {name!r} is not implemented; supported: {supported}")
    known = ", ".join(f"{k.name} ({k.value})" for k in ExamplesType)
    raise ValueError(f"unknown examples type {item!r}; known: {known}")


# --- search ----------------------------------------------------------------------------------
def validate_space(space: SearchSpace) -> None:
    """Refuse a grid with unknown names, empty choices, or any value the params would refuse."""
    unknown = sorted(set(space) - set(FineTuningParams.model_fields))
    if unknown:
        raise ValueError(f"unknown parameter(s) in the search space: {', '.join(unknown)}")
    for name, choices in space.items():
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"search space entry {name!r} must be a non-empty list of values")
        for choice in choices:
            try:
                FineTuningParams(**{name: choice})
            except ValidationError as error:
                problems = "; ".join(e["msg"] for e in error.errors(include_url=False))
                raise ValueError(f"search space value {name}={choice!r} is invalid: {problems}") from None


def first_choices(space: SearchSpace) -> dict[str, Any]:
    """The grid's first value of every parameter, as Optuna's categorical choices spell it.

    The search asks for this point first: a plugin lists the values it measured best first, so a task
    of one trial trains that recipe, and further trials explore around it instead of replacing it with
    a random draw.
    """
    validate_space(space)
    return {name: _order_key(choices[0]) if name == "examples_order" else choices[0] for name, choices in space.items()}


def suggest_params(trial: optuna.Trial, space: SearchSpace) -> FineTuningParams:
    """Let an Optuna trial pick one value per field of the grid; fields not in it keep their defaults.

    Optuna's categorical choices must be scalars, so list values (examples_order) are offered as
    their comma-joined names and parsed back.
    """
    validate_space(space)
    picked: dict[str, Any] = {}
    for name, choices in space.items():
        if name == "examples_order":
            options = [_order_key(choice) for choice in choices]
            picked[name] = trial.suggest_categorical(name, sorted(set(options), key=options.index))
        else:
            picked[name] = trial.suggest_categorical(name, choices)
    return FineTuningParams(**picked)


def _order_key(choice: Any) -> str:
    order = FineTuningParams(examples_order=choice).examples_order
    return ",".join(kind.name for kind in order)
