"""Does ANIL match MAML in meta-RL? The verdict per environment of Table 2's RL columns, on our
returns and on the paper's, and the same as the checks of the report's finding.

The verdict (:func:`rl_verdict`): ANIL matches MAML in an environment when::

    |R_ANIL - R_MAML| <= max(h_MAML, h_ANIL)

with ``R`` the mean return after :data:`DEFAULT_STEPS` test-time inner steps and ``h`` its
half-width: for our numbers the 95% interval over test tasks (``ci95``, mean over seeds), for the
paper's its ``±`` (the standard deviation over three seeds). Otherwise ANIL is above or below
MAML. Returns are compared within a code base only: environments, horizons and reward scales
differ between implementations.

:func:`rl_checks` turns our verdicts into the checks of the finding "ANIL matches MAML in
meta-RL" (:mod:`meta.study.findings`): one per environment of ``table2_rl``, holding where ANIL
matches MAML.

Imports: :mod:`meta.study` (paper, verdicts); never matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from meta.study import paper
from meta.study.verdicts import FAILS, HOLDS, NOT_MEASURED, Check

#: Our environment names -> the paper's (Table 2).
PAPER_ENVS: dict[str, str] = {
    "2d-navigation": "2D-Navigation",
    "halfcheetah-dir": "HalfCheetah-Direction",
    "halfcheetah-vel": "HalfCheetah-Velocity",
}
#: Our algorithm names -> the paper's (:func:`meta.study.paper.table2_rl`).
PAPER_ALGORITHMS: dict[str, str] = {"maml-trpo": "maml", "anil-trpo": "anil"}
#: The verdicts of :func:`rl_verdict`.
MATCHES, ABOVE, BELOW, UNMEASURED = "ANIL matches MAML", "ANIL above MAML", "ANIL below MAML", "not measured"
#: The rule of :func:`rl_verdict`, in words (beside every verdict).
VERDICT_RULE = (
    "ANIL matches MAML when |ANIL - MAML| <= the larger of their two half-widths (ours: 95% interval over"
    " test tasks; the paper's: its ±, a standard deviation over three seeds); otherwise ANIL is above or below."
)
#: Test-time inner steps compared with the paper's numbers unless told (the inner loop of meta-training).
DEFAULT_STEPS = 1

Returns = dict[str, tuple[float, float]]


def rl_verdict(maml: float, maml_half: float, anil: float, anil_half: float) -> str:
    """:data:`MATCHES` when ``|anil - maml| <= max(maml_half, anil_half)``, else :data:`ABOVE` or
    :data:`BELOW` (ANIL's return higher or lower: returns are higher-is-better); :data:`UNMEASURED`
    when a number is missing (NaN). A missing half-width counts as 0."""
    if not (math.isfinite(maml) and math.isfinite(anil)):
        return UNMEASURED
    margin = max((h for h in (maml_half, anil_half) if math.isfinite(h)), default=0.0)
    if abs(anil - maml) <= margin:
        return MATCHES
    return ABOVE if anil > maml else BELOW


def our_returns(table: pd.DataFrame, env: str, steps: int = DEFAULT_STEPS) -> Returns:
    """``{maml, anil: (return, ci95)}`` of ``env`` after ``steps`` test-time inner steps, from the
    rows of ``table2_rl`` (NaN for an algorithm without rows)."""
    mine = table[(table["env"] == env) & (table["steps"] == steps)].set_index("algorithm")
    return {
        ours: (float(mine.loc[a, "return"]), float(mine.loc[a, "ci95"])) if a in mine.index else (math.nan,) * 2
        for a, ours in PAPER_ALGORITHMS.items()
    }


def paper_returns(env: str) -> Returns:
    """The paper's ``{maml, anil: (return, ±)}`` of our environment ``env`` (NaN if the paper has none)."""
    frame = paper.table2_rl()
    rows = frame[frame["environment"] == PAPER_ENVS.get(env, "")].set_index("algorithm")
    return {
        a: (float(rows.loc[a, "return"]), float(rows.loc[a, "pm"])) if a in rows.index else (math.nan,) * 2
        for a in ("maml", "anil")
    }


def cell(mean: float, half: float) -> str:
    """``"-20.31 ± 1.52"`` (no ``±`` part for a NaN half-width; ``-`` for a NaN mean)."""
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.2f}" + (f" ± {half:.2f}" if math.isfinite(half) else "")


def rl_checks(tables: Mapping[str, pd.DataFrame], rules: object = None) -> list[Check]:
    """The checks of the finding "ANIL matches MAML in meta-RL": per environment of
    ``tables["table2_rl"]``, :data:`~meta.study.verdicts.HOLDS` where :func:`rl_verdict` of our
    returns after :data:`DEFAULT_STEPS` steps is :data:`MATCHES`, with our and the paper's returns
    as its numbers (``rules``: unused, the rule has no threshold of its own)."""
    table = tables.get("table2_rl")
    if table is None or table.empty:
        why = "this folder has no tables/table2_rl.csv" if table is None else "tables/table2_rl.csv has no rows"
        return [Check("every environment", NOT_MEASURED, why=why)]
    checks = []
    for env in dict.fromkeys(table["env"]):
        ours, theirs = our_returns(table, env), paper_returns(env)
        verdict = rl_verdict(*ours["maml"], *ours["anil"])
        numbers = {
            ("ours", "MAML"): cell(*ours["maml"]),
            ("ours", "ANIL"): cell(*ours["anil"]),
            ("paper", "MAML"): cell(*theirs["maml"]),
            ("paper", "ANIL"): cell(*theirs["anil"]),
            ("ours", "verdict"): verdict,
        }
        state = NOT_MEASURED if verdict == UNMEASURED else HOLDS if verdict == MATCHES else FAILS
        why = "a return is missing" if state == NOT_MEASURED else ""
        checks.append(Check(PAPER_ENVS.get(env, env), state, numbers, why))
    return checks
