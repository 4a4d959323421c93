"""One figure from one experiment's aggregated tables: the figure job's ``main`` (``draw`` in memory).

workflow/scripts/figure.py runs it (``snakemake.params.spec``, the experiment's grid columns, its
tables, the PNG path): the house style, the tables, the selected cells, their groups and colours
(``common.group_palette``), the kind's draw function (``afl.figures.KINDS``), the title with the
number of seeds, the diverged cells' note, and ``afl.figures.save`` (looked up when called, so a
test can replace it).
"""

import re
import sys

import pandas as pd

from afl import figures
from afl.figures.common import diverged_note, group_palette, groups, select


NAMES_SEEDS = re.compile(r"\bseeds?\s+\d|\d\s+(?:evaluation\s+|tuning\s+)?seeds?\b", re.IGNORECASE)


def with_seeds(title: str, runs: pd.DataFrame, tuning_seeds=()) -> str:
    """``title`` followed by `` (N seeds)``, N the distinct seeds of the drawn cells, or, with
    ``tuning_seeds``, `` (N evaluation seeds, K tuning)``; unchanged if it names its seeds ("seeds
    0, 1", "5 seeds"; "the first seed's" names a paper, not runs)."""
    if NAMES_SEEDS.search(title):
        return title
    seeds = set(runs["seed"])
    tuning = seeds & set(tuning_seeds or ())
    n = len(seeds - tuning)
    if tuning:
        return f"{title} ({n} evaluation seed{'s' * (n != 1)}, {len(tuning)} tuning)"
    return f"{title} ({n} seed{'s' * (n != 1)})"


def main(name: str, spec: dict, keys: list[str], inputs: dict, png: str) -> None:
    """The figure ``name`` of ``spec`` from the tables at ``inputs`` (Parquet paths by kind), saved as ``png``."""
    figures.save(draw(name, spec, keys, {kind: pd.read_parquet(path) for kind, path in inputs.items()}), png)


def draw(name: str, spec: dict, keys: list[str], tables: dict):
    """The figure ``name`` of ``spec`` from ``tables`` (by kind, in memory), its log on stderr."""
    figures.style()
    runs = select(tables["runs"], spec)
    label_of, order, legend_title = groups(runs, keys)
    palette = group_palette(runs, keys, label_of, order)
    spec = {**spec, "legend_title": legend_title}
    fig = figures.KINDS[spec["kind"]](spec, tables, runs, label_of, order, palette)
    fig.suptitle(with_seeds(spec.get("title") or name, runs, spec.get("tuning_seeds")), y=1.02)
    notes = diverged_note(runs, label_of)
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), ha="left", va="top", fontsize=8)
        print(f"figure {name}: marked {len(notes)} diverged cell(s): " + "; ".join(notes), file=sys.stderr)
    return fig
