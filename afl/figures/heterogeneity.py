"""The ``heterogeneity`` kind (the third seed's claim (iii)): the measured effect of client
heterogeneity on the floor of ``metric`` at a constant step, per delay setting, against each
client's average delay and against the largest delay; its numbers from ``heterogeneity_table``.

The claim. Koloskova, Stich and Jaggi (2022), Theorem 10: AsyncSGD with a constant number
``tau_C`` of jobs in flight, each new job sent to a client drawn uniformly at random (queued if it
is busy; ``algorithm.selection: routing``, ``algorithm.routing: uniform``), reaches
``(1/T) sum_t ||grad f(x_t)||^2 <= eps`` after

    O( sigma^2/eps^2 + zeta^2/eps^2 + sqrt(tau_avg (1/n) sum_i zeta_i^2 tau_avg^i) / eps^(3/2)
       + sqrt(tau_avg tau_max) / eps )

iterations, ``tau_avg^i`` the average delay of client i's gradients: the heterogeneity term with a
delay in it "is not affected by the maximum delay at all, but by the average delay within each
individual client". Read at a constant step ``eta`` the ``eps^(-3/2)`` term is a floor term
``eta^2 L^2 H``, ``H = tau_avg (1/n) sum_i zeta_i^2 tau_avg^i``, beside the delay-free
``eta zeta^2`` of client sampling.

The measure, per completed cell: its **floor**, the mean of ``metric`` over its last ``last``
evaluations. Cells that differ only in their seed, in the ``control`` key and in the ``tune`` key
form a **setting** (the delays). Per setting and seed: the **effect** of heterogeneity, the floor of
the heterogeneous cell minus the floor of the control cell (``control``, e.g. ``{data.partition:
iid}``: the same data split IID, which removes the heterogeneity), and its **ratio** to the effect
of the ``baseline`` setting of the same seed (each seed generates its own data, so effects are
compared seed by seed). The delays of a setting are measured on its heterogeneous cells that have
a pair (the control cells of a seed have the same timeline), their mean over those seeds:
``tau_avg``, each client's mean staleness ``tau_avg^i`` (their mean over clients, smallest and
largest) and ``tau_max``.

The prediction. If the effect follows ``H``, then for every seed the ratio to the baseline lies
between 1 (the delay-free part) and ``H_s / H_b``, and ``H_s / H_b`` lies, whatever the clients'
``zeta_i`` (fixed by the seed's data, the same in both settings), between the smallest and the
largest over clients of ``(tau_avg_s / tau_avg_b) (tau_avg_s^i / tau_avg_b^i)``: the **admissible
range**. Settings with the same per-client average delays and any ``tau_max`` have a range close to
1; a ratio outside its range is an effect that the per-client average delays do not account for.

The step. With ``tune`` (e.g. ``algorithm.server_lr``) one value for every setting: the one whose
control cells (pooled over the settings) have the lowest mean floor on the ``tuning_seeds`` (the
step tuned for the problem without heterogeneity, ``afl.compare.tune``; without ``tuning_seeds`` on
the seeds shown); the figure shows the other seeds (``afl.compare.evaluate``) and a best value at an
end of its grid is printed as a ``grid edge:`` line. Intervals are Student-t 95%: a floor's from 5
seeds (``afl.compare.MIN_SEEDS``), an effect's and a ratio's, paired by seed, from 10
(``afl.compare.MIN_SEEDS_GAIN``); a ratio's on the log scale (its geometric mean). A seed whose
effect is not positive in the setting or the baseline has no ratio (the log prints how many).
"""

from __future__ import annotations

import json
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from afl import compare
from afl.figures.common import PANEL, SHORT, value_name


def floors(evals: pd.DataFrame, metric: str, last: int) -> pd.Series:
    """Per cell: the mean of ``metric`` over its last ``last`` evaluations (by version)."""
    ordered = evals.sort_values(["cell", "version"])
    return ordered.groupby("cell")[metric].apply(lambda x: float(x.tail(last).mean()))


def delays(updates: pd.DataFrame) -> pd.DataFrame:
    """Per cell: ``tau_avg`` and ``tau_max`` of its updates' staleness, and of its clients' mean
    staleness ``tau_avg^i`` the mean (``worker_mean``), the smallest and the largest."""
    per_client = updates.groupby(["cell", "client"])["staleness"].mean()
    out = updates.groupby("cell")["staleness"].agg(tau_avg="mean", tau_max="max")
    return out.join(per_client.groupby("cell").agg(worker_mean="mean", worker_min="min", worker_max="max"))


