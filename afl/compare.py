"""The comparison protocol (docs/comparing.md): each method at its own tuned best, chosen
on tuning seeds, compared on evaluation seeds apart from them, with intervals that state n.

Every figure that compares methods takes its numbers from here, on a table of one row per run
(cell): the method's keys (e.g. ``algorithm.step_rule``), the tuned keys (e.g.
``algorithm.server_lr``), ``seed`` and the run's cost (lower is better: updates to a target, a
loss; pass ``lower=False`` for an accuracy).

1. ``tune``: for each method, the tuned values with the best mean cost over the **tuning seeds**
   only. A best value at an end of the method's grid says the optimum may lie outside it:
   ``Choice.edges`` names those keys and ``edge_lines`` prints them as ``grid edge:`` lines (a
   shipped config extends its grid until none is printed). A key whose every value ties for the
   best (e.g. no step reaches a target within the budget, so every run's cost is the budget) has
   no optimum to find: ``Choice.flat`` names it, ``edge_lines`` prints a ``flat:`` line, no edge.
   A key the method ran at one value only is not tuned at all: ``Choice.fixed`` names it and
   ``edge_lines`` prints a ``fixed:`` line (e.g. the demo's steps taken from config/docs.yaml's
   tuning), not a grid edge: there is no best value to widen the grid around.
   ``choice_lines`` prints each method's chosen values as a ``chosen:`` line, for the figure logs.
2. ``evaluate``: each method's runs at its chosen values on the **evaluation seeds** (disjoint
   from the tuning seeds, else ``ValueError``).
3. ``interval`` (a method's mean) and ``paired`` (a difference between two methods, seed by seed
   where both ran): Student-t intervals that carry their ``n``; none from fewer than
   ``MIN_SEEDS`` seeds, and a gain (``paired``) from at least ``MIN_SEEDS_GAIN``.

Plain pandas and SciPy: no torch, no plotting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_SEEDS = 5  # no band or error bar from fewer runs
MIN_SEEDS_GAIN = 10  # no interval of a gain (a paired difference) from fewer pairs
# The smallest value a tuned count admits (the rules' checks: R >= 1 for ringmaster, S >= 1): a best
# value there is the end of the key's range, not of the grid, so no grid edge to widen.
FLOORS = {"algorithm.max_delay": 1, "algorithm.buffer_size": 1, "algorithm.concurrency": 1}


class TooFewSeeds(ValueError):
    """An interval asked for from fewer seeds than the protocol allows."""


@dataclass(frozen=True)
class Choice:
    """A method's tuned values, chosen on ``seeds`` tuning seeds with mean cost ``cost``."""

    method: dict  # method key -> value
    values: dict  # tuned key -> chosen value
    cost: float
    seeds: int
    grid: dict  # tuned key -> the values the method was run with, sorted
    edges: tuple[str, ...]  # tuned keys whose chosen value is the smallest or largest of its grid
    flat: tuple[str, ...] = ()  # tuned keys whose every grid value ties for the best mean cost
    fixed: tuple[str, ...] = ()  # tuned keys the method ran at one value only: not tuned

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.method.items()) or "all runs"


