"""The docs stay true (issue 24): the configuration reference is the one generated from the configs'
own definitions, every command the docs mark as runnable runs, every link resolves, and the site
builds with ``mkdocs build --strict``.

A command block is runnable when the line before its fence is ``<!-- runnable -->``. The blocks of
one page run in order, in one scratch folder that mirrors the repository (its top-level entries
linked, so ``config/...`` and ``.venv`` resolve and ``runs/`` lands in the scratch folder), under
``bash -euo pipefail``, with MNIST at the shared data root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"<!-- runnable -->\n```(?:bash|sh)\n(.*?)\n```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def runnable_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def test_configuration_reference_is_generated_and_current():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "config_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_configuration_reference_names_every_key():
    """Independent of the generator: every key the run config accepts and every key the workflow
    schema and cluster/slurm.yaml define appears in the page."""
    import yaml

    from afl.config import reference

    page = (REPO / "docs" / "configuration.md").read_text()
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = [key for key, _, _ in reference()]
    keys += [key for key in schema["properties"]]
    keys += [f"slurm.{key}" for key in yaml.safe_load((REPO / "cluster" / "slurm.yaml").read_text())]
    keys += [f"experiments.<name>.{key}" for key in schema["$defs"]["experiment"]["properties"]]
    keys += [f"figures.<name>.{key}" for key in schema["$defs"]["figure"]["properties"]]
    missing = [key for key in keys if f"| `{key}` |" not in page]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_runnable_blocks_are_found():
    """The marker is in use where the docs promise a first run (so the test below cannot pass empty)."""
    counts = {page.name: len(runnable_blocks(page)) for page in PAGES}
    assert counts["README.md"] >= 2 and counts["getting-started.md"] >= 2 and counts["extending.md"] >= 1, counts


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_runnable_commands_of_the_docs_run(page, tmp_path, shared_data_root):
    for entry in REPO.iterdir():
        if entry.name not in {"runs", "results", ".snakemake", ".git", "site"}:
            (tmp_path / entry.name).symlink_to(entry)
    env = {**os.environ, "AFL_DATA_ROOT": str(shared_data_root), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    for i, block in enumerate(runnable_blocks(page)):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{page.name}, runnable block {i + 1}:\n{block}\n{result.stderr[-3000:]}"


def test_docs_figures_are_the_docs_configs():
    """docs/figures holds exactly the figures config/docs.yaml draws (``make docs-figures``), and
    every figure a page shows (``docs/figures/X.png``, or ``figures/X.png`` from a docs page) is one
    of them."""
    drawn = set(yaml.safe_load((REPO / "config" / "docs.yaml").read_text())["figures"])
    shipped = {p.stem for p in (REPO / "docs" / "figures").glob("*.png")}
    assert shipped == drawn, f"only in docs/figures: {sorted(shipped - drawn)}; only in config/docs.yaml: {sorted(drawn - shipped)}"
    shown = {Path(m).stem for page in PAGES for m in re.findall(r"(?:^|[(\s`])(?:docs/)?figures/([\w.-]+\.png)", page.read_text(), re.M)}
    assert shown <= drawn, sorted(shown - drawn)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target, _ in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing {broken}"


def test_readme_is_a_front_door():
    """About 200 lines at most; the rest lives in docs/, every page linked from it."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    unlinked = [p.name for p in (REPO / "docs").glob("*.md") if p.name != "index.md" and f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README does not link {unlinked}"


def test_mkdocs_site_builds_strict(tmp_path):
    """Every page in the nav, every link and anchor resolving (mkdocs.yml's validation settings)."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    nav = (REPO / "mkdocs.yml").read_text()
    missing = [p.name for p in (REPO / "docs").glob("*.md") if f": {p.name}" not in nav]
    assert not missing, f"mkdocs.yml's nav lacks {missing}"
