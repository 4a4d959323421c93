"""The federation (``afl.run.federation``): shards, sizes, rates and routing as the trainer gets them."""

import numpy as np
import pytest
import torch

from afl import data
from afl.run import federation
from afl.sim.timing import client_rates
from afl.config import load_config, routing_vector
from afl.data import generate_synthetic
from afl.errors import ConfigError

CPU = torch.device("cpu")
LOGNORMAL = {"rates": {"kind": "lognormal", "sigma": 0.7}}


def build(raw: dict) -> tuple:
    cfg = load_config({"run": {"updates": 10}, **raw, "algorithm": {"concurrency": 2, **raw.get("algorithm", {})}})
    return cfg, federation.build(cfg, CPU)


def assert_cover_once(fed: federation.Federation) -> None:
    """Every training row is in exactly one client's shard, and sizes are the shards' lengths."""
    rows = len(fed.train_y)
    shards = [fed.shards[i] for i in range(len(fed.shards))]
    assert len(fed.shards) == len(fed.rates) == len(fed.routing)
    np.testing.assert_array_equal(np.sort(torch.cat(shards).numpy()), np.arange(rows))
    np.testing.assert_array_equal(fed.sizes, [len(s) for s in shards])
    assert fed.sizes.sum() == rows
    for i, s in enumerate(shards):
        assert s.dtype == torch.int64 and s.device == CPU
        np.testing.assert_array_equal(fed.shards.host(i), s.numpy())
    assert [len(s) for s in fed.shards] == list(fed.sizes)  # iteration gives the same shards


def test_synthetic_natural_partition_is_the_clients_own_data():
    cfg, fed = build({"seed": 3, "data": {"name": "synthetic", "num_clients": 5}, "timing": LOGNORMAL})
    assert_cover_once(fed)
    ds = generate_synthetic(5, 1.0, 1.0, seed=3)
    for i in range(5):
        np.testing.assert_array_equal(fed.shards.host(i), ds.client_indices[i])
    assert torch.equal(fed.train_x, ds.train_x) and torch.equal(fed.train_y, ds.train_y)
    assert torch.equal(fed.test_x, ds.test_x) and torch.equal(fed.test_y, ds.test_y)
    assert (fed.num_classes, fed.input_shape) == (10, (60,))
    np.testing.assert_array_equal(fed.rates, client_rates(cfg.timing.rates, cfg.data.num_clients, cfg.seed))
    assert len(set(fed.rates)) == 5  # lognormal: drawn, not constant
    np.testing.assert_array_equal(fed.routing, [0.2] * 5)


@pytest.mark.parametrize("partition", ["iid", "dirichlet", "shards"])
def test_synthetic_with_a_label_partition_covers_the_training_set_once(partition):
    cfg, fed = build({"data": {"name": "synthetic", "num_clients": 6, "partition": partition, "min_size": 5},
                      "timing": LOGNORMAL})
    assert_cover_once(fed)
    assert fed.sizes.min() >= (5 if partition == "dirichlet" else 1)
    np.testing.assert_array_equal(fed.rates, client_rates(cfg.timing.rates, cfg.data.num_clients, cfg.seed))


def test_synthetic_with_a_label_partition_can_be_subsampled():
    _, fed = build({"data": {"name": "synthetic", "num_clients": 4, "partition": "iid", "train_subset": 200}})
    assert fed.train_x.shape == (200, 60)
    assert_cover_once(fed)


def test_synthetic_seed_fixes_the_data_and_leaves_the_rest_to_the_run_seed():
    """data.synthetic_seed generates the data (seed 4's for every run seed), the run's seed still
    draws the rest (the rates); unset, the run's seed generates the data."""
    fixed = {"name": "synthetic", "num_clients": 5, "synthetic_seed": 4}
    (cfg0, a), (cfg1, b) = (build({"seed": s, "data": fixed, "timing": LOGNORMAL}) for s in (0, 1))
    ds = generate_synthetic(5, 1.0, 1.0, seed=4)
    for fed in (a, b):
        assert torch.equal(fed.train_x, ds.train_x) and torch.equal(fed.train_y, ds.train_y)
    assert len(generate_synthetic(5, 1.0, 1.0, seed=0).train_y) != len(ds.train_y)  # seed 0's own differ
    assert not np.array_equal(a.rates, b.rates)
    _, own = build({"seed": 1, "data": {"name": "synthetic", "num_clients": 5}})
    assert torch.equal(own.train_y, generate_synthetic(5, 1.0, 1.0, seed=1).train_y)
    with pytest.raises(ConfigError, match="data.synthetic_seed: only synthetic data is generated, not mnist"):
        load_config({"data": {"name": "mnist", "synthetic_seed": 0}})


def test_natural_partition_cannot_be_subsampled():
    with pytest.raises(ConfigError, match="data.train_subset: the natural partition"):
        build({"data": {"name": "synthetic", "num_clients": 4, "train_subset": 200}})


def test_routing_vector_from_the_config():
    routing = [0.4, 0.3, 0.2, 0.1]
    cfg, fed = build({"data": {"name": "synthetic", "num_clients": 4},
                      "algorithm": {"name": "asyncsgd", "routing": routing}})
    assert fed.routing.dtype == np.float64
    np.testing.assert_array_equal(fed.routing, routing)
    np.testing.assert_array_equal(routing_vector("uniform", np.ones(4)), [0.25] * 4)
    np.testing.assert_array_equal(routing_vector(None, np.ones(5)), [0.2] * 5)


