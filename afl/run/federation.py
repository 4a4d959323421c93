"""The federation: dataset tensors on the training device, per-client shards, rates, routing."""

from dataclasses import dataclass

import numpy as np
import torch

from afl import data
from afl.config import Config, data_seed, routing_vector
from afl.errors import ConfigError
from afl.rng import Stream, numpy_stream
from afl.sim.timing import client_rates


class Shards:
    """The clients' index arrays into the training set, stored once (CSR layout, O(N + n)).

    ``shards[i]`` is client ``i``'s index tensor on the training device (a view, made on
    demand), ``shards.host(i)`` the same indices as a NumPy view, ``shards.sizes`` every
    ``n_i``: no per-client tensor objects, so ``n`` can be 100,000.
    """

    def __init__(self, parts, device: torch.device):
        self.sizes = np.array([len(p) for p in parts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.indices_host = np.concatenate(parts).astype(np.int64) if len(parts) else np.zeros(0, np.int64)
        self.indices = torch.from_numpy(self.indices_host).to(device)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self.sizes):
            raise IndexError(f"client {i} out of range")
        return self.indices[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def host(self, i: int) -> np.ndarray:
        return self.indices_host[self.offsets[i]:self.offsets[i + 1]]


@dataclass(frozen=True)
class Federation:
    train_x: torch.Tensor | None  # None for workload: none
    train_y: torch.Tensor | None
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    shards: Shards  # per-client index tensors into train_x, on the device
    rates: np.ndarray  # mu_i
    routing: np.ndarray  # p_i
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def sizes(self) -> np.ndarray:
        """``n_i``, the clients' shard sizes."""
        return self.shards.sizes


def device_of(cfg: Config) -> torch.device:
    if cfg.run.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: cuda is not available on this machine; fix: set run.device: auto or cpu")
    return torch.device(cfg.run.device)


def _subset(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray | None:
    return None if k is None or k >= n else np.sort(rng.choice(n, size=k, replace=False))


def build(cfg: Config, device: torch.device) -> Federation:
    """Load and split the data, and draw the clients' rates, all from keyed streams."""
    d, n = cfg.data, cfg.data.num_clients
    rates = client_rates(cfg.timing.rates, n, cfg.seed)
    routing = routing_vector(cfg.algorithm.routing, rates)
    if cfg.run.workload == "none":
        return Federation(None, None, None, None, Shards(np.zeros((n, 1), dtype=np.int64), torch.device("cpu")),
                          rates, routing, 0, ())
    ds = data.load(d.name, d.root, num_clients=d.synthetic_clients or n, seed=data_seed(cfg), synthetic_alpha=d.synthetic_alpha,
                   synthetic_beta=d.synthetic_beta, verify=d.verify)
    train_x, train_y, natural = ds.train_x, ds.train_y, ds.client_indices
    keep = _subset(len(train_y), d.train_subset, numpy_stream(cfg.seed, Stream.SUBSET, 0))
    if keep is not None:  # the config refuses a subset of the natural partition
        train_x, train_y, natural = train_x[keep], train_y[keep], None
    test_x, test_y = ds.test_x, ds.test_y
    keep = _subset(len(test_y), d.test_subset, numpy_stream(cfg.seed, Stream.SUBSET, 1))
    if keep is not None:
        test_x, test_y = test_x[keep], test_y[keep]
    try:
        parts = data.partition(d.partition, train_y.numpy(), n, numpy_stream(cfg.seed, Stream.PARTITION),
                               alpha=d.alpha, shards_per_client=d.shards_per_client,
                               min_size=d.min_size, natural=natural)
    except ValueError as exc:
        raise ConfigError(f"data.partition: {exc}; fix: lower data.min_size or data.num_clients, "
                          "or raise data.alpha") from None
    return Federation(train_x.to(device), train_y.to(device), test_x.to(device), test_y.to(device),
                      Shards(parts, device), rates, routing, ds.num_classes, ds.input_shape)
