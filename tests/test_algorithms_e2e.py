"""End to end on real MNIST: every server rule learns (SPEC section 3), Dirichlet(0.5), 10 clients."""

import pandas as pd
import pytest

from afl.config import load_config
from afl.run.train import train

BASE = {
    "data": {"name": "mnist", "num_clients": 10, "partition": "dirichlet", "alpha": 0.5,
             "train_subset": 20000, "test_subset": 5000},
    "model": {"name": "mlp"},
    "client": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "batch_size": 32},
    "timing": {"rates": {"kind": "groups", "groups": [{"fraction": 0.5, "rate": 1.0},
                                                       {"fraction": 0.5, "rate": 0.2}]}},
}
RULES = {
    "sfl": {"algorithm": {"name": "sfl", "concurrency": 5}, "client": {"epochs": 1},
            "run": {"rounds": 30, "eval_every": 10}},
    "afl": {"algorithm": {"name": "afl", "concurrency": 5}, "client": {"epochs": 1},
            "run": {"rounds": 30, "eval_every": 10}},
    "fedasync": {"algorithm": {"name": "fedasync", "concurrency": 5, "mixing": 0.6}, "client": {"epochs": 1},
                 "run": {"rounds": 30, "eval_every": 10}},
    "fedbuff": {"algorithm": {"name": "fedbuff", "concurrency": 5, "buffer_size": 3}, "client": {"epochs": 1},
                "run": {"rounds": 30, "eval_every": 10}},
    "asyncsgd": {"algorithm": {"name": "asyncsgd", "concurrency": 5, "server_lr": 0.05},
                 "client": {"batch_size": 64}, "run": {"updates": 4000, "eval_every": 1000}},
    "asyncsgd-delay-adaptive": {"algorithm": {"name": "asyncsgd", "concurrency": 5, "server_lr": 0.05,
                                              "step_rule": "delay_adaptive"},
                                "client": {"batch_size": 64}, "run": {"updates": 4000, "eval_every": 1000}},
    "ringleader": {"algorithm": {"name": "ringleader", "concurrency": 10, "server_lr": 0.005},  # gamma ~ 1/n
                   "client": {"batch_size": 64}, "run": {"updates": 4000, "eval_every": 1000}},
    # Issue 21's rules, every worker computing (m = n): a step of S gradients at the current model
    # (Rennala), of gradients no staler than R (Ringmaster), of the first S of a round (m-synchronous),
    # of attempts within a time limit (MindFlayer); FADAS buffers local epochs like FedBuff.
    # Each with a margin that float rounding cannot take away: when the batched linear layers got
    # their own backward (the same gradients to rounding), Rennala at step 0.2 spiked from 92.6% to
    # 55.1% at update 1,200, MindFlayer ended at 89.2% after 500 updates and FADAS at 89.9% after
    # 30 rounds; at step 0.1, 1,000 updates and 40 rounds they end at 94.3%, 92.2% and 92.6%
    # (before that change: 94.3%, 92.6%).
    "rennala": {"algorithm": {"name": "rennala", "concurrency": 10, "buffer_size": 5, "server_lr": 0.1},
                "client": {"batch_size": 64}, "run": {"updates": 1200, "eval_every": 400}},
    "ringmaster": {"algorithm": {"name": "ringmaster", "concurrency": 10, "max_delay": 5, "stop_stale": True,
                                 "server_lr": 0.05},
                   "client": {"batch_size": 64}, "run": {"updates": 3000, "eval_every": 1000}},
    "msync": {"algorithm": {"name": "msync", "concurrency": 10, "buffer_size": 5, "server_lr": 0.2},
              "client": {"batch_size": 64}, "run": {"updates": 500, "eval_every": 250}},
    "mindflayer": {"algorithm": {"name": "mindflayer", "concurrency": 10, "buffer_size": 5, "time_limit": 2.0,
                                 "server_lr": 0.2},
                   "client": {"batch_size": 64}, "run": {"updates": 1000, "eval_every": 250}},
    "fadas": {"algorithm": {"name": "fadas", "concurrency": 5, "server_lr": 0.003}, "client": {"epochs": 1},
              "run": {"rounds": 40, "eval_every": 10}},
}


def merge(base, extra):
    out = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_reaches_90_percent_on_real_mnist(tmp_path, shared_data_root, rule):
    raw = merge(BASE, RULES[rule])
    raw["data"]["root"] = str(shared_data_root)
    info = train(load_config(raw), tmp_path, progress=False)
    evals = pd.read_parquet(tmp_path / "evals.parquet")
    assert info["status"] == "completed"
    assert evals.test_acc.iloc[-1] >= 0.90, evals.to_string()
    assert evals.test_acc.iloc[0] < 0.3  # it learned: the initial model is at chance level
