"""The findings paragraph of a board: which of the Zoneout paper's claims hold on it, with the statistics.

The claims (Krueger et al. 2016, Tables 1 and 2; shared/REFERENCE.md):

* language tasks: zoneout beats recurrent dropout, which beats the unregularized baseline;
  weight noise and the norm stabilizer stay near the baseline;
* pixel tasks: recurrent batch normalization is best; zoneout and recurrent dropout beat the baseline.

Each claim is one Welch t-test over the board's seeds, on the split the board ranks by, and the
claims of a board are Holm-corrected together. The paragraph reports what the runs show, either way.
"""

from __future__ import annotations

import pandas as pd

from .significance import ALPHA, holm, welch

__all__ = ["CLAIMS", "paragraph"]

LANGUAGE_TASKS = ("char_ptb", "word_ptb", "text8", "embedded_text")
PIXEL_TASKS = ("pmnist", "smnist", "digits")

# (kind, a, b): "better": a has a lower metric than b; "near": a stays near b (no equivalence test:
# the verdict can only be "no difference detected", and these tests stay out of the Holm family, whose
# correction would make "no difference" easier to reach); "best": a ranks first and beats the runner-up.
CLAIMS: dict[str, list[tuple[str, str, str]]] = {
    **{task: [("better", "zoneout", "recurrent_dropout"), ("better", "recurrent_dropout", "none"),
              ("near", "weight_noise", "none"), ("near", "norm_stabilizer", "none")] for task in LANGUAGE_TASKS},
    **{task: [("best", "recurrent_batchnorm", ""), ("better", "zoneout", "none"),
              ("better", "recurrent_dropout", "none")] for task in PIXEL_TASKS},
}


def _p(p: float) -> str:
    return "–" if p != p else f"{p:.3f}" if p >= 0.001 else "< 0.001"


def paragraph(task: str, finished: pd.DataFrame, split: str, metric: str) -> str:
    """The findings of one board from its finished rows (columns of a board's table,
    ``benchmark.boards.tables``: ``regularizer``, ``rank``, ``<split>_values``)."""
    claims = CLAIMS.get(task)
    if not claims:
        return "The paper makes no claim about this task."
    by_name = finished.set_index("regularizer")
    ranked = list(finished.loc[finished["rank"].notna()].sort_values("rank", kind="stable")["regularizer"])
    tests, missing = [], []
    for kind, a, b in claims:
        if kind == "best":
            b = next((name for name in ranked if name != a), "")
        if a not in by_name.index or b not in by_name.index:
            missing.append((kind, a, b))
            continue
        difference, p = welch(by_name.at[a, f"{split}_values"], by_name.at[b, f"{split}_values"])
        tests.append({"kind": kind, "a": a, "b": b, "difference": difference, "p": p})
    claims_of_a_difference = [t for t in tests if t["kind"] != "near"]
    for test, adjusted in zip(claims_of_a_difference, holm([t["p"] for t in claims_of_a_difference])):
        test["p_holm"] = adjusted
    for test in tests:
        test.setdefault("p_holm", test["p"])  # "near": uncorrected, which is the stricter side here
    sentences = []
    for t in tests:
        significant = t["p_holm"] == t["p_holm"] and t["p_holm"] < ALPHA
        stats = (f"{split} {metric} difference {t['difference']:+.4f}, Welch p = {_p(t['p'])}"
                 + ("" if t["kind"] == "near" else f", Holm-adjusted {_p(t['p_holm'])}"))
        if t["kind"] == "near":
            verdict = ("no significant difference detected (consistent with the claim, not evidence of "
                       "equivalence)" if not significant else
                       f"does not hold: significantly {'better' if t['difference'] < 0 else 'worse'}")
            sentences.append(f"*{t['a']} near {t['b']}*: {verdict} ({stats}).")
            continue
        if t["kind"] == "best":
            first = ranked[0] if ranked else ""
            claim = f"*{t['a']} best*"
            if first != t["a"]:
                place = f"{first} ranks first and {t['a']} ranks {by_name.at[t['a'], 'rank']}"
                verdict = (f"does not hold: {place}, significantly behind" if significant else
                           f"not supported: {place}, the difference not significant")
                stats = f"against {t['b']}: {stats}"
            else:
                verdict = ("holds" if significant and t["difference"] < 0 else
                           "ranks first, but not significantly ahead of the runner-up")
                stats = f"against the runner-up {t['b']}: {stats}"
        else:
            claim = f"*{t['a']} ahead of {t['b']}*"
            verdict = ("holds" if significant and t["difference"] < 0 else
                       "reversed: significantly behind" if significant else "not significant")
        sentences.append(f"{claim}: {verdict} ({stats}).")
    for kind, a, b in missing:
        name = f"{a} best" if kind == "best" else f"{a} {'near' if kind == 'near' else 'ahead of'} {b}"
        sentences.append(f"*{name}*: cannot be checked, the board lacks a finished row for "
                         f"{a if a not in by_name.index else b or 'a runner-up'}.")
    if any(kind == "best" for kind, _, _ in claims):
        sentences.append("*recurrent_batchnorm with zoneout best* (the paper's best pMNIST model): cannot be "
                         "checked, composed regularizers are not entrants of a board yet.")
    tested = len(claims_of_a_difference)
    family = (f"Holm's correction over the {tested} claims of a difference" if tested > 1
              else "one claim of a difference, uncorrected")
    return f"The paper's claims for {task}, tested on this board's seeds ({family}): " + " ".join(sentences)
