"""Partitions of a training set among clients.

Every partitioner returns one sorted int64 index array per client, together an exact
cover of ``range(len(labels))``: each sample goes to exactly one client. All randomness
comes from the ``numpy.random.Generator`` passed in, so the same seed gives the same
partition.
"""

from __future__ import annotations

import numpy as np

PARTITIONERS = ("iid", "dirichlet", "shards", "natural")
MAX_DIRICHLET_TRIES = 1000


def _check(labels: np.ndarray, num_clients: int, min_samples: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if len(labels) < min_samples:
        raise ValueError(f"{len(labels)} samples are too few: need at least {min_samples}")
    return labels


def _groups(owner: np.ndarray, num_clients: int) -> tuple[np.ndarray, ...]:
    """The sorted indices owned by each client, from ``owner[i]`` = client of sample i."""
    order = np.argsort(owner, kind="stable").astype(np.int64)
    cuts = np.cumsum(np.bincount(owner, minlength=num_clients))[:-1]
    return tuple(np.split(order, cuts))


def _class_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices grouped by label (ascending), in random order within each label."""
    perm = rng.permutation(len(labels))
    return perm[np.argsort(labels[perm], kind="stable")]


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A uniformly random split into ``num_clients`` parts whose sizes differ by at most 1."""
    labels = _check(labels, num_clients, num_clients)
    owner = np.empty(len(labels), dtype=np.int64)
    for k, part in enumerate(np.array_split(rng.permutation(len(labels)), num_clients)):
        owner[part] = k
    return _groups(owner, num_clients)


def _round_counts(proportions: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Integer counts per row summing to ``totals``: floor of ``proportions * totals`` plus
    one for each of the largest remainders (Hamilton's method), so nothing is dropped."""
    raw = proportions * totals[:, None]
    counts = np.floor(raw).astype(np.int64)
    deficit = totals - counts.sum(axis=1)
    rank = np.argsort(np.argsort(counts - raw, axis=1, kind="stable"), axis=1, kind="stable")
    return counts + (rank < deficit[:, None])


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> tuple[np.ndarray, ...]:
    """Label-skewed split: each class is divided among clients in proportions
    ``p ~ Dir(alpha * 1_n)`` (Hsu et al. 2019); smaller ``alpha`` means more skew.

    Proportions are redrawn (at most ``MAX_DIRICHLET_TRIES`` times) until every client
    gets at least ``min_size`` samples.
    """
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"dirichlet alpha must be a positive number, got {alpha}")
    if min_size < 0:
        raise ValueError(f"min_size must be non-negative, got {min_size}")
    labels = _check(labels, num_clients, num_clients * min_size)
    order = _class_order(labels, rng)
    _, class_sizes = np.unique(labels, return_counts=True)
    for _ in range(MAX_DIRICHLET_TRIES):
        proportions = rng.dirichlet(np.full(num_clients, float(alpha)), size=len(class_sizes))
        counts = _round_counts(proportions, class_sizes)
        if counts.sum(axis=0).min() >= min_size:
            break
    else:
        raise ValueError(
            f"dirichlet(alpha={alpha}) gave some of the {num_clients} clients fewer than "
            f"{min_size} samples in {MAX_DIRICHLET_TRIES} draws: raise alpha, lower "
            "min_size or use fewer clients"
        )
    owner = np.empty(len(labels), dtype=np.int64)
    owner[order] = np.repeat(np.tile(np.arange(num_clients), len(class_sizes)), counts.ravel())
    return _groups(owner, num_clients)


def shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """McMahan et al. (2017)'s pathological non-IID split: sort by label, cut into
    ``num_clients * shards_per_client`` contiguous shards (sizes differ by at most 1, so
    no sample is left over) and give each client ``shards_per_client`` random shards."""
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client must be at least 1, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    labels = _check(labels, num_clients, num_shards)
    owner = np.empty(len(labels), dtype=np.int64)
    shard_owner = rng.permutation(num_shards) // shards_per_client
    for shard, part in enumerate(np.array_split(_class_order(labels, rng), num_shards)):
        owner[part] = shard_owner[shard]
    return _groups(owner, num_clients)


def partition(
    name: str,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    min_size: int = 1,
    natural: tuple[np.ndarray, ...] | None = None,
) -> tuple[np.ndarray, ...]:
    """Dispatch to the partitioner ``name`` (one of ``PARTITIONERS``); ``"natural"``
    returns ``natural``, the dataset's own per-client partition."""
    if name == "iid":
        return iid(labels, num_clients, rng)
    if name == "dirichlet":
        return dirichlet(labels, num_clients, alpha, rng, min_size=min_size)
    if name == "shards":
        return shards(labels, num_clients, shards_per_client, rng)
    if name == "natural":
        if natural is None:
            raise ValueError("the 'natural' partition needs a dataset with one (e.g. synthetic)")
        if len(natural) != num_clients:
            raise ValueError(
                f"the natural partition has {len(natural)} clients, not {num_clients}"
            )
        return natural
    raise ValueError(f"unknown partition {name!r}: choose one of {', '.join(PARTITIONERS)}")


def label_skew(parts: tuple[np.ndarray, ...], labels: np.ndarray, num_classes: int) -> float:
    """Mean over non-empty clients of the total-variation distance
    ``0.5 * sum_c |p_k(c) - p(c)|`` between client k's label distribution and the
    global one: 0 for identical distributions, approaching 1 for disjoint ones."""
    labels = np.asarray(labels)
    overall = np.bincount(labels, minlength=num_classes) / len(labels)
    distances = [
        0.5 * np.abs(np.bincount(labels[p], minlength=num_classes) / len(p) - overall).sum()
        for p in parts
        if len(p)
    ]
    return float(np.mean(distances))
