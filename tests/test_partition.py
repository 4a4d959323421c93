import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afl.data import dirichlet, iid, label_skew, partition, shards


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def balanced_labels(num_classes: int = 10, per_class: int = 600, seed: int = 0) -> np.ndarray:
    return rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def assert_exact_cover(parts, n: int, num_clients: int) -> None:
    assert isinstance(parts, tuple) and len(parts) == num_clients
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def assert_same(a, b) -> None:
    assert len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


PARTITIONERS = {
    "iid": lambda y, n, r: iid(y, n, r),
    "dirichlet": lambda y, n, r: dirichlet(y, n, 0.5, r),
    "shards": lambda y, n, r: shards(y, n, 2, r),
}


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 400),
    num_clients=st.integers(1, 25),
    num_classes=st.integers(1, 12),
    alpha=st.floats(0.01, 100),
    shards_per_client=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_partitioner_is_an_exact_cover(
    n, num_clients, num_classes, alpha, shards_per_client, seed
):
    labels = rng(seed).integers(0, num_classes, n)
    parts = dirichlet(labels, num_clients, alpha, rng(seed), min_size=0)
    assert_exact_cover(parts, n, num_clients)
    if n >= num_clients:
        parts = iid(labels, num_clients, rng(seed))
        assert_exact_cover(parts, n, num_clients)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    if n >= num_clients * shards_per_client:
        parts = shards(labels, num_clients, shards_per_client, rng(seed))
        assert_exact_cover(parts, n, num_clients)


@pytest.mark.parametrize("name", list(PARTITIONERS))
def test_same_seed_same_partition_different_seed_different(name):
    labels = balanced_labels()
    make = PARTITIONERS[name]
    assert_same(make(labels, 20, rng(1)), make(labels, 20, rng(1)))
    a, b = make(labels, 20, rng(1)), make(labels, 20, rng(2))
    assert any(not np.array_equal(p, q) for p, q in zip(a, b))


def test_label_skew_orders_dirichlet_alphas_and_iid():
    labels = balanced_labels()
    skew = {
        "iid": label_skew(iid(labels, 20, rng()), labels, 10),
        "alpha=10": label_skew(dirichlet(labels, 20, 10.0, rng()), labels, 10),
        "alpha=0.1": label_skew(dirichlet(labels, 20, 0.1, rng()), labels, 10),
    }
    assert skew["iid"] < skew["alpha=10"] < skew["alpha=0.1"], skew
    assert skew["iid"] < 0.1 and skew["alpha=0.1"] > 0.5, skew


def test_shards_give_each_client_at_most_its_shards_classes():
    labels = balanced_labels()  # 6000 samples, 20 shards of 300: one class per shard
    parts = shards(labels, 10, 2, rng())
    assert_exact_cover(parts, len(labels), 10)
    assert all(len(p) == 600 and len(np.unique(labels[p])) <= 2 for p in parts)
    assert label_skew(parts, labels, 10) > 0.7


def test_dirichlet_respects_min_size():
    labels = balanced_labels()
    smallest = [min(map(len, dirichlet(labels, 20, 0.1, rng(s), min_size=0))) for s in range(10)]
    assert min(smallest) < 10  # the constraint has work to do at these seeds
    for seed in range(10):
        parts = dirichlet(labels, 20, 0.1, rng(seed), min_size=10)
        assert_exact_cover(parts, len(labels), 20)
        assert min(map(len, parts)) >= 10


def test_dirichlet_gives_up_with_a_clear_error():
    labels = balanced_labels(per_class=100)
    with pytest.raises(ValueError, match="fewer than 1 samples in 1000 draws"):
        dirichlet(labels, 100, 1e-3, rng(), min_size=1)
    with pytest.raises(ValueError, match="too few"):
        dirichlet(labels, 100, 1.0, rng(), min_size=20)


def test_leftovers_from_rounding_are_assigned():
    # 3 classes of 7 and one of 1 among 5 clients: near-uniform proportions give floor 1
    # per client and class, so 2 samples per big class exist only as rounding leftovers.
    labels = np.array([0] * 7 + [1] * 7 + [2] * 7 + [3])
    for seed in range(20):
        assert_exact_cover(dirichlet(labels, 5, 1000.0, rng(seed), min_size=0), 22, 5)
    assert_exact_cover(shards(labels, 4, 5, rng()), 22, 4)  # 22 samples in 20 shards
    assert_exact_cover(iid(labels, 4, rng()), 22, 4)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_dirichlet_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        dirichlet(balanced_labels(), 10, alpha, rng())


def test_bad_sizes_are_rejected():
    labels = balanced_labels(per_class=1)
    with pytest.raises(ValueError, match="num_clients must be at least 1"):
        iid(labels, 0, rng())
    with pytest.raises(ValueError, match="too few"):
        iid(labels, 11, rng())
    with pytest.raises(ValueError, match="too few"):
        shards(labels, 3, 4, rng())
    with pytest.raises(ValueError, match="shards_per_client"):
        shards(labels, 3, 0, rng())


def test_partition_dispatches_by_name():
    labels = balanced_labels()
    assert_same(partition("iid", labels, 10, rng(3)), iid(labels, 10, rng(3)))
    assert_same(partition("dirichlet", labels, 10, rng(3), alpha=0.3, min_size=5),
                dirichlet(labels, 10, 0.3, rng(3), min_size=5))
    assert_same(partition("shards", labels, 10, rng(3), shards_per_client=3),
                shards(labels, 10, 3, rng(3)))
    natural = (np.arange(0, 3000), np.arange(3000, 6000))
    assert partition("natural", labels, 2, rng(), natural=natural) is natural
    with pytest.raises(ValueError, match="natural"):
        partition("natural", labels, 2, rng())
    with pytest.raises(ValueError, match="iid, dirichlet, shards, natural"):
        partition("pathological", labels, 2, rng())


def test_label_skew_values():
    labels = np.array([0, 0, 1, 1])
    assert label_skew((np.array([0, 2]), np.array([1, 3])), labels, 2) == 0.0
    assert label_skew((np.array([0, 1]), np.array([2, 3])), labels, 2) == 0.5
