"""The ``ablation`` kind: per panel (a value of the ``panel`` key), each combination of the
``bars`` keys against a reference combination: its final test accuracy minus the reference's,
paired by seed (``afl.compare``), optionally each at its best ``tune`` value; its numbers from
``ablation_table``.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import compare
from afl.figures.common import PANEL


def final_accuracy(tables: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """Each completed run (indexed by cell) with ``value``: its test accuracy (%) at the end, the
    mean of its evaluations from 3/4 of its last round on."""
    finished = runs.loc[runs["status"] == "completed"].set_index("cell")
    evals = tables["evals"][tables["evals"]["cell"].isin(finished.index)]
    last = evals[evals["round"] >= 0.75 * evals.groupby("cell")["round"].transform("max")]
    return (last.groupby("cell")["test_acc"].mean() * 100).rename("value").to_frame().join(finished)


def panel_titles(final: pd.DataFrame, panel_key: str) -> dict:
    """Per panel value: the value and every other setting (a dotted column, e.g. timing.sigma) that
    is the same within each panel but differs between panels, named without its section, e.g.
    ``lognormal (sigma 1.5, rates.kind lognormal)``; ``default`` where a panel's cells do not set it."""
    text = final.map(lambda v: "default" if pd.isna(v) else str(v))
    by = text.groupby(panel_key)
    follow = [k for k in text.columns if "." in k and k != panel_key and text[k].nunique() > 1
              and (by[k].nunique() == 1).all()]
    return {value: value + (" (" + ", ".join(f"{k.split('.', 1)[1]} {rows[k].iloc[0]}" for k in follow) + ")"
                            if follow else "")
            for value, rows in by}


def reference_bar(spec: dict, bars) -> str:
    """The reference combination as a bar's text: ``spec["reference"]`` (values in the order of
    ``spec["bars"]``), by default the first of ``bars`` in sorted order (which combination is
    "everything off" is not known generically); ``ValueError`` if it is not one of ``bars``."""
    reference = ", ".join(map(str, spec["reference"])) if spec.get("reference") else min(bars)
    if len(spec.get("reference") or spec["bars"]) != len(spec["bars"]) or reference not in set(bars):
        raise ValueError(f"ablation reference {reference!r}: not a combination of {', '.join(spec['bars'])} "
                         f"that was run; fix: one of {sorted(set(bars))}")
    return reference


