"""Mutation check of the code that carries the seeds' formulas and the analysis (issue 25).

Each mutant below is one named wrong behaviour: a file, an exact source snippet, its replacement,
and the tests that should fail when it is in place. The script makes a temporary git worktree of
this repository (``git worktree add --detach``), copies the working tree's current files over it
(tracked and untracked, not ignored: uncommitted code and new tests count), then for each mutant
applies it there, runs ``python -m pytest -x -q -p no:cacheprovider <its tests>`` in the worktree
(``afl`` imported from the worktree, checked once), records

    KILLED    pytest exit code 1 (a test failed: the mutant is caught)
    SURVIVED  exit code 0 (every test passed with the wrong behaviour in place)
    ERROR     any other exit code, or the per-mutant timeout
    STALE     the snippet does not occur exactly once (the code moved: update the mutant)

and restores the file. Before the mutants, the union of their tests runs once unmutated (a
failing baseline would make every mutant look killed). The worktree is removed at the end, also
on Ctrl-C. Exit status 1 if any mutant survived, errored or is stale.

Run on demand, not in CI (the full set takes tens of minutes on two cores)::

    .venv/bin/python tools/mutation.py                 # every mutant
    .venv/bin/python tools/mutation.py --list          # names, files, tests; exit 1 if one is stale (CI)
    .venv/bin/python tools/mutation.py --only fedbuff --only "delay_adaptive"   # name substrings
    .venv/bin/python tools/mutation.py --timeout 300 --no-baseline
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str  # the wrong behaviour it introduces
    file: str  # relative to the repository root
    old: str  # exact snippet, must occur once in the file
    new: str
    tests: tuple[str, ...]  # test files or node ids that should kill it


M = Mutant
RULES, STALE, LR = "tests/test_rules.py", "tests/test_staleness.py", "tests/test_lr.py"
TIMING, RECORDER, QUEUEING = "tests/test_timing.py", "tests/test_recorder.py", "tests/test_queueing.py"
MEASURE, SAMPLING, SELECTION = "tests/test_queue_measure.py", "tests/test_sampling.py", "tests/test_selection.py"
SIM = "tests/test_queueing_simulation.py"
LOCAL_HELPERS = "tests/test_batched.py::test_local_helpers_equal_hand_computed_values"
DELAY_RUNS = "tests/test_delay_aware_runs.py"
FIG = "tests/test_figures.py"
QFIG = "tests/test_queueing_figures.py"
FIGURES = "afl/figures"  # a module per figure kind, common.py the shared helpers

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ staleness functions s(tau)
    M("polynomial s(tau): exponent sign flipped, (tau+1)^a grows with tau", "afl/rules/staleness.py",
      "(_staleness(tau) + 1.0) ** -a", "(_staleness(tau) + 1.0) ** a", (STALE,)),
    M("hinge s(tau): threshold b ignored, discount from tau = 0", "afl/rules/staleness.py",
      "np.maximum(_staleness(tau) - b, 0.0)", "np.maximum(_staleness(tau), 0.0)", (STALE,)),
    M("fedbuff s(tau): 1/(1+tau) instead of 1/sqrt(1+tau)", "afl/rules/staleness.py",
      "(1.0 + _staleness(tau)) ** -0.5", "(1.0 + _staleness(tau)) ** -1.0", (STALE,)),
    # ------------------------------------------------------------------ server rules
    M("afl: staleness factor s(tau) dropped from w_k", "afl/rules/fedavg.py",
      "w = data_weights(arrivals, self.weighting) * self.s(np.asarray(taus, dtype=float))",
      "w = data_weights(arrivals, self.weighting)", (RULES,)),
    M("sfl/afl: data sizes n_k ignored (uniform weights)", "afl/rules/fedavg.py",
      "return np.array([a.num_samples for a in arrivals], dtype=float)", "return np.ones(len(arrivals))", (RULES,)),
    M("fedasync: mixing a_t = a, s(tau) dropped", "afl/rules/fedasync.py",
      "a_t = self.mixing * float(self.s(tau))", "a_t = self.mixing", (RULES,)),
    M("fedbuff: 1/K factor dropped", "afl/rules/fedbuff.py",
      "self.s(np.asarray(taus, dtype=float)) / self.buffer_size", "self.s(np.asarray(taus, dtype=float))", (RULES,)),
    M("ringleader: phase 2 steps without the stale gradient in the table", "afl/rules/ringleader.py",
      "        table[i].add_(a.vector)\n        counts[i] += 1\n",
      "        if not started:\n            table[i].add_(a.vector)\n            counts[i] += 1\n",
      ("tests/test_ringleader.py::test_two_rounds_by_hand",)),
    M("mindflayer: normalised by the gradients that came back, not their expected number p sum B_i",
      "afl/rules/mindflayer.py", "w = self.server_lr / self.expected", "w = self.server_lr / len(arrivals)",
      ("tests/test_mindflayer.py::test_rounds_follow_the_draws",)),
    M("mindflayer: B_i = ceil(t(m*) / T_i), one attempt too many", "afl/rules/mindflayer.py",
      "np.ceil(t[m - 1] / t_sorted[:m] - 1)", "np.ceil(t[m - 1] / t_sorted[:m])",
      ("tests/test_mindflayer.py::test_attempts_by_hand",)),
    M("simulator: an attempt over the time limit takes its whole draw, not the limit", "afl/sim/simulator.py",
      "            service = self.time_limit\n", "            pass\n",
      ("tests/test_mindflayer.py::test_rounds_follow_the_draws",)),
    M("ringleader: an already stepped worker steps again (no second table)", "afl/rules/ringleader.py",
      "if s[\"stepped\"][i]:", "if False:",
      ("tests/test_ringleader.py",)),
    M("trainer: a short step computes the whole padded batch", "afl/learning/trainer.py",
      "b = int(count.max())", "b = rows.samples.shape[2]",
      ("tests/test_batched.py::test_a_step_computes_only_the_columns_some_task_uses",)),
    M("trainer: SGD's per-task rates not broadcast (the first task's rate for all)", "afl/learning/tables.py",
      "p.addcmul_(g, rates.view(-1, *[1] * (p.dim() - 1)), value=-1)", "p.add_(g, alpha=-float(rates[0]))",
      ("tests/test_batched.py::test_batched_training_equals_the_sequential_reference",)),
    M("trainer: a CPU pass of the conv target for dense models too", "afl/learning/trainer.py",
      'CPU_SAMPLES_PER_PASS["conv" if self.grouped.images else "dense"]', 'CPU_SAMPLES_PER_PASS["conv"]',
      ("tests/test_batched.py::test_tasks_per_pass_on_a_cpu",)),
    M("fedbuff: delta against the current model x, not the task's base x_v", "afl/rules/fedbuff.py",
      "out.add_(a.vector - a.base,", "out.add_(a.vector - x,", (RULES,)),
    M("asyncsgd: 1/(n p_i) factor dropped", "afl/rules/asyncsgd.py",
      " / (len(self.routing) * self.routing[arrival.client])", "", (RULES,)),
    # ------------------------------------------------------------------ learning-rate rules
    M("delay_adaptive: threshold tau_c ignored (eta tau_c/tau for every tau)", "afl/rules/lr.py",
      "stale = t > c", "stale = t > 0", (LR, RULES)),
    M("delay_adaptive: drop_stale ignored (a stale step is scaled, not dropped)", "afl/rules/lr.py",
      "    if drop:\n", "    if False:\n", (LR, RULES)),
    M("delay_aware: sqrt(e+1) dropped (no decay over local epochs)", "afl/rules/lr.py",
      "np.sqrt(e + 1.0) * (1.0 + a * d)", "(1.0 + a * d)", (LR, LOCAL_HELPERS)),
    M("delay_aware: delay factor (1 + alpha d) dropped", "afl/rules/lr.py",
      "np.sqrt(e + 1.0) * (1.0 + a * d)", "np.sqrt(e + 1.0)", (LR, LOCAL_HELPERS)),
    # ------------------------------------------------------------------ local work
    M("workloads: delay-aware rate given delay 0, not the task's duration", "afl/learning/workloads.py",
      "delay=task.duration", "delay=0.0", (DELAY_RUNS,)),
    M("workloads: schedule factor not applied to the client's lr", "afl/learning/workloads.py",
      "lr=c.lr * factor", "lr=c.lr", (DELAY_RUNS,)),
    M("local: epoch_lr ignores the delay_aware rule", "afl/learning/local.py",
      'if plan.lr_rule == "delay_aware":', "if False:", (LOCAL_HELPERS, DELAY_RUNS)),
    M("local: num_steps drops the last partial batch of an epoch", "afl/learning/local.py",
      "return epochs * math.ceil(shard_size / batch_size)", "return epochs * (shard_size // batch_size)",
      (LOCAL_HELPERS,)),
    # ------------------------------------------------------------------ selection and timing
    M("selection: without replacement always picks the first idle client", "afl/sim/selection.py",
      "j = int(u * len(self.pool))", "j = 0", (SELECTION,)),
    M("selection: with replacement never picks the last client", "afl/sim/selection.py",
      "return self.pool[j]", "return self.pool[int(u * (len(self.pool) - 1))]",
      (f"{SIM}::test_per_step_timing_and_with_replacement_selection",)),
    M("selection: routing p ignored (uniform among all clients)", "afl/sim/selection.py",
      "return min(bisect.bisect_right(self.cdf, u * self.cdf[-1]), self.n - 1)", "return int(u * self.n)",
      (f"{SIM}::test_two_groups_non_uniform_routing",)),
    M("sampling variance: finite-population factor (n-m)/(n-1) dropped", "afl/sim/selection.py",
      "return sigma2 / m * (n - m) / (n - 1)", "return sigma2 / m", (SAMPLING,)),
    M("timing: upload time not added", "afl/sim/timing.py",
      "work * service / rate + cfg.upload", "work * service / rate", (TIMING,)),
    M("timing: per-step scaling ignored (one step charged)", "afl/sim/timing.py",
      'work = steps if cfg.per == "step" else 1\n    return cfg.download + work * service / rate',
      "work = 1\n    return cfg.download + work * service / rate", (TIMING,)),
    M("timing: lognormal draw without the -sigma^2/2 (mean exp(sigma^2/2), not 1)", "afl/sim/timing.py",
      "_NORMAL.inv_cdf(u) - cfg.sigma**2 / 2", "_NORMAL.inv_cdf(u)", (TIMING,)),
    M("timing: varying speeds start computing at dispatch, not after the download", "afl/sim/timing.py",
      "speeds.compute_time(client, start + cfg.download,", "speeds.compute_time(client, start,",
      ("tests/test_speeds.py",)),
    # ------------------------------------------------------------------ what a run records
    M("recorder: staleness column holds the base version", "afl/run/recorder.py",
      'u["staleness"].append(tau)', 'u["staleness"].append(t.base_version)', (RECORDER,)),
    M("recorder: weight column always 1", "afl/run/recorder.py",
      'u["weight"].append(float(w))', 'u["weight"].append(1.0)', (RECORDER,)),
    M("recorder: server loss over every result, not the last m", "afl/run/recorder.py",
      'self.updates["train_loss"][-m:]', 'self.updates["train_loss"]', (RECORDER,)),
    # ------------------------------------------------------------------ queueing: closed forms
    M("Buzen: load scale max(rho) dropped from log G", "afl/queueing/network.py",
      "torch.log(torch.stack(lasts)) + log_scale", "torch.log(torch.stack(lasts))", (QUEUEING,)),
    M("relative delay: Little's law without 1/p_i", "afl/queueing/network.py",
      "return q_m1 / p\n", "return q_m1\n", (QUEUEING,)),
    M("predict: relative delay from E_m[X], not E_{m-1}[X] (arrival theorem dropped)", "afl/queueing/network.py",
      "delay = _relative_delay(p, q_m1)", "delay = _relative_delay(p, q_m)", (QUEUEING,)),
    M("bound: staleness term sum E_{m-1}[X_i]/p_i (one 1/p_i lost)", "afl/queueing/routing.py",
      "(q_m1 / p**2).sum()", "(q_m1 / p).sum()", (QUEUEING,)),
    M("bound: time objective ignores the throughput (T fixed)", "afl/queueing/routing.py",
      'updates = c.T if objective == "update" else lam * c.time_budget', "updates = c.T", (QUEUEING,)),
    M("optimize_routing: keeps the worst routing evaluated, not the best", "afl/queueing/routing.py",
      'v < best["value"]', 'v > best["value"]', (QUEUEING,)),
    M("optimize_concurrency: ties go to the larger m", "afl/queueing/routing.py",
      "key=lambda v: (results[v].bound, v)", "key=lambda v: (results[v].bound, -v)", (QUEUEING,)),
    M("E[max duration]: distinct clients drawn as if with replacement", "afl/queueing/rounds.py",
      "    if replace:\n        cdf", "    if True:\n        cdf", (QUEUEING,)),
    M("batch means: SE without the 1/sqrt(B)", "afl/queueing/measure.py",
      "means.std(ddof=1) / np.sqrt(batches)", "means.std(ddof=1)", (MEASURE,)),
    # ------------------------------------------------------------------ figures
    M("figure curves: server loss of a round is its max, not its mean", f"{FIGURES}/common.py",
      'agg(value=("train_loss", "mean")', 'agg(value=("train_loss", "max")',
      (f"{FIG}::test_first_seed_kinds_draw_the_tables_numbers",)),
    M("figure ablation: mean of every evaluation, not the last quarter", f"{FIGURES}/ablation.py",
      'evals["round"] >= 0.75 *', 'evals["round"] >= 0.0 *',
      (f"{FIG}::test_first_seed_kinds_draw_the_tables_numbers",)),
    M("figure target: tune keeps the value with the most updates (idxmax)", f"{FIGURES}/target.py",
      '["cost"].idxmin()', '["cost"].idxmax()', (f"{FIG}::test_target_tunes_the_step_per_method_and_m",)),
    M("figure target: a run that never reaches the target counts 0, not its budget", f"{FIGURES}/target.py",
      'per["to_target"].fillna(per["budget"])', 'per["to_target"].fillna(0)',
      (f"{FIG}::test_target_tunes_the_step_per_method_and_m",)),
    M("compare.tune: best value by the best single seed, not the mean over the tuning seeds", "afl/compare.py",
      "rows.groupby(tuned, sort=True, dropna=False)[cost].mean()",
      "rows.groupby(tuned, sort=True, dropna=False)[cost].max()",
      ("tests/test_compare.py::test_each_method_keeps_its_best_value_on_the_tuning_seeds_only",
       f"{FIG}::test_minibatch_picks_each_methods_best_step")),
    M("figure minibatch: E[max] theory with replacement, not distinct clients", f"{FIGURES}/minibatch.py",
      "expected_max_duration(durations, c)}", "expected_max_duration(durations, c, replace=True)}",
      (f"{QFIG}::test_async_vs_minibatch_timing_matches_koloskova",)),
    M("figure concurrency: uniform routing's best m is the largest bound", f"{FIGURES}/concurrency_budget.py",
      '"uniform": min(bounds, key=bounds.get)', '"uniform": max(bounds, key=bounds.get)',
      (f"{FIG}::test_concurrency_marks_optimize_concurrency",)),
    M("figure throughput: a rate group's predicted staleness not weighted by p_i", f"{FIGURES}/throughput.py",
      'float((p[members] * theory.relative_delay[members]).sum()\n'
      '                                                      / p[members].sum())',
      "float(theory.relative_delay[members].mean())",
      (f"{QFIG}::test_throughput_and_staleness_against_m_match_the_closed_forms",)),
    # ------------------------------------------------------------------ issue 20's measurements
    M("sampling probe afl_rule: a client applied twice keeps one weight, not their sum", "afl/run/probes.py",
      "np.add.at(out, (update, np.asarray(clients, dtype=np.int64)), np.asarray(weights, dtype=float))",
      "out[update, np.asarray(clients, dtype=np.int64)] = np.asarray(weights, dtype=float)",
      ("tests/test_sampling_rule.py::test_round_weights_are_the_rows_of_each_update",)),
    M("sampling probe afl_rule: centred on the plain mean, not the data-weighted mean", "afl/run/probes.py",
      "b = np.asarray(sizes, dtype=float) / np.sum(sizes)", "b = np.ones(len(sizes)) / len(sizes)",
      ("tests/test_sampling_rule.py::test_weighted_aggregates_of_three_scalars_by_hand",)),
    M("figure heterogeneity: effect as control minus heterogeneous floor", f"{FIGURES}/heterogeneity.py",
      'pairs["effect"] = pairs["floor_het"] - pairs["floor_control"]',
      'pairs["effect"] = pairs["floor_control"] - pairs["floor_het"]',
      ("tests/test_heterogeneity_figure.py",)),
    # ------------------------------------------------------------------ issue 22: clients that come and go
    M("availability: a paused task starts its whole service again when its client is back", "afl/sim/simulator.py",
      "self.paused[client] = head.start_time + head.duration - self.loop.time()", "self.paused[client] = head.duration",
      ("tests/test_availability.py::test_a_paused_task_takes_its_service_plus_the_time_its_client_was_offline",)),
    M("availability: routing not renormalised, offline clients picked", "afl/sim/selection.py",
      "self.cdf = np.cumsum(self.weights * np.asarray(self.online)).tolist()", "self.cdf = np.cumsum(self.weights).tolist()",
      ("tests/test_availability.py::test_routing_is_renormalised_over_the_online_clients",)),
    M("availability: a lost task's replacement sent at once despite the timeout", "afl/sim/simulator.py",
      "        if self.task_timeout > 0:\n", "        if False:\n",
      ("tests/test_availability.py::test_a_lost_task_is_replaced_only_after_the_timeout",)),
    M("availability: a round's stragglers keep running after its close", "afl/sim/simulator.py",
      "            if queue and queue[0] is task:\n                self._stop(task)",
      "            if False:\n                self._stop(task)",
      ("tests/test_availability.py::test_over_selection_closes_a_round_at_the_target_count_or_the_deadline",)),
    M("availability: a Markov client's online periods drawn with the offline mean", "afl/sim/availability.py",
      "* (on if online[-1] else off))", "* (off if online[-1] else on))",
      ("tests/test_availability.py::test_markov_availability_has_the_model_s_online_share_and_switching_frequency",)),
]

# ---------------------------------------------------------------------------------------- running


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def count(mutant: Mutant, root: Path) -> int:
    path = root / mutant.file
    return path.read_text().count(mutant.old) if path.is_file() else 0


def missing_tests(mutant: Mutant, root: Path) -> list[str]:
    return [t for t in mutant.tests if not (root / t.split("::")[0]).is_file()]


def make_worktree(tmp: Path) -> Path:
    """A detached worktree of HEAD at ``tmp/tree`` with the working tree's current files copied in."""
    tree = tmp / "tree"
    git("worktree", "add", "--detach", str(tree), "HEAD")
    files = git("ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for rel in filter(None, files):
        src, dst = REPO / rel, tree / rel
        if src.is_file() and not src.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif not src.exists() and dst.is_file():  # deleted in the working tree, not yet committed
            dst.unlink()
    return tree


def remove_worktree(tmp: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "tree")], cwd=REPO, capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True)


