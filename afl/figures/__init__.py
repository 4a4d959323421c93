"""The workflow's figures: one figure from one experiment's aggregated tables, a module per kind.

``KINDS`` maps each kind (``figures.<name>.kind`` in the workflow config) to its draw function
``(spec, tables, runs, label_of, order, palette) -> Figure``: the function of the same name in the
module ``afl/figures/<kind>.py``, beside the helpers only that kind uses. ``common.py`` holds the
helpers and constants shared by the kinds, ``draw.py`` the figure job's ``main`` (run by
workflow/scripts/figure.py). A new kind is a new module here, its name in
workflow/rules/figures.smk's kind list and in the config schema's kind enum, and a report caption
workflow/report/<kind>.rst (tests/test_figures.py checks that they agree).

Cells that differ only in their seed form a group: one line, bar colour or panel, named by the
algorithm, m and every other grid key that varies among the selected cells. Lines are the mean
over seeds; an interval (a 95% bootstrap band on curves, a 95% t-interval stating n on the
comparison kinds, ``afl.compare``) is drawn only from ``afl.compare.MIN_SEEDS`` seeds on, and the
legend or note says which. Kinds that compare methods tune each on its own tuning seeds and
evaluate on the others (``tuning_seeds``), and say when a chosen value sits at its grid's edge.
A diverged cell is not drawn
(its last values are meaningless); an X at the top of a panel marks where it diverged and a note
under the figure names it.

Figure output, shared by every plotting script: one style, PNG and PDF written atomically.
``save(fig, path)`` writes ``path`` (a ``.png``) and the same figure as ``.pdf`` beside it, each
to a temporary name first and renamed into place, so Snakemake never sees a partial figure.
"""

import importlib
import io
import pkgutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from afl.atomic import write_bytes  # noqa: E402

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
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=DPI, format=target.suffix[1:], bbox_inches="tight")
        write_bytes(buffer.getvalue(), target)
        written.append(target)
    plt.close(fig)
    return written


# Every module of this package but these is a kind, its draw function named as the module.
NOT_KINDS = ("common", "draw")
MODULES = {module.name: importlib.import_module(f"{__name__}.{module.name}")
           for module in pkgutil.iter_modules(__path__) if module.name not in NOT_KINDS}
KINDS = {name: getattr(module, name) for name, module in MODULES.items()}
# The kinds that can name their evaluation cells from the tuning seeds' runs alone (the workflow's two
# stages, ``afl.cluster.pipeline.staged``): ``choose(spec, tables, runs) -> [tuning cells at the chosen values]``.
CHOOSE = {name: module.choose for name, module in MODULES.items() if hasattr(module, "choose")}
