"""One figure from one experiment's aggregated tables: the figure job's ``main``.

workflow/scripts/figure.py runs it (``snakemake.params.spec``, the experiment's grid columns, its
tables, the PNG path): the house style, the tables, the selected cells and their groups, the kind's
draw function (``afl.figures.KINDS``), the title, the diverged cells' note, and ``afl.figures.save``
(looked up when called, so a test can replace it).
"""

import sys

import pandas as pd
import seaborn as sns

from afl import figures
from afl.figures.common import diverged_note, groups, select


def main(name: str, spec: dict, keys: list[str], inputs: dict, png: str) -> None:
    figures.style()
    tables = {kind: pd.read_parquet(path) for kind, path in inputs.items()}
    runs = select(tables["runs"], spec)
    label_of, order, legend_title = groups(runs, keys)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    spec = {**spec, "legend_title": legend_title}
    fig = figures.KINDS[spec["kind"]](spec, tables, runs, label_of, order, palette)
    fig.suptitle(spec.get("title") or name, y=1.02)
    notes = diverged_note(runs, label_of)
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), ha="left", va="top", fontsize=8)
        print(f"figure {name}: marked {len(notes)} diverged cell(s): " + "; ".join(notes), file=sys.stderr)
    figures.save(fig, png)