def admissible(per_client: pd.Series, tau_avg: pd.Series, cell: str, base: str) -> tuple[float, float]:
    """The range of ``H_s / H_b`` for any ``zeta_i``, widened to include 1: the smallest and largest
    over the clients of both cells of ``(tau_avg_s / tau_avg_b) (tau_avg_s^i / tau_avg_b^i)``
    (``per_client``: mean staleness by cell and client; ``tau_avg``: by cell)."""
    per = (per_client.loc[cell] / per_client.loc[base]).dropna() * tau_avg[cell] / tau_avg[base]
    return min(1.0, float(per.min())), max(1.0, float(per.max()))


def _interval(values, min_n: int, log: bool = False) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``; on the log scale if ``log`` (a geometric mean); NaN ends below ``min_n``."""
    x = np.log(np.asarray(values, dtype=float)) if log else np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    back = np.exp if log else (lambda v: v)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    try:
        got = compare.interval(x, min_n=min_n)
        return float(back(got.mean)), float(back(got.low)), float(back(got.high)), len(x)
    except compare.TooFewSeeds:
        return float(back(x.mean())), float("nan"), float("nan"), len(x)


def _same(cell_value, wanted) -> bool:
    """A table value equals a config value; a list or mapping (JSON text in the tables) by its parse."""
    if isinstance(wanted, (list, dict)) and isinstance(cell_value, str):
        try:
            return json.loads(cell_value) == wanted
        except ValueError:
            return False
    return cell_value == wanted


def _matches(frame: pd.DataFrame, wanted: dict) -> pd.Series:
    """The rows whose every named column equals its value (``_same``)."""
    mask = pd.Series(True, index=frame.index)
    for key, value in wanted.items():
        if key not in frame:
            raise ValueError(f"baseline: {key} is not a column of the experiment; fix: name a grid key")
        mask &= frame[key].map(lambda v, value=value: _same(v, value))
    return mask


def floor_cells(spec: dict, tables: dict, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``(cells, keys)``: the completed cells of ``runs`` with ``control`` (whether the cell is a control
    cell), ``floor`` (``floors``) and ``setting`` (the values of ``keys``, the grid keys other than the
    control and tuned keys that vary among the cells, joined)."""
    metric, last = spec.get("metric", "grad_norm_sq"), int(spec.get("last", 50))
    ((control_key, control_value),) = spec["control"].items()
    cells = runs[runs["status"] == "completed"].copy()
    cells["control"] = cells[control_key] == control_value
    het_values = sorted(cells.loc[~cells["control"], control_key].astype(str).unique())
    if len(het_values) != 1:
        raise ValueError(f"control: the cells hold {len(het_values)} values of {control_key} besides "
                         f"{control_value!r} ({', '.join(het_values)}); fix: select one of them")
    evals = tables["evals"][tables["evals"]["cell"].isin(cells["cell"])]
    cells["floor"] = cells["cell"].map(floors(evals, metric, last))
    keys = [k for k in cells.columns if "." in k and k not in (control_key, spec.get("tune"))
            and cells[k].astype(str).nunique(dropna=False) > 1]
    text = cells[keys].astype(str)
    cells["setting"] = text.apply(lambda row: "|".join(row), axis=1) if keys else ""
    return cells, keys


def step_choice(cells: pd.DataFrame, tune: str, seeds) -> compare.Choice:
    """The ``tune`` value whose control cells, pooled over the settings, have the lowest mean floor on ``seeds``."""
    (choice,) = compare.tune(cells[cells["control"]], [], [tune], "floor", seeds)
    return choice


def choose(spec: dict, tables: dict, runs: pd.DataFrame) -> list[str]:
    """The two-stage workflow's choice (``afl.cluster.pipeline.staged``): every cell of the tuning seeds
    at the chosen step, as ``heterogeneity_table`` chooses it."""
    cells, _ = floor_cells(spec, tables, runs)
    tuning = spec["tuning_seeds"]
    return list(compare.evaluate(cells, [step_choice(cells, spec["tune"], tuning)], tuning, [])["cell"])


