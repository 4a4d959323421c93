"""Figure output shared by every plotting script: one style, PNG and PDF written atomically.

``save(fig, path)`` writes ``path`` (a ``.png``) and the same figure as ``.pdf`` beside it, each
to a temporary name first and renamed into place, so Snakemake never sees a partial figure.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from afl.atomic import replace_atomically, tmp_name  # noqa: E402

DPI = 150


def style() -> None:
    """The house style: seaborn's whitegrid, colour-blind palette, paper-sized fonts."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)


def save(fig: plt.Figure, path: Path) -> list[Path]:
    """Write ``fig`` to ``path`` (PNG) and its PDF twin, atomically; close it; return both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    written = []
    for target in (path.with_suffix(".png"), path.with_suffix(".pdf")):
        tmp = tmp_name(target)
        fig.savefig(tmp, dpi=DPI, format=target.suffix[1:], bbox_inches="tight")
        replace_atomically(tmp, target)
        written.append(target)
    plt.close(fig)
    return written
