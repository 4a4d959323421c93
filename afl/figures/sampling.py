"""The ``sampling`` kind: the first seed's sampling analysis, from cells with ``run.sampling_draws``.

Server loss over rounds per group (selection mode and m); the variance of the mean of m clients'
updates over rounds, measured at each evaluation; and that variance over sigma^2 against m (each
seed's mean over its evaluations, then the mean over seeds with its 95% t-interval from
``afl.compare.MIN_SEEDS`` seeds on), on the formulas 1/m (with replacement) and (n-m)/(m(n-1))
(without). The curves carry a band from ``afl.compare.MIN_SEEDS`` seeds on, as the ``curves`` kind's. Beside the two uniform modes, the probe's ``afl_rule`` mode (``afl.run.probes``):
the aggregate the afl rule really applied in the updates before each evaluation (its clients, weights
n_k s(tau)), around the data-weighted mean, over the weighted sigma_w^2 (diamonds on the right, beside m:
0.2 to the left for runs with replacement, to the right without).
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from afl import compare
from afl.figures.common import PANEL, X_LABEL, Y_LABEL, band_rule, metric

MODE_LABEL = {"with_replacement": "with replacement", "without_replacement": "without replacement"}
RULE = "afl rule"  # the probe's afl_rule mode (afl.run.probes.RULE_MODE), per run selection


def probe_label(mode: str, selection: str | None) -> tuple[str, str]:
    """The legend names of a probe row, long (the middle panel's) and short (the right panel's): its
    uniform mode, or the afl rule's applied updates in a run of that selection."""
    if mode != "afl_rule":
        return MODE_LABEL[mode], MODE_LABEL[mode]
    if not isinstance(selection, str):  # no algorithm.selection in the grid's table
        return f"{RULE}'s updates, w ~ n_k s(tau)", RULE
    run = f"run {MODE_LABEL.get(selection, selection)}"
    return f"{RULE}'s updates, w ~ n_k s(tau), {run}", f"{RULE} ({run})"


def seed_half_width(values: pd.Series) -> float:
    """The 95% t half-width of the mean over seeds, 0 (no bar) below ``compare.MIN_SEEDS`` seeds."""
    if len(values) < compare.MIN_SEEDS:
        return 0.0
    got = compare.interval(values)
    return got.high - got.mean


def sampling(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Server loss (hue m, line style the run's selection mode), the probe's variance over rounds
    (hue m, style the probe's mode, the afl rule's updates included) and the variance over sigma^2
    against m on the formulas (the afl rule's over its weighted sigma_w^2)."""
    finished = runs.loc[runs["status"] == "completed"]
    fig, axes = plt.subplots(1, 3, figsize=(PANEL[0] * 3, PANEL[1]))
    ms = sorted(set(finished["algorithm.concurrency"]) | set(tables["sampling"]["m"]))
    shades = dict(zip(ms, sns.color_palette("viridis", len(ms))))
    errorbar, seeds_text = band_rule(runs, label_of)
    styles = list(MODE_LABEL.values())

    loss = metric(tables, "server_loss", pd.Index(finished["cell"])).rename(columns={"round": "x"})
    mode_of = finished.set_index("cell")["algorithm.selection"] if "algorithm.selection" in finished else None
    loss = loss.assign(m=loss["cell"].map(finished.set_index("cell")["algorithm.concurrency"]),
                       sampling=loss["cell"].map(mode_of).map(MODE_LABEL) if mode_of is not None else styles[1])
    if len(loss):
        sns.lineplot(data=loss, x="x", y="value", hue="m", hue_order=ms, style="sampling", style_order=styles,
                     palette=shades, errorbar=errorbar, ax=axes[0], legend=False)
    axes[0].set_xlabel(X_LABEL["round"])
    axes[0].set_ylabel(Y_LABEL["server_loss"])
    axes[0].set_title("server loss over rounds (run's selection)")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))

    probe = tables["sampling"][tables["sampling"]["cell"].isin(finished["cell"])]
    run_selection = probe["cell"].map(mode_of) if mode_of is not None else pd.Series(None, index=probe.index)
    names = [probe_label(mode, sel) for mode, sel in zip(probe["mode"], run_selection)]
    short = dict(names)
    probe = probe.assign(sampling=[long for long, _ in names], ratio=probe["variance"] / probe["sigma2"])
    probe_styles = styles + sorted(set(probe["sampling"]) - set(styles))  # the uniform modes, then the rule's
    n = int(probe["n"].iloc[0]) if len(probe) else None
    if len(probe):
        sns.lineplot(data=probe, x="round", y="variance", hue="m", hue_order=ms, style="sampling",
                     style_order=probe_styles, palette=shades, errorbar=errorbar, ax=axes[1])
        handles, labels = axes[1].get_legend_handles_labels()
        axes[1].get_legend().remove()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        axes[1].set_yscale("log")
        grid = np.arange(1, n + 1)
        colours = dict(zip(probe_styles, sns.color_palette("colorblind", len(probe_styles))))
        axes[2].plot(grid, 1 / grid, color=colours[styles[0]], lw=1.5, label="sigma^2 / m")
        axes[2].plot(grid, (n - grid) / (grid * (n - 1)), color=colours[styles[1]], lw=1.5, ls="--",
                     label="sigma^2 / m * (n-m) / (n-1)")
        # The afl rule's points beside the uniform modes' (at m), 0.2 to the left, then right, ...
        shift = {label: 0.2 * (1 + i // 2) * (-1) ** (i + 1) for i, label in enumerate(probe_styles[len(styles):])}
        seed_of = finished.set_index("cell")["seed"]
        for mode, rows in probe.groupby("sampling"):
            per_seed = rows.groupby(["m", rows["cell"].map(seed_of)])["ratio"].mean()
            stats = per_seed.groupby("m").agg(["mean", "count"])
            half = [seed_half_width(per_seed.loc[m]) for m in stats.index]
            axes[2].errorbar(stats.index + shift.get(mode, 0.0), stats["mean"], yerr=half, capsize=3,
                             fmt="D" if mode in shift else "o", color=colours[mode],
                             label=f"measured, {short[mode]}")
        axes[2].set_xticks(grid)
        axes[2].legend(frameon=False, fontsize=8)
    axes[1].set_xlabel(X_LABEL["round"])
    axes[1].set_ylabel("E||mean of m updates - mean||^2")
    axes[1].set_title("variance of the mean of m clients' updates")
    axes[2].set_xlabel(f"m = clients sampled (of n = {n})")
    axes[2].set_ylabel("variance / sigma^2 (or sigma_w^2)")
    axes[2].set_title("measured vs the seed's formulas")
    fig.text(0.01, -0.02, f"curves: {seeds_text}; right: each seed's mean over its evaluations, the mean over "
             f"seeds with its 95% t-interval from {compare.MIN_SEEDS} seeds", fontsize=8)
    return fig