def ablation_table(tables: dict, runs: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """``(shown, diffs, choices)`` by ``afl.compare``. ``shown``: the final accuracy of each run
    drawn (evaluation seeds: not ``tuning_seeds``), with ``bar`` (its combination of the ``bars``
    keys, ", "-joined) and ``panel`` (its ``panel`` value as text); with ``tune``, each panel and
    bar at its value of the highest mean final accuracy on the tuning seeds (``choices``; every
    seed without ``tuning_seeds``). ``diffs``: per panel and bar, one row per seed: the bar's final
    accuracy minus the reference bar's (``reference``: values in the order of ``bars``; default the
    first bar in sorted order) in the same panel and seed."""
    final = final_accuracy(tables, runs)
    final = final.assign(bar=final[spec["bars"]].astype(str).agg(", ".join, axis=1),
                         panel=final[spec["panel"]].astype(str)).reset_index()
    tuning = list(spec.get("tuning_seeds") or [])
    evaluation = sorted(set(final["seed"]) - set(tuning))
    choices = compare.tune(final, ["panel", "bar"], [spec["tune"]], "value", tuning or evaluation, lower=False) \
        if spec.get("tune") else []
    shown = compare.evaluate(final, choices, evaluation, tuning) if choices else \
        final[final["seed"].isin(evaluation)]
    reference = reference_bar(spec, shown["bar"])
    base = shown[shown["bar"] == reference].set_index(["panel", "seed"])["value"]
    diffs = shown[shown["bar"] != reference].assign(
        diff=lambda d: d["value"] - base.reindex(list(zip(d["panel"], d["seed"]))).to_numpy())
    return shown, diffs.dropna(subset=["diff"]), choices


def describe(values) -> str:
    """``afl.compare.interval`` of ``values`` (from ``afl.compare.MIN_SEEDS``), else the mean and n."""
    try:
        return str(compare.interval(values))
    except compare.TooFewSeeds:
        return f"{np.nanmean(values):.4g} (n = {len(values)}: no interval below {compare.MIN_SEEDS})"


def ablation(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """One panel per value of ``spec["panel"]`` (a setting, titled with every other setting that
    changes with it); in each, one point per combination of the ``spec["bars"]`` keys (the switched
    contributions) but the reference: its final test accuracy (mean of a run's last quarter of
    evaluations) minus the reference combination's, paired by seed: the mean with its 95%
    t-interval from ``afl.compare.MIN_SEEDS`` pairs (an ablation's differences use 5, not
    ``MIN_SEEDS_GAIN``), each seed's difference a dot, a line at 0; the reference's own accuracy
    (mean, interval, n) under the panel's title. With ``tune``, each combination is at its best value
    of that key, chosen on ``tuning_seeds`` (``afl.compare``); only the other seeds are drawn."""
    shown, diffs, choices = ablation_table(tables, runs, spec)
    how = f"tuned on seeds {', '.join(map(str, spec['tuning_seeds']))}" if spec.get("tuning_seeds") else \
        "chosen on the seeds shown"
    for line in compare.choice_lines(choices, how) + compare.edge_lines(choices, how):
        print(line, file=sys.stderr)
    reference = reference_bar(spec, shown["bar"])
    bars = sorted(set(shown["bar"]) - {reference})
    colours = dict(zip(bars, sns.color_palette("colorblind", len(bars))))
    titles = panel_titles(shown.set_index("cell"), spec["panel"])
    fig, axes = plt.subplots(1, len(titles), figsize=(PANEL[0] * len(titles), PANEL[1] * 1.3), squeeze=False,
                             sharey=True)
    for ax, (value, title) in zip(axes.flat, sorted(titles.items())):
        here = diffs[diffs["panel"] == value]
        base = describe(shown.loc[(shown["panel"] == value) & (shown["bar"] == reference), "value"].to_numpy())
        print(f"ablation: {title}: reference {reference}: final accuracy (%) {base}", file=sys.stderr)
        for x, bar in enumerate(bars):
            d = here.loc[here["bar"] == bar, "diff"].to_numpy()
            if not len(d):
                continue
            try:
                got = compare.interval(d)
                ax.errorbar([x], [got.mean], yerr=[[got.mean - got.low], [got.high - got.mean]], fmt="s",
                            capsize=4, color=colours[bar], markersize=7)
            except compare.TooFewSeeds:
                ax.plot([x], [d.mean()], "s", color=colours[bar], markersize=7)
            ax.scatter(np.full(len(d), x) + np.linspace(-0.12, 0.12, len(d)), d, color="0.2", s=10, zorder=3)
            print(f"ablation: {title}: {bar} minus {reference}, paired by seed: {describe(d)}", file=sys.stderr)
        ax.axhline(0, color="0.3", lw=1)
        ax.set_xticks(range(len(bars)), [bar.replace(", ", "\n") for bar in bars], fontsize=7)
        ax.set_xlim(-0.5, len(bars) - 0.5)
        ax.set_title(f"{title}\nreference {reference}:\n{base}", fontsize=8)
    axes[0, 0].set_ylabel("final test accuracy minus the reference's (points)")
    seeds = shown["seed"].nunique()
    fig.text(0.01, -0.02, f"{', '.join(spec['bars'])}: each combination minus {reference}, paired by seed; "
             f"{seeds} evaluation seeds (95% t-interval from {compare.MIN_SEEDS}; dots: seeds)"
             + (f"; each at its best {spec['tune'].split('.')[-1]}, {how}" if choices else ""),
             ha="left", va="top", fontsize=8)
    return fig
