"""Static checks of the code that reads user input: no eval, no shell, safe YAML, safe loading.

Every Python file of the package, the workflow and the cluster scripts is parsed; a call
that could run code taken from a config, a dataset or a checkpoint fails the test with its
file and line.
"""

import ast
from pathlib import Path

import pytest
from helpers import REPO

SOURCES = sorted(p for folder in ("afl", "workflow", "cluster", "bench") for p in (REPO / folder).rglob("*.py"))
# The one place that unpickles: CIFAR-10's restricted unpickler (afl/data/cifar10.py).
UNPICKLER = REPO / "afl" / "data" / "cifar10.py"


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def violations(path: Path, root: Path = REPO) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name, where = _name(node.func), f"{path.relative_to(root)}:{node.lineno}"
        if name in ("eval", "exec", "os.system", "os.popen"):
            found.append(f"{where}: {name}()")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where}: {name}() (use yaml.safe_load)")
        if name in ("pickle.load", "pickle.loads") and path != UNPICKLER:
            found.append(f"{where}: {name}() outside the restricted unpickler")
        shell = _keyword(node, "shell")
        if name.startswith("subprocess.") and not (shell is None or isinstance(shell, ast.Constant)
                                                   and shell.value is False):
            found.append(f"{where}: {name}(shell=...)")
        if name == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
    return found


def test_the_scan_sees_the_sources_and_catches_what_it_forbids(tmp_path):
    assert REPO / "afl" / "run" / "checkpoint.py" in SOURCES and UNPICKLER in SOURCES
    bad = tmp_path / "bad.py"
    bad.write_text("import subprocess, yaml, torch\neval(x)\nyaml.load(s)\nsubprocess.run(c, shell=True)\n"
                   "torch.load(p)\ntorch.load(p, weights_only=False)\n")
    assert [v.split(": ", 1)[1] for v in violations(bad, tmp_path)] == [
        "eval()", "yaml.load() (use yaml.safe_load)", "subprocess.run(shell=...)",
        "torch.load without weights_only=True", "torch.load without weights_only=True"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_code_execution_from_inputs(path):
    assert not violations(path)
