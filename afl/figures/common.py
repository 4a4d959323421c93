"""Helpers and constants shared by the figure kinds (and ``draw.main``'s grouping and notes).

Labels and sizes, the groups of cells (grid values named readably), their colours and legend, one
metric per cell, and, for the queueing kinds, one cell's tables, its network (rates and routing),
routing names, the accuracy at a time budget and the bound's constants recorded by an
optimized-routing cell.
"""

import json

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from afl import compare
from afl.queueing import measure
from afl.queueing.routing import BoundConstants


STANDARD = ("algorithm.name", "algorithm.concurrency", "seed")
SHORT = {"algorithm.concurrency": "m"}
Y_LABEL = {"server_loss": "server loss (NLL, nats)", "test_acc": "test accuracy (%)",
           "test_loss": "test loss (NLL, nats)", "grad_norm_sq": "||grad f(x)||^2 (training subset)"}
X_LABEL = {"round": "round (m results applied)", "time": "virtual time (mean task durations)"}
CI = ("ci", 95)
Z95 = 1.96
TIME_POINTS = 150
PANEL = (4.4, 3.2)  # inches per panel


def band_rule(runs: pd.DataFrame, label_of: pd.Series, marks: str = "lines") -> tuple:
    """A seaborn ``errorbar`` for ``marks`` (lines or bars) averaged over seeds: a 95% bootstrap
    interval, or none below ``compare.MIN_SEEDS`` finished seeds in some group; and the words that
    say which, with the groups' numbers of finished seeds."""
    done = runs[runs["status"] == "completed"]
    seeds = done.groupby(done["cell"].map(label_of))["seed"].nunique()
    low, high = (int(seeds.min()), int(seeds.max())) if len(seeds) else (0, 0)
    n = f"{low}" if low == high else f"{low}-{high}"
    interval = "band" if marks == "lines" else "error bar"
    if low >= compare.MIN_SEEDS:
        return CI, f"{marks}: mean of n = {n} seeds, {interval}s: 95% bootstrap interval"
    return None, f"{marks}: mean of {n} seeds (no {interval} below {compare.MIN_SEEDS})"


def select(frame: pd.DataFrame, spec: dict) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for key, value in (spec.get("select") or {}).items():
        mask &= frame[key].isin(value if isinstance(value, list) else [value])
    return frame[mask]


def groups(runs: pd.DataFrame, keys: list[str]) -> tuple[pd.Series, list[str], str]:
    """Each cell's group label, the labels in plotting order, and the legend title.

    A label names the algorithm, m, and each further grid key that splits the groups further
    (a key that only follows the algorithm, like client.epochs for asyncsgd, is left out).
    """
    text = runs.astype(str)
    varying = []
    for key in (k for k in keys if k not in STANDARD):
        before = len(text.groupby(["algorithm.name", "algorithm.concurrency", *varying], dropna=False))
        if len(text.groupby(["algorithm.name", "algorithm.concurrency", *varying, key], dropna=False)) > before:
            varying.append(key)
    ordered = runs.sort_values(["algorithm.name", "algorithm.concurrency", *varying])

    def label(row) -> str:
        parts = [str(row["algorithm.name"]), f"m={row['algorithm.concurrency']}"]
        return ", ".join(parts + [f"{SHORT.get(k, k.split('.')[-1])}={value_name(k, row[k])}" for k in varying])

    labels = ordered.apply(label, axis=1)
    labels.index = ordered["cell"]
    title = ", ".join(["rule", "m = clients per round"] + [f"{SHORT.get(k, k.split('.')[-1])} = {k}" for k in varying])
    return labels, list(dict.fromkeys(labels)), title


def value_name(key: str, value) -> str:
    """A grid value as a legend prints it: a routing by ``routing_name``; a mapping or list (JSON
    text in the tables) without braces, e.g. ``lognormal(sigma=0.7)``; anything else as it is."""
    if key == "algorithm.routing":
        return routing_name(value)
    try:
        return _plain(json.loads(value)) if isinstance(value, str) else str(value)
    except ValueError:
        return value


def _plain(v) -> str:
    if isinstance(v, dict):
        inner = ", ".join(f"{k}={_plain(x)}" for k, x in v.items() if k != "kind")
        return f"{v.get('kind', '')}({inner})" if inner else str(v.get("kind", ""))
    if isinstance(v, list):
        return "[" + ", ".join(map(_plain, v)) + "]"
    return str(v)


def group_palette(runs: pd.DataFrame, keys: list[str], label_of: pd.Series, order: list[str]) -> dict:
    """Each group's colour. When the groups differ in one numeric grid key alone (e.g. m), a
    sequential palette (viridis) in the order of its value; otherwise the colour-blind palette."""
    varying = [k for k in keys if k != "seed" and runs[k].astype(str).nunique() > 1]
    numeric = len(varying) == 1 and pd.api.types.is_numeric_dtype(runs[varying[0]]) and runs[varying[0]].notna().all()
    if not numeric:
        return dict(zip(order, sns.color_palette("colorblind", len(order))))
    value_of = dict(zip(runs["cell"].map(label_of), runs[varying[0]]))
    return dict(zip(sorted(order, key=value_of.get), sns.color_palette("viridis", len(order))))


def diverged_note(runs: pd.DataFrame, label_of: pd.Series) -> list[str]:
    bad = runs[runs["status"] != "completed"]
    return [f"X diverged: {label_of[r.cell]}, seed {r.seed} ({r.reason})" for r in bad.itertuples()]