@dataclass(frozen=True)
class Interval:
    """A mean (or mean difference) with its two-sided Student-t interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return (f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}] "
                f"({100 * self.level:.0f}% t-interval, n = {self.n})")


def _split(frame: pd.DataFrame, seeds, what: str) -> pd.DataFrame:
    chosen = frame[frame["seed"].isin(list(seeds))]
    if chosen.empty:
        raise ValueError(f"no run with one of the {what} seeds {sorted(seeds)}")
    return chosen


def tune(frame: pd.DataFrame, methods: list[str], tuned: list[str], cost: str, seeds, lower: bool = True) -> list[Choice]:
    """Each method's best tuned values by mean ``cost`` over the tuning ``seeds``; ties go to the
    first in the grid's sorted order. A value tried on fewer seeds than another counts all the same.
    A best value at an end of its grid is an edge (``Choice.edges``), unless it is the key's floor
    (``FLOORS``): the grid cannot be widened below it, or every value of the key ties for the best
    (``Choice.flat``): the cost does not depend on it within the grid, or the method ran at one
    value of the key (``Choice.fixed``): nothing was tuned."""
    runs = _split(frame, seeds, "tuning")
    choices = []
    for method, rows in (runs.groupby(methods, sort=True, dropna=False) if methods else [((), runs)]):
        method = dict(zip(methods, method if isinstance(method, tuple) else (method,)))
        means = rows.groupby(tuned, sort=True, dropna=False)[cost].mean()
        best = means.idxmin() if lower else means.idxmax()
        best = best if isinstance(best, tuple) else (best,)
        grid = {k: sorted(rows[k].unique()) for k in tuned}
        best_cost = float(means.min() if lower else means.max())
        ties = [t if isinstance(t, tuple) else (t,) for t in means[means == best_cost].index]
        flat = tuple(k for i, k in enumerate(tuned) if len(grid[k]) > 1 and {t[i] for t in ties} == set(grid[k]))
        fixed = tuple(k for k in tuned if len(grid[k]) < 2)
        edges = tuple(k for k, v in zip(tuned, best) if k not in flat and k not in fixed and (
            v == grid[k][-1] or (v == grid[k][0] and v != FLOORS.get(k))))
        choices.append(Choice(method, dict(zip(tuned, best)), best_cost, int(rows["seed"].nunique()), grid, edges, flat,
                              fixed))
    return choices


def edge_lines(choices: list[Choice], context: str = "") -> list[str]:
    """One ``grid edge:`` line per tuned key whose best value is at an end of its grid, one
    ``flat:`` line per tuned key whose every value ties for the best, and one ``fixed:`` line per
    key run at one value only (not tuned)."""
    lines = []
    for c in choices:
        for key in c.fixed:
            lines.append(f"fixed: {key} = {c.values[key]} for {c.label()}: one value, not tuned"
                         + (f" ({context})" if context else ""))
        for key in c.flat:
            lines.append(f"flat: every {key} of {', '.join(map(str, c.grid[key]))} ties at {c.cost:.4g} for "
                         f"{c.label()}, nothing to tune" + (f" ({context})" if context else ""))
        for key in c.edges:
            grid = ", ".join(map(str, c.grid[key]))
            where = "the smallest" if c.values[key] == c.grid[key][0] else "the largest"
            lines.append(f"grid edge: {key} = {c.values[key]} ({where} of {grid}) for {c.label()}"
                         + (f" ({context})" if context else ""))
    return lines


def choice_lines(choices: list[Choice], context: str = "") -> list[str]:
    """One ``chosen:`` line per method: its tuned values, their mean cost and the number of
    tuning seeds, so that a figure's log says where each method was compared."""
    return [f"chosen: {', '.join(f'{k} = {v}' for k, v in c.values.items())} for {c.label()} "
            f"(mean {c.cost:.4g} on {c.seeds} seed{'s' * (c.seeds != 1)})" + (f" ({context})" if context else "")
            for c in choices]


def evaluate(frame: pd.DataFrame, choices: list[Choice], seeds, tuning_seeds) -> pd.DataFrame:
    """Each method's runs at its chosen values on the evaluation ``seeds``: the rows of ``frame``,
    with a column ``choice`` (the method's label)."""
    if overlap := sorted(set(seeds) & set(tuning_seeds)):
        raise ValueError(f"evaluation seeds {overlap} are also tuning seeds; fix: give disjoint seeds")
    runs = _split(frame, seeds, "evaluation")
    parts = []
    for c in choices:
        mask = pd.Series(True, index=runs.index)
        for key, value in {**c.method, **c.values}.items():
            mask &= runs[key].isna() if pd.isna(value) else runs[key] == value
        parts.append(runs[mask].assign(choice=c.label()))
    return pd.concat(parts)


def interval(values, level: float = 0.95, min_n: int = MIN_SEEDS) -> Interval:
    """The mean of ``values`` with its Student-t interval; ``TooFewSeeds`` below ``min_n`` values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < min_n:
        raise TooFewSeeds(f"{len(x)} values, fewer than the {min_n} an interval needs")
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return Interval(float(x.mean()), float(x.mean() - half), float(x.mean() + half), len(x), level)


def paired(a: pd.Series, b: pd.Series, level: float = 0.95, min_n: int = MIN_SEEDS_GAIN) -> Interval:
    """``a - b`` seed by seed (both indexed by seed; seeds where only one ran are left out), with
    its Student-t interval: the paired comparison, when the runs of one seed share their data and
    clients."""
    both = a.index.intersection(b.index)
    return interval((a.loc[both] - b.loc[both]).to_numpy(), level, min_n)
