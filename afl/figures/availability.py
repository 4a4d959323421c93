"""The ``availability`` kind (clients that come and go, ``timing.availability``): per rule, test
accuracy at the virtual time ``budget`` and the share of compute wasted, against the clients'
online share, each rule at its best step per share (``steps``: the step key of each
``algorithm.name``), chosen on ``tuning_seeds`` and shown on the others (``afl.compare``); the
numbers from ``availability_table`` and ``availability_choices``.
"""

import dataclasses
import json
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import compare
from afl.config import AvailabilityConfig
from afl.figures.common import at_budget, interval_bars, point_text

RULE = "algorithm.name"
KEY = "timing.availability."


def nominal_share(run: pd.Series) -> float:
    """A cell's long-run online share by its config: 1 (``always``), ``mean_on / (mean_on + mean_off)``
    (``markov``), ``share`` (``diurnal``), from its ``timing.availability`` keys or the whole section
    as a grid value; keys the grid does not set at their defaults."""
    default = AvailabilityConfig()
    whole = run.get("timing.availability")  # the section as one grid value (JSON text in the tables)
    whole = json.loads(whole) if isinstance(whole, str) else whole if isinstance(whole, dict) else {}

    def key(name):
        value = whole.get(name, run.get(KEY + name))
        return getattr(default, name) if value is None or (isinstance(value, float) and np.isnan(value)) else value

    kind = key("kind")
    if kind == "always":
        return 1.0
    if kind == "markov":
        return float(key("mean_on")) / (float(key("mean_on")) + float(key("mean_off")))
    if kind == "diurnal":
        return float(key("share"))
    raise ValueError(f"availability figure: no nominal online share for kind {kind}; fix: use always, markov or "
                     "diurnal cells")


def availability_table(tables: dict, runs: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Each completed cell with ``share`` (its nominal online share), ``acc`` (% at time ``budget``),
    ``wasted`` (% of its clients' busy time never applied) and ``online`` (its measured online share)."""
    acc = at_budget(tables, runs, budget)
    clients = tables["clients"].groupby("cell")
    busy, wasted = clients["busy_time"].sum(), clients["wasted_time"].sum()
    online = clients["online_time"].sum() / clients.size()
    cells = runs[runs["cell"].isin(acc.index)].copy()
    cells["share"] = [round(nominal_share(row), 6) for _, row in cells.iterrows()]
    cells["acc"] = cells["cell"].map(acc)
    cells["wasted"] = cells["cell"].map(100 * wasted / busy.where(busy > 0))
    cells["online"] = cells["cell"].map(online) / cells["virtual_time"]
    return cells


def rule_choices(cells: pd.DataFrame, steps: dict, seeds) -> list[tuple[str, pd.DataFrame, list]]:
    """Per rule (``RULE``): its rows and, per share, the value of its step key (``steps``) with the
    highest mean ``acc`` on ``seeds`` (``afl.compare.tune``)."""
    out = []
    for rule, rows in cells.groupby(RULE, sort=True):
        if rule not in steps:
            raise ValueError(f"availability figure: no step key for {rule}; fix: add {rule} to the figure's steps")
        out.append((rule, rows, compare.tune(rows, ["share"], [steps[rule]], "acc", seeds, lower=False)))
    return out


def availability_choices(cells: pd.DataFrame, steps: dict, tuning_seeds) -> tuple[pd.DataFrame, list]:
    """``(shown, tuned)``: per rule and share, the value of its step key (``steps``) with the highest
    mean ``acc`` on the tuning seeds (every seed without ``tuning_seeds``); ``shown``: those
    cells on the evaluation seeds, with ``choice`` and ``rule``."""
    tuning = list(tuning_seeds or [])
    evaluation = sorted(set(cells["seed"]) - set(tuning))
    parts, tuned = [], []
    for rule, rows, choices in rule_choices(cells, steps, tuning or evaluation):
        tuned += [dataclasses.replace(c, method={RULE: rule, **c.method}) for c in choices]
        parts.append(compare.evaluate(rows, choices, evaluation, tuning).assign(rule=rule))
    return pd.concat(parts), tuned


def choose(spec: dict, tables: dict, runs: pd.DataFrame) -> list[str]:
    """The two-stage workflow's choice (``afl.cluster.pipeline.staged``): the cells of the tuning seeds
    at each rule's chosen step per share, as ``availability`` chooses them."""
    cells, tuning = availability_table(tables, runs, spec["budget"]), spec["tuning_seeds"]
    return [cell for _, rows, choices in rule_choices(cells, spec["steps"], tuning)
            for cell in compare.evaluate(rows, choices, tuning, [])["cell"]]


def availability(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Two panels against the online share (1 = always online): test accuracy at ``budget`` and the
    compute wasted on results never applied (lost offline, stopped, refused), one line per rule,
    the mean over the evaluation seeds with its 95% t-interval from ``afl.compare.MIN_SEEDS``
    seeds. Each rule and share is at its best step (``steps``) on ``tuning_seeds``. The log prints
    every point's interval, the measured online shares and the ``chosen:``, ``flat:`` and ``grid edge:``
    lines."""
    budget, steps, tuning = spec["budget"], spec["steps"], spec.get("tuning_seeds")
    cells = availability_table(tables, runs, budget)
    shown, tuned = availability_choices(cells, steps, tuning)
    how = f"tuned on seeds {', '.join(map(str, tuning))}" if tuning else "chosen on every seed"
    lines = compare.choice_lines(tuned, how) + compare.edge_lines(tuned, how)
    rules = sorted(shown["rule"].unique())
    colours = dict(zip(rules, sns.color_palette("colorblind", len(rules))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, column, label in ((axes[0], "acc", f"test accuracy at time {budget:g} (%)"),
                              (axes[1], "wasted", "compute wasted (% of busy time)")):
        for rule in rules:
            by_share = shown[shown["rule"] == rule].groupby("share")[column]
            mean, got, yerr = interval_bars(by_share)
            ax.errorbar(mean.index, mean.to_numpy(), yerr=yerr, marker="o", capsize=3, color=colours[rule], label=rule)
            lines.append(f"availability: {rule}: {column} per online share, evaluation seeds: " + "; ".join(
                f"{s:g}: {point_text(by_share, mean, got, s)}" for s in mean.index))
        ax.set(xlabel="clients' online share (1 = always online)", ylabel=label)
        ax.set_xticks(sorted(cells["share"].unique()))
    axes[0].set_ylim(0, 100)
    axes[1].set_ylim(bottom=0)
    axes[0].legend(title="rule", fontsize=8)
    measured = shown.groupby("share")["online"].mean()  # the cells drawn: the same whether or not the workflow ran two stages
    lines.append("availability: measured online share per nominal share (the cells shown): "
                 + ", ".join(f"{s:g}: {v:.3f}" for s, v in measured.items()))
    print("\n".join(lines), file=sys.stderr)
    seeds = shown["seed"].nunique()
    bars = "95% t-interval" if seeds >= compare.MIN_SEEDS else f"no interval below {compare.MIN_SEEDS}"
    fig.text(0.01, -0.02, f"mean of {seeds} evaluation seeds, {bars}; each rule and share at its best step "
             f"({', '.join(f'{r}: {k}' for r, k in sorted(steps.items()))}), {how}", ha="left", va="top", fontsize=8)
    return fig