def environment(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    # tests/conftest.py finds the data next to the repository: point it at this checkout's
    env.setdefault("AFL_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    return env


def pytest_run(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """(exit code or None on timeout, output) of pytest on ``tests`` in the worktree."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    proc = subprocess.Popen(cmd, cwd=tree, env=environment(tree), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return None, proc.communicate()[0]
    finally:
        if proc.poll() is None:  # Ctrl-C: stop the test run with us
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def first_failure(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return lines[0][:160] if lines else ""


def check_import(tree: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import afl; print(afl.__file__)"], cwd=tree,
                         env=environment(tree), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"afl is imported from {out}, not from the worktree {tree}")
    print(f"afl imported from {out}")


def run_mutant(mutant: Mutant, tree: Path, timeout: float) -> tuple[str, float, str]:
    path = tree / mutant.file
    original = path.read_text()
    found = original.count(mutant.old)
    absent = missing_tests(mutant, tree)
    if found != 1 or absent:
        why = f"snippet found {found} times" if found != 1 else f"no test file {', '.join(absent)}"
        return "STALE", 0.0, why
    path.write_text(original.replace(mutant.old, mutant.new))
    start = time.monotonic()
    try:
        code, out = pytest_run(tree, mutant.tests, timeout)
    finally:
        path.write_text(original)
    seconds = time.monotonic() - start
    if code == 1:
        return "KILLED", seconds, first_failure(out)
    if code == 0:
        return "SURVIVED", seconds, ""
    tail = " | ".join(out.strip().splitlines()[-3:])[-300:]
    return "ERROR", seconds, "timeout" if code is None else f"pytest exit {code}: {tail}"


def table(rows: list[tuple]) -> str:
    head = ("mutant", "file", "tests", "outcome", "s")
    cells = [head] + [(m.name, m.file, ", ".join(t.replace("tests/", "") for t in m.tests), o, f"{s:.0f}")
                      for m, o, s, _ in rows]
    widths = [min(max(len(r[i]) for r in cells), cap) for i, cap in enumerate((80, 28, 70, 8, 5))]
    return "\n".join("  ".join(c[:w].ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME_SUBSTRING",
                        help="run the mutants whose name contains this (repeatable; case-insensitive)")
    parser.add_argument("--list", action="store_true", help="list the mutants (flagging stale ones) and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant (default 600)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(s.lower() in m.name.lower() for s in args.only)]
    if args.list:
        stale = 0
        for m in chosen:
            n, absent = count(m, REPO), missing_tests(m, REPO)
            flag = "" if n == 1 and not absent else f"   STALE: snippet x{n}, missing tests {absent}"
            stale += bool(flag)
            print(f"{m.name}\n    {m.file} -> {', '.join(m.tests)}{flag}")
        print(f"{len(chosen)} mutants, {stale} stale")
        return 1 if stale else 0
    if not chosen:
        raise SystemExit(f"no mutant name contains any of {args.only}")

    tmp = Path(tempfile.mkdtemp(prefix="afl-mutation-"))
    rows = []
    try:
        tree = make_worktree(tmp)
        check_import(tree)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests if not missing_tests(m, tree)))
            start = time.monotonic()
            code, out = pytest_run(tree, tests, args.timeout * 2)
            print(f"baseline (unmutated, {len(tests)} test targets): exit {code}, {time.monotonic() - start:.0f} s")
            if code != 0:
                print(out[-3000:])
                print("the tests fail without any mutant: fix them first (or pass --no-baseline)")
                return 1
        for i, m in enumerate(chosen, 1):
            outcome, seconds, note = run_mutant(m, tree, args.timeout)
            rows.append((m, outcome, seconds, note))
            print(f"[{i}/{len(chosen)}] {outcome:8s} {seconds:5.0f} s  {m.name}" + (f"  ({note})" if note else ""),
                  flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: removing the worktree")
        return 130
    finally:
        remove_worktree(tmp)

    print("\n" + table(rows))
    tally = {k: sum(o == k for _, o, _, _ in rows) for k in ("KILLED", "SURVIVED", "ERROR", "STALE")}
    print(f"\ntried {len(rows)}, killed {tally['KILLED']}, survived {tally['SURVIVED']}, error {tally['ERROR']}"
          f", stale {tally['STALE']}")
    return 0 if tally["KILLED"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
