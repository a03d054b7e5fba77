"""What a study holds so far: which trials count toward its budget, their outcomes, the best trial."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

from .storage import redact

__all__ = ["StudySummary", "counted", "outcomes", "summarize_study"]


@dataclass
class StudySummary:
    study_name: str
    storage: str
    target: int
    outcomes: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None

    def line(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.outcomes.items()) if v)
        done = sum(self.outcomes.values())
        best = ("no finished trial" if self.best_value is None else
                f"best {self.best_value:.4f} (trial {self.best_trial}, {json.dumps(self.best_params, sort_keys=True)})")
        return f"study {self.study_name}: {done}/{self.target} trials ({counts or 'none'}); {best}"


def counted(trial) -> bool:
    """Whether a trial counts toward the budget: it has an outcome."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "outcome" in trial.user_attrs


def outcomes(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if counted(trial):
            outcome = trial.user_attrs.get("outcome") or trial.state.name.lower()
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def summarize_study(study, budget: int, storage_url: str) -> StudySummary:
    finite = [t for t in study.get_trials(deepcopy=False)
              if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    best = min(finite, key=lambda t: (t.value, t.number)) if finite else None
    return StudySummary(study.study_name, redact(storage_url), budget, outcomes(study),
                        None if best is None else float(best.value), None if best is None else dict(best.params),
                        None if best is None else best.number)
