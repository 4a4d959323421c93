"""The first seed's figure 3 claim, checked: do more clients per round lower the server loss faster?

Runs afl with 3 and 8 clients per round (3 seeds each) in two settings and prints, side by side,
the server loss (the mean local training loss of a round's results) early and late, and the final
test accuracy: ``demo`` (config/demo.yaml's mnist cells: MLP, 1 local epoch of SGD, 6,000
samples, 20 rounds) and ``paperlike`` (the seed's local training, 10 epochs of Adam at 1e-3 with
the delay-aware rate, patience 10, delays uniform(0, 2), on 20,000 samples for 30 rounds, with the
MLP instead of the CNN so that it runs in minutes on a CPU). docs/cluster.md has the
numbers.

    python bench/clients_per_round.py [--data-root ../shared/data]   # about 3 minutes on 2 cores
"""
import argparse
import itertools
import json
import tempfile

import numpy as np
import pandas as pd

import common
from afl.config import load_config
from afl.run.train import train

DEMO = {"data": {"name": "mnist", "num_clients": 10, "alpha": 0.5,
                 "train_subset": 6000, "test_subset": 2000},
        "model": {"name": "mlp"}, "client": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "epochs": 1, "batch_size": 32},
        "algorithm": {"name": "afl"},
        "timing": {"distribution": "exponential", "rates": {"kind": "groups", "groups": [{"fraction": 0.5, "rate": 1.0}, {"fraction": 0.5, "rate": 0.2}]}},
        "run": {"rounds": 20, "eval_every": 2}}
PAPERLIKE = {"data": {"name": "mnist", "num_clients": 10, "alpha": 0.5,
                      "train_subset": 20000, "test_subset": 2000},
             "model": {"name": "mlp"}, "client": {"optimizer": "adam", "lr": 0.001, "epochs": 10, "batch_size": 64,
                                                  "lr_rule": "delay_aware", "lr_alpha": 0.01, "patience": 10},
             "algorithm": {"name": "afl"}, "timing": {"distribution": "uniform", "low": 0.0, "high": 2.0},
             "run": {"rounds": 30, "eval_every": 3}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    args = parser.parse_args()
    root = str(common.data_root(args.data_root))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, base in (("demo", DEMO), ("paperlike", PAPERLIKE)):
            for m, seed in itertools.product((3, 8), (0, 1, 2)):
                raw = json.loads(json.dumps(base))
                raw["data"]["root"] = root
                raw["algorithm"]["concurrency"], raw["seed"] = m, seed
                out = f"{tmp}/{name}_m{m}_s{seed}"
                train(load_config(raw), out, progress=False)
                u, e = pd.read_parquet(f"{out}/updates.parquet"), pd.read_parquet(f"{out}/evals.parquet")
                u["round"] = np.arange(len(u)) // m + 1
                per = u.groupby("round")["train_loss"].mean()
                rows.append({"setting": name, "m": m, "seed": seed, "loss_r1_3": per.loc[1:3].mean(), "loss_r4_10": per.loc[4:10].mean(),
                             "loss_last5": per.iloc[-5:].mean(), "acc_end": e["test_acc"].iloc[-1]})
                print(name, m, seed, {k: round(float(v), 4) for k, v in rows[-1].items() if k not in ("setting", "m", "seed")}, flush=True)
    df = pd.DataFrame(rows)
    print(df.groupby(["setting", "m"]).agg(["mean", "std"]).drop(columns="seed").round(3).to_string())


if __name__ == "__main__":
    main()
