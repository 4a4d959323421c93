"""What the workflow's two stages save on a finished run of a config, and that no figure changes.

For each experiment that ``--config`` runs in two stages (``afl.cluster.pipeline.staged``;
docs/comparing.md), from the tables of a finished run of its whole grid (the config's results
folder, run whole: with ``two_stage: false``, or before two stages existed): its cells, the cells
two stages run (every cell of the tuning seeds, and the evaluation cells that its figures' kinds
choose from those), the summed run time of each set (``wall_time`` of the runs table: each cell's
training on one worker), and, per figure drawn from it, whether the figure drawn from the cells
two stages run prints the log of the figure drawn from every cell, line for line (the kind's
lines; draw.main's note of diverged cells aside: an unchosen evaluation cell that diverged is not
run). Run it alone: the figures of a large experiment take a minute each.

    python bench/two_stage.py --config config/docs.yaml
    python bench/two_stage.py --config config/docs.yaml --experiments rate heterogeneity
"""

import argparse
import contextlib
import io
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def figure_log(name: str, spec: dict, keys: list[str], tables: dict) -> list[str]:
    """The log lines of the kind's drawing of ``spec`` from ``tables`` (``afl.figures.draw.draw``, not saved)."""
    from afl import figures
    from afl.figures.draw import draw

    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        figures.plt.close(draw(name, dict(spec), keys, tables))
    return [line for line in log.getvalue().splitlines() if not line.startswith(f"figure {name}:")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/docs.yaml", help="the workflow config (default: %(default)s)")
    p.add_argument("--experiments", nargs="*", help="only these of its staged experiments")
    args = p.parse_args()
    from afl.cluster import pipeline
    from afl.cluster.tables import TABLES
    from afl.figures import CHOOSE
    from afl.figures.common import select

    config = yaml.safe_load((REPO / args.config).read_text())
    cells = pipeline.expand(config["experiments"], REPO)
    staged = pipeline.staged(config, cells)
    results = REPO / config.get("results", "results")
    rows = []
    for experiment, tuning in staged.items():
        if args.experiments and experiment not in args.experiments:
            continue
        tables = {k: pd.read_parquet(results / experiment / "tables" / f"{k}.parquet") for k in TABLES}
        runs = tables["runs"]
        if set(runs["cell"]) != {c.name for c in cells[experiment]}:
            print(f"{experiment}: its tables are not the config's grid (not run whole, or another config); skipped",
                  file=sys.stderr)
            continue
        first = set(runs.loc[runs["seed"].isin(tuning), "cell"])
        only = {k: v[v["cell"].isin(first)] for k, v in tables.items()}
        specs = {n: s for n, s in config["figures"].items() if s["experiment"] == experiment}
        chosen = sorted({c for s in specs.values() for c in CHOOSE[s["kind"]](dict(s), only, select(only["runs"], s))})
        second = set(pipeline.evaluation_names({c.name: c.columns for c in cells[experiment]}, tuning, chosen))
        kept = first | second
        staged_tables = {k: v[v["cell"].isin(kept)] for k, v in tables.items()}
        keys = list(dict.fromkeys(k for c in cells[experiment] for k in c.columns))
        same = []
        for name, spec in specs.items():
            whole = figure_log(name, spec, keys, tables)
            two = figure_log(name, spec, keys, staged_tables)
            same.append(f"{name}: {'same' if whole == two else 'DIFFERS'} ({len(whole)} lines)")
            if whole != two:
                print("\n".join(f"  whole: {a}\n  two:   {b}" for a, b in zip(whole, two) if a != b), file=sys.stderr)
        wall = runs.set_index("cell")["wall_time"]
        rows.append({"experiment": experiment, "cells": len(runs), "two stages": len(kept),
                     "wall, whole (min)": wall.sum() / 60, "wall, two stages (min)": wall[list(kept)].sum() / 60,
                     "figure logs": "; ".join(same)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    total = frame[["cells", "two stages", "wall, whole (min)", "wall, two stages (min)"]].sum()
    print(f"\n{args.config}: the experiments run in two stages (summed run times of their cells, one worker)\n")
    print(frame.to_markdown(index=False, floatfmt=".1f"))
    print(f"\nall: {int(total['cells'])} -> {int(total['two stages'])} cells, "
          f"{total['wall, whole (min)']:.0f} -> {total['wall, two stages (min)']:.0f} CPU-minutes "
          f"({total['wall, whole (min)'] / total['wall, two stages (min)']:.2f}x fewer)")


if __name__ == "__main__":
    main()