def test_power_routing_follows_the_drawn_rates():
    """{power: a}: p_i = mu_i^a / sum_j mu_j^a of the rates the run draws (two groups, 1 and 0.2)."""
    groups = [{"fraction": 0.5, "rate": 1.0}, {"fraction": 0.5, "rate": 0.2}]
    root = 0.2**0.5
    for power, expected in ((1, [1 / 2.4] * 2 + [0.2 / 2.4] * 2),
                            (0.5, [1 / (2 + 2 * root)] * 2 + [root / (2 + 2 * root)] * 2)):
        cfg, fed = build({"data": {"name": "synthetic", "num_clients": 4},
                          "algorithm": {"name": "asyncsgd", "routing": {"power": power}},
                          "timing": {"rates": {"kind": "groups", "groups": groups}}})
        np.testing.assert_allclose(fed.routing, expected, rtol=1e-12)


def test_routing_vector_from_a_json_file(tmp_path):
    path = tmp_path / "routing.json"
    path.write_text('{"p": [0.5, 0.5, 0.0]}')
    np.testing.assert_array_equal(routing_vector(str(path), np.ones(3)), [0.5, 0.5, 0.0])
    with pytest.raises(ConfigError, match="has 3 entries for 4 clients"):
        routing_vector(str(path), np.ones(4))


def test_group_rates_follow_the_groups():
    groups = [{"fraction": 0.5, "rate": 1.0}, {"fraction": 0.5, "rate": 0.2}]
    _, fed = build({"data": {"name": "synthetic", "num_clients": 4}, "timing": {"rates": {"kind": "groups",
                                                                                          "groups": groups}}})
    np.testing.assert_array_equal(fed.rates, [1.0, 1.0, 0.2, 0.2])


def test_null_workload_has_rates_and_routing_but_no_data():
    cfg, fed = build({"data": {"name": "synthetic", "num_clients": 7}, "timing": LOGNORMAL,
                      "run": {"workload": "none", "updates": 10}})
    assert fed.train_x is None and fed.test_x is None
    assert len(fed.shards) == 7
    np.testing.assert_array_equal(fed.rates, client_rates(cfg.timing.rates, cfg.data.num_clients, cfg.seed))
    np.testing.assert_array_equal(fed.routing, [1 / 7] * 7)


def test_shards_index_bounds():
    shards = federation.Shards([np.array([4, 2]), np.array([], dtype=np.int64), np.array([0, 1, 3])], CPU)
    np.testing.assert_array_equal(shards.sizes, [2, 0, 3])
    assert shards[0].tolist() == [4, 2] and shards[1].tolist() == [] and shards[2].tolist() == [0, 1, 3]
    for bad in (-1, 3):
        with pytest.raises(IndexError):
            shards[bad]


def test_same_seed_same_federation_other_seed_differs():
    raw = {"data": {"name": "synthetic", "num_clients": 5, "partition": "dirichlet"}, "timing": LOGNORMAL}
    _, a = build(raw)
    _, b = build(raw)
    _, c = build({**raw, "seed": 1})
    np.testing.assert_array_equal(a.shards.indices_host, b.shards.indices_host)
    np.testing.assert_array_equal(a.rates, b.rates)
    assert not np.array_equal(a.rates, c.rates)
    assert not torch.equal(a.train_x[:10], c.train_x[:10])


def pixels(images: torch.Tensor) -> np.ndarray:
    """Normalised images ``(x / 255 - 0.5) / 0.5`` back to their uint8 pixels, one row per image."""
    return np.rint((images.numpy().reshape(len(images), -1) * 0.5 + 0.5) * 255).astype(np.uint8)


def test_mnist_dirichlet_subset(shared_data_root):
    cfg, fed = build({"data": {"name": "mnist", "root": str(shared_data_root), "num_clients": 10,
                               "partition": "dirichlet", "alpha": 0.5, "min_size": 20,
                               "train_subset": 2000, "test_subset": 500},
                      "timing": LOGNORMAL})
    assert fed.train_x.shape == (2000, 1, 28, 28) and fed.test_x.shape == (500, 1, 28, 28)
    assert (fed.num_classes, fed.input_shape) == (10, (1, 28, 28))
    assert_cover_once(fed)
    assert fed.sizes.min() >= 20
    # The subsets are distinct rows of MNIST's own train and test sets (compared as uint8 pixels).
    full = data.load("mnist", shared_data_root)
    for sub, whole, rows in ((fed.train_x, full.train_x, 2000), (fed.test_x, full.test_x, 500)):
        keys = [hash(r.tobytes()) for r in pixels(sub)]
        assert len(set(keys)) == rows and set(keys) <= {hash(r.tobytes()) for r in pixels(whole)}
    # Dirichlet(0.5) skews the labels: some client's most common label is over a third of its data.
    labels = fed.train_y.numpy()
    top = [np.bincount(labels[fed.shards.host(i)], minlength=10).max() / fed.sizes[i] for i in range(10)]
    assert max(top) > 1 / 3
    np.testing.assert_array_equal(fed.rates, client_rates(cfg.timing.rates, cfg.data.num_clients, cfg.seed))
    np.testing.assert_array_equal(fed.routing, [0.1] * 10)