def metric(tables: dict, y: str, cells: pd.Index) -> pd.DataFrame:
    """Per cell: columns cell, round, time, value of metric ``y``."""
    if y == "server_loss":
        u = tables["updates"][tables["updates"]["cell"].isin(cells)]
        per = u.groupby(["cell", "round"], as_index=False).agg(value=("train_loss", "mean"), time=("time", "max"))
    else:
        e = tables["evals"][tables["evals"]["cell"].isin(cells)]
        per = e[["cell", "round", "time"]].assign(value=e[y] * (100 if y == "test_acc" else 1))
    return per.replace([np.inf, -np.inf], np.nan).dropna(subset=["value"])


def interval_bars(values) -> tuple[pd.Series, dict, list | None]:
    """For ``values`` grouped by x (a pandas GroupBy of one column): ``(mean, got, yerr)``, the mean
    per x, the t-interval per x with ``compare.MIN_SEEDS`` values or more, and the ``errorbar`` yerr
    (NaN where an x has no interval; None where none has)."""
    got = {x: compare.interval(v) for x, v in values if v.notna().sum() >= compare.MIN_SEEDS}
    mean = values.mean()
    yerr = None if not got else [[mean[x] - got[x].low if x in got else np.nan for x in mean.index],
                                 [got[x].high - mean[x] if x in got else np.nan for x in mean.index]]
    return mean, got, yerr


def point_text(values, mean: pd.Series, got: dict, x) -> str:
    """One point of ``interval_bars`` for a log: its interval, or its mean and n and why no interval."""
    if x in got:
        return str(got[x])
    return f"{mean[x]:.4g} (n = {values.size()[x]}: no interval below {compare.MIN_SEEDS})"


def plain_log_axis(axis) -> None:
    """A log axis labelled in plain numbers (``:g``) at 1, 2 and 5 times the powers of ten, so that
    an axis within one decade is labelled too."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def legend(fig, labels: list[str], palette: dict, runs: pd.DataFrame, label_of: pd.Series, title: str,
           marker: str = "line") -> None:
    """One legend for the figure; a group whose every run diverged says so; X marks divergence (lines)."""
    handles = [Line2D([], [], color=palette[lab], lw=2) if marker == "line" else
               Line2D([], [], color=palette[lab], marker="s", ls="none", markersize=8) for lab in labels]
    finished = set(runs.loc[runs["status"] == "completed", "cell"].map(label_of))
    texts = [lab if lab in finished else f"{lab} (diverged)" for lab in labels]
    if marker == "line" and (runs["status"] != "completed").any():
        handles.append(Line2D([], [], color="0.3", marker="X", ls="none", markersize=8))
        texts.append("run diverged here")
    fig.legend(handles, texts, title=title, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


# ----------------------------------------------------------------------------- the second and third seeds
# Queueing kinds: the closed forms (afl.queueing) evaluated from each cell's own clients table
# (rate mu_i, routing p_i, predicted E[tau_i]) and run.json (the bound's constants of an optimized
# routing), beside what the cells measured. Standard errors of one long run: batch means
# (afl.queueing.measure); over seeds: Student-t intervals. Each kind's numbers come from a
# ``*_table`` function of its module (tests/test_queueing_figures.py checks them), its drawing from the kind.


def routing_name(value) -> str:
    """A readable name of an ``algorithm.routing`` grid value (JSON text in the tables)."""
    try:
        v = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        v = value
    if v is None or v == "uniform" or isinstance(v, dict) and v.get("power") == 0:
        return "uniform"
    if isinstance(v, dict) and v.get("power") is not None:
        return "p ~ mu (equal loads)" if v["power"] == 1 else f"p ~ mu^{v['power']:g}"
    if isinstance(v, dict):
        return f"bound-optimal per {'update' if v['optimize'] == 'update' else 'unit of time'}"
    return str(v)


def routings(names) -> list[str]:
    """Routing names in plotting order: uniform first."""
    return [n for n in ["uniform", *sorted(set(names) - {"uniform"})] if n in set(names)]


def cell_tables(tables: dict, cell: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One cell's updates, evals and clients (sorted by client)."""
    pick = {k: tables[k][tables[k]["cell"] == cell] for k in ("updates", "evals", "clients")}
    return pick["updates"], pick["evals"], pick["clients"].sort_values("client")


def network_of(clients: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, p)``: a cell's client rates and routing, from its clients table."""
    return clients["rate"].to_numpy(dtype=float, copy=True), clients["routing_p"].to_numpy(dtype=float, copy=True)


def at_budget(tables: dict, runs: pd.DataFrame, budget: float) -> pd.Series:
    """Per completed cell: the test accuracy (%) of the model the server holds at virtual time ``budget``."""
    cells = set(runs.loc[runs["status"] == "completed", "cell"])
    evals = tables["evals"][tables["evals"]["cell"].isin(cells)]
    return pd.Series({cell: 100 * float(measure.value_at(run, [budget])[0]) for cell, run in evals.groupby("cell")},
                     dtype=float)


def bound_constants(runs: pd.DataFrame) -> dict[str, BoundConstants]:
    """Per objective: the bound's constants that an optimized-routing cell recorded (run.json ``routing``)."""
    out = {}
    for text in runs["routing"].dropna() if "routing" in runs else []:
        info = json.loads(text)
        out.setdefault(info["objective"], BoundConstants(
            **{k: info[k] for k in ("A", "L", "sigma", "zeta", "eta", "T", "time_budget")}))
    return out
