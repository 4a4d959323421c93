"""The comparison protocol (afl.compare) on hand-made tables, every expected number by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from afl.compare import Interval, TooFewSeeds, choice_lines, edge_lines, evaluate, interval, paired, tune


def table() -> pd.DataFrame:
    """Two methods, three step sizes each, seeds 0-1 for tuning and 2-6 for evaluation.
    cost = base + seed offset; constant is best at 0.1 on the tuning seeds, adaptive at 0.4 (its
    grid's largest), though on the evaluation seeds constant would prefer 0.05 (so a protocol
    that tuned on the evaluation seeds would pick another value)."""
    base = {("constant", 0.05): 30.0, ("constant", 0.1): 20.0, ("constant", 0.2): 25.0,
            ("adaptive", 0.1): 40.0, ("adaptive", 0.2): 35.0, ("adaptive", 0.4): 22.0}
    rows = []
    for (rule, lr), cost in base.items():
        for seed in range(7):
            bonus = -15.0 if (rule, lr) == ("constant", 0.05) and seed >= 2 else 0.0
            rows.append({"rule": rule, "lr": lr, "seed": seed, "cost": cost + seed + bonus})
    return pd.DataFrame(rows)


def test_each_method_keeps_its_best_value_on_the_tuning_seeds_only():
    choices = {c.method["rule"]: c for c in tune(table(), ["rule"], ["lr"], "cost", seeds=[0, 1])}
    assert choices["constant"].values == {"lr": 0.1} and choices["constant"].cost == pytest.approx(20.5)
    assert choices["adaptive"].values == {"lr": 0.4} and choices["adaptive"].cost == pytest.approx(22.5)
    assert choices["constant"].seeds == 2 and choices["constant"].edges == ()
    assert choices["adaptive"].edges == ("lr",)
    # Higher is better (an accuracy): the worst values above.
    worst = {c.method["rule"]: c.values["lr"] for c in tune(table(), ["rule"], ["lr"], "cost", [0, 1], lower=False)}
    assert worst == {"constant": 0.05, "adaptive": 0.1}


def test_a_best_value_at_its_grids_edge_is_printed():
    lines = edge_lines(tune(table(), ["rule"], ["lr"], "cost", [0, 1]), "rate_target")
    assert lines == ["grid edge: lr = 0.4 (the largest of 0.1, 0.2, 0.4) for rule=adaptive (rate_target)"]


def test_a_best_count_at_its_floor_is_no_edge_but_at_the_grids_top_or_a_steps_bottom_is():
    """Ringmaster's R cannot go below 1 (its check): R = 1 best is the end of R's range, not of the
    grid; the same value best for a step, or the largest R best, are edges."""
    rows = [{"rule": "r", "algorithm.max_delay": r, "step": r, "seed": 0, "cost": c}
            for r, c in [(1, 1.0), (2, 2.0), (8, 3.0)]]
    rows += [{"rule": "s", "algorithm.max_delay": r, "step": r, "seed": 0, "cost": c}
             for r, c in [(1, 3.0), (2, 2.0), (8, 1.0)]]
    frame = pd.DataFrame(rows)
    assert edge_lines(tune(frame, ["rule"], ["algorithm.max_delay"], "cost", [0])) == [
        "grid edge: algorithm.max_delay = 8 (the largest of 1, 2, 8) for rule=s"]
    assert [c.edges for c in tune(frame, ["rule"], ["step"], "cost", [0])] == [("step",), ("step",)]


def test_a_key_run_at_one_value_is_fixed_not_an_edge():
    """A method run at one step only (the demo's steps taken from the docs config's tuning) has no
    best value to widen a grid around: a ``fixed:`` line, no ``grid edge:``; its other key is tuned."""
    rows = [{"rule": "one", "step": 0.1, "size": s, "seed": 0, "cost": c} for s, c in [(2, 3.0), (8, 1.0), (32, 2.0)]]
    rows += [{"rule": "two", "step": lr, "size": 8, "seed": 0, "cost": c} for lr, c in [(0.01, 2.0), (0.1, 1.0)]]
    choices = {c.method["rule"]: c for c in tune(pd.DataFrame(rows), ["rule"], ["step", "size"], "cost", [0])}
    assert (choices["one"].fixed, choices["one"].edges) == (("step",), ())
    assert (choices["two"].fixed, choices["two"].edges) == (("size",), ("step",))
    assert edge_lines(list(choices.values()), "demo") == [
        "fixed: step = 0.1 for rule=one: one value, not tuned (demo)",
        "fixed: size = 8 for rule=two: one value, not tuned (demo)",
        "grid edge: step = 0.1 (the largest of 0.01, 0.1) for rule=two (demo)"]


def test_evaluation_uses_the_chosen_values_on_the_other_seeds_and_refuses_shared_seeds():
    choices = tune(table(), ["rule"], ["lr"], "cost", [0, 1])
    runs = evaluate(table(), choices, seeds=range(2, 7), tuning_seeds=[0, 1])
    constant = runs[runs["choice"] == "rule=constant"]
    assert (constant["lr"] == 0.1).all()
    assert constant.set_index("seed")["cost"].to_dict() == {s: 20.0 + s for s in range(2, 7)}
    assert len(runs) == 10 and set(runs[runs["choice"] == "rule=adaptive"]["lr"]) == {0.4}
    with pytest.raises(ValueError, match=r"evaluation seeds \[1\] are also tuning seeds"):
        evaluate(table(), choices, seeds=[1, 2], tuning_seeds=[0, 1])


def test_interval_is_students_t_and_states_n():
    # Values 1..5: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.7764451; half = 2.7764451 * 1.5811388 / sqrt(5).
    got = interval([1, 2, 3, 4, 5])
    half = 2.7764451052 * math.sqrt(2.5) / math.sqrt(5)
    assert (got.mean, got.n) == (3.0, 5)
    assert got.low == pytest.approx(3 - half, rel=1e-9) and got.high == pytest.approx(3 + half, rel=1e-9)
    assert str(Interval(3.0, 1.0, 5.0, 5)) == "3 [1, 5] (95% t-interval, n = 5)"
    with pytest.raises(TooFewSeeds, match="4 values, fewer than the 5"):
        interval([1, 2, 3, 4])


def test_a_gain_is_paired_by_seed_and_needs_ten_pairs():
    a = pd.Series({s: 10.0 + s + (s % 2) for s in range(12)})
    b = pd.Series({s: 10.0 + s for s in range(1, 13)})  # seed 0 and 12 ran for one method only
    got = paired(a, b)
    # Differences over seeds 1..11: 1,0,1,0,...,1 (six ones, five zeros).
    diffs = [s % 2 for s in range(1, 12)]
    mean = sum(diffs) / 11
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 10)
    half = 2.2281388520 * sd / math.sqrt(11)  # t(0.975, 10)
    assert got.n == 11 and got.mean == pytest.approx(6 / 11)
    assert got.high - got.mean == pytest.approx(half, rel=1e-9)
    with pytest.raises(TooFewSeeds):
        paired(a.loc[:8], b)


def test_a_key_whose_every_value_ties_is_flat_not_an_edge():
    """No step reaches the target within the budget: every run's cost is the budget, the first step
    is chosen by the tie rule, and that is no optimum at the grid's edge but a flat key; a tie of an
    edge value with one other value only is still an edge."""
    rows = [{"rule": "never", "step": s, "seed": 0, "cost": 200.0} for s in (0.01, 0.1, 1.0)]
    rows += [{"rule": "two", "step": s, "seed": 0, "cost": c} for s, c in [(0.01, 5.0), (0.1, 5.0), (1.0, 9.0)]]
    choices = {c.method["rule"]: c for c in tune(pd.DataFrame(rows), ["rule"], ["step"], "cost", [0])}
    assert (choices["never"].values, choices["never"].edges, choices["never"].flat) == ({"step": 0.01}, (), ("step",))
    assert (choices["two"].edges, choices["two"].flat) == (("step",), ())
    assert edge_lines(list(choices.values())) == [
        "flat: every step of 0.01, 0.1, 1.0 ties at 200 for rule=never, nothing to tune",
        "grid edge: step = 0.01 (the smallest of 0.01, 0.1, 1.0) for rule=two"]
    assert choice_lines(list(choices.values()), "seed 0") == [
        "chosen: step = 0.01 for rule=never (mean 200 on 1 seed) (seed 0)",
        "chosen: step = 0.01 for rule=two (mean 5 on 1 seed) (seed 0)"]