def heterogeneity_table(spec: dict, tables: dict, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(settings, pairs, lines)``. ``pairs``: per setting and evaluation seed, ``floor_het``,
    ``floor_control``, ``effect`` (their difference), ``ratio`` (the effect over the baseline's of
    the same seed, NaN unless both are positive), ``low``/``high`` (the admissible range of the ratio)
    and ``outside`` (the ratio is outside it). ``settings``: per setting (``label``; ``baseline``
    marks the baseline's row), the mean delays of its heterogeneous cells (``tau_avg``,
    ``worker_mean``, ``worker_min``, ``worker_max``, ``tau_max``), the floors' means with their
    intervals, the effect's, the ratio's geometric mean with its interval, the admissible range
    (geometric means of its ends over the seeds) and ``outside`` (seeds whose ratio is outside its
    range) of ``n_ratio``. ``lines``: the ``grid edge:`` lines and the chosen step."""
    tune, tuning = spec.get("tune"), list(spec.get("tuning_seeds") or [])
    cells, keys = floor_cells(spec, tables, runs)
    lines = []
    if tune:
        seeds = tuning or sorted(cells["seed"].unique())
        choice = step_choice(cells, tune, seeds)
        lines += compare.edge_lines([choice], f"tuned on the control cells, seeds {', '.join(map(str, seeds))}")
        lines.append(f"chosen {tune} = {choice.values[tune]:g} (lowest mean control floor {choice.cost:.4g} "
                     f"over {choice.seeds} seeds)")
        if tuning:
            cells = compare.evaluate(cells, [choice], set(cells["seed"]) - set(tuning), tuning)
        else:
            cells = cells[cells[tune] == choice.values[tune]]
    settings = sorted(cells["setting"].unique())
    if len(settings) > 1 and not spec.get("baseline"):
        raise ValueError("baseline: several settings and none named the baseline; fix: set baseline to "
                         "the grid values of one of them")
    base = cells.loc[_matches(cells, spec.get("baseline") or {}), "setting"].unique()
    if len(base) != 1:
        raise ValueError(f"baseline: {spec.get('baseline')} matches {len(base)} settings; fix: name one setting")
    base = base[0]
    het, ctl = cells[~cells["control"]], cells[cells["control"]]
    updates = tables["updates"][tables["updates"]["cell"].isin(het["cell"])]
    measured = delays(updates)
    per_client = updates.groupby(["cell", "client"])["staleness"].mean()
    by = het.set_index(["setting", "seed"])
    pairs = pd.DataFrame({"cell": by["cell"], "floor_het": by["floor"],
                          "floor_control": ctl.set_index(["setting", "seed"])["floor"]}).dropna()
    pairs["effect"] = pairs["floor_het"] - pairs["floor_control"]
    base_effect = pairs.xs(base, level="setting")["effect"]
    pairs["ratio"] = np.nan
    pairs[["low", "high"]] = np.nan
    for (setting, seed), row in pairs.iterrows():
        if seed in base_effect.index and row["effect"] > 0 and base_effect[seed] > 0:
            pairs.loc[(setting, seed), "ratio"] = row["effect"] / base_effect[seed]
            base_cell = pairs.loc[(base, seed), "cell"]
            pairs.loc[(setting, seed), ["low", "high"]] = admissible(per_client, measured["tau_avg"], row["cell"],
                                                                     base_cell)
    pairs["outside"] = (pairs["ratio"] < pairs["low"] * (1 - 1e-12)) | (pairs["ratio"] > pairs["high"] * (1 + 1e-12))
    rows = []
    for setting in settings:
        p = pairs.xs(setting, level="setting") if setting in pairs.index.get_level_values(0) else pairs.iloc[:0]
        d = measured.loc[p["cell"]].mean()
        f_het, f_ctl = (_interval(p[c], compare.MIN_SEEDS) for c in ("floor_het", "floor_control"))
        effect = _interval(p["effect"], compare.MIN_SEEDS_GAIN)
        ratio = _interval(p["ratio"].dropna(), compare.MIN_SEEDS_GAIN, log=True)
        has = p["ratio"].notna()
        first = het[het["setting"] == setting].iloc[0]
        rows.append({"setting": setting, "label": _label(first, keys, het[het["setting"] == base].iloc[0]),
                     "baseline": setting == base, **d.to_dict(),
                     "floor_het": f_het[0], "floor_het_low": f_het[1], "floor_het_high": f_het[2],
                     "floor_control": f_ctl[0], "floor_control_low": f_ctl[1], "floor_control_high": f_ctl[2],
                     "effect": effect[0], "effect_low": effect[1], "effect_high": effect[2], "n": effect[3],
                     "ratio": ratio[0], "ratio_low": ratio[1], "ratio_high": ratio[2], "n_ratio": ratio[3],
                     "admissible_low": float(np.exp(np.log(p.loc[has, "low"]).mean())) if has.any() else np.nan,
                     "admissible_high": float(np.exp(np.log(p.loc[has, "high"]).mean())) if has.any() else np.nan,
                     "outside": int(p.loc[has, "outside"].sum())})
    return pd.DataFrame(rows).set_index("setting"), pairs, lines


def _label(row: pd.Series, keys: list[str], base: pd.Series) -> str:
    """A setting's name: the grid values in which it differs from the baseline (``baseline`` itself)."""
    parts = [f"{SHORT.get(k, '.'.join(k.split('.')[1:]))}={value_name(k, row[k])}" for k in keys
             if str(row[k]) != str(base[k])]
    return ", ".join(parts) or "baseline"


def heterogeneity(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Left: each setting's heterogeneity effect (mean over seeds, 95% t-interval paired by seed
    from 10 seeds) against the mean over clients of each client's average delay, the horizontal bar
    from the smallest to the largest client's, labelled with tau_max. Right: the effect relative to
    the baseline's of the same seed (geometric mean, interval from 10 seeds) against tau_max, the
    admissible range of the per-client average delays as a grey bar. The log prints the table."""
    settings, pairs, lines = heterogeneity_table(spec, tables, runs)
    for line in lines:
        print(line, file=sys.stderr)
    ((control_key, control_value),) = spec["control"].items()
    metric, last = spec.get("metric", "grad_norm_sq"), int(spec.get("last", 50))
    shown = settings.sort_values(["worker_mean", "tau_max"])
    colours = dict(zip(shown.index, sns.color_palette("colorblind", len(shown))))
    fig, axes = plt.subplots(1, 2, figsize=(PANEL[0] * 2.6, PANEL[1] * 1.5))
    for setting, s in shown.iterrows():
        c = colours[setting]
        yerr = None if np.isnan(s["effect_low"]) else \
            [[s["effect"] - s["effect_low"]], [s["effect_high"] - s["effect"]]]
        axes[0].errorbar([s["worker_mean"]], [s["effect"]], yerr=yerr, capsize=3, marker="o", ls="none", color=c,
                         xerr=[[s["worker_mean"] - s["worker_min"]], [s["worker_max"] - s["worker_mean"]]],
                         label=f"{s['label']} (tau_max {s['tau_max']:.0f})")
        if not np.isnan(s["admissible_low"]):
            axes[1].vlines(s["tau_max"], s["admissible_low"], s["admissible_high"], color="0.75", lw=6, zorder=1)
        if not np.isnan(s["ratio"]):
            rerr = None if np.isnan(s["ratio_low"]) else [[s["ratio"] - s["ratio_low"]], [s["ratio_high"] - s["ratio"]]]
            axes[1].errorbar([s["tau_max"]], [s["ratio"]], yerr=rerr, capsize=3, marker="o", ls="none", color=c,
                             zorder=3)
    if shown["worker_mean"].min() > 0 and shown["worker_mean"].max() / shown["worker_mean"].min() > 10:
        axes[0].set_xscale("log")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_minor_formatter(NullFormatter())
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="0.4", ls=":", lw=1)
    n = int(shown["n"].max()) if len(shown) else 0
    bars = f"95% t-interval paired by seed, n = {n}" if n >= compare.MIN_SEEDS_GAIN else \
        f"{n} seeds: no interval below {compare.MIN_SEEDS_GAIN} pairs"
    het = f"{control_key}={runs.loc[runs[control_key] != control_value, control_key].iloc[0]}"
    axes[0].set_xlabel("(1/n) sum_i tau_avg^i: mean over clients of each client's average delay\n"
                       "(bar: the smallest to the largest client's)")
    axes[0].set_ylabel(f"heterogeneity effect on the floor of {metric}\n"
                       f"floor({het}) - floor({control_value})")
    axes[0].set_title(f"floor: mean of the last {last} evaluations\n({bars})")
    axes[1].set_xlabel("tau_max (largest staleness of the runs)")
    axes[1].set_ylabel("effect / baseline's effect (same seed)")
    axes[1].set_title("relative to the baseline, against tau_max\n(grey: admissible by the per-client average delays)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
               frameon=False, fontsize=8,
               title="delay setting (colour in both panels)" + (f"; {lines[-1]}" if lines else ""))
    cols = ["label", "tau_avg", "worker_mean", "worker_min", "worker_max", "tau_max", "floor_het", "floor_control",
            "effect", "effect_low", "effect_high", "n", "ratio", "ratio_low", "ratio_high", "n_ratio",
            "admissible_low", "admissible_high", "outside"]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(f"heterogeneity: floor = mean {metric} of the last {last} evaluations; effect = floor({het}) - "
              f"floor({control_key}={control_value}) by seed; ratio = effect / the baseline's effect by seed "
              f"(geometric mean); intervals Student-t 95% (effect and ratio from {compare.MIN_SEEDS_GAIN} pairs); "
              f"outside = seeds whose ratio is outside the range the per-client average delays admit:\n"
              f"{shown[cols].set_index('label').to_string(float_format=lambda v: f'{v:.4g}')}", file=sys.stderr)
    return fig
