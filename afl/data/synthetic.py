"""FedProx's Synthetic(alpha, beta) dataset (Li et al., "Federated Optimization in
Heterogeneous Networks", MLSys 2020, section 5.1 and its ``generate_synthetic``).

For each client k:

    u_k ~ N(0, alpha),  W_k ~ N(u_k, 1) in R^{C x d},  b_k ~ N(u_k, 1) in R^C
    B_k ~ N(0, beta),   v_k ~ N(B_k, 1) in R^d
    x ~ N(v_k, Sigma),  Sigma diagonal with Sigma_jj = j^(-1.2)  (j = 1..d)
    y = argmax(softmax(W_k x + b_k))

with d = 60 and C = 10 by default; alpha controls how much the local models differ and
beta how much the local inputs differ. As in the reference code, the second argument
of N(., .) for u_k and B_k is used as a standard deviation. Client k has
``min(floor(lognormal(4, 2)) + 50, MAX_SAMPLES)`` samples (a power law), of which the
first 80% are its training data and the rest its test data.

Client k's data comes from its own stream ``default_rng([seed, TAG, k])``, so it does
not depend on how many clients are generated.
"""

from __future__ import annotations

import numpy as np
import torch

from afl.data.dataset import Dataset

TAG = 0x5359  # "SY": keeps these streams apart from the engine's (seed, purpose) streams
MIN_SAMPLES = 50
MAX_SAMPLES = 10_000
TRAIN_FRACTION = 0.8


def _client(
    rng: np.random.Generator, alpha: float, beta: float, dim: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n, dim)`` and labels ``(n,)`` of one client."""
    n = min(int(rng.lognormal(4, 2)) + MIN_SAMPLES, MAX_SAMPLES)
    u = rng.normal(0, alpha)
    w = rng.normal(u, 1, (num_classes, dim))
    b = rng.normal(u, 1, num_classes)
    v = rng.normal(rng.normal(0, beta), 1, dim)
    sigma = np.arange(1, dim + 1, dtype=np.float64) ** -1.2
    x = v + np.sqrt(sigma) * rng.standard_normal((n, dim))
    y = np.argmax(x @ w.T + b, axis=1)
    return x, y


def generate(
    num_clients: int,
    alpha: float,
    beta: float,
    seed: int,
    dim: int = 60,
    num_classes: int = 10,
) -> Dataset:
    """Generate Synthetic(alpha, beta) for ``num_clients`` clients.

    The train and test sets are the clients' splits concatenated in client order;
    ``client_indices[k]`` lists client k's rows of the train set.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be non-negative, got {alpha}, {beta}")
    train_x, train_y, test_x, test_y, indices = [], [], [], [], []
    start = 0
    for k in range(num_clients):
        x, y = _client(np.random.default_rng([seed, TAG, k]), alpha, beta, dim, num_classes)
        cut = int(TRAIN_FRACTION * len(x))
        train_x.append(x[:cut])
        train_y.append(y[:cut])
        test_x.append(x[cut:])
        test_y.append(y[cut:])
        indices.append(np.arange(start, start + cut, dtype=np.int64))
        start += cut
    return Dataset(
        name="synthetic",
        train_x=torch.from_numpy(np.concatenate(train_x).astype(np.float32)),
        train_y=torch.from_numpy(np.concatenate(train_y).astype(np.int64)),
        test_x=torch.from_numpy(np.concatenate(test_x).astype(np.float32)),
        test_y=torch.from_numpy(np.concatenate(test_y).astype(np.int64)),
        num_classes=num_classes,
        client_indices=tuple(indices),
    )
