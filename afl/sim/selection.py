"""Client selection from the server's own random stream.

``without_replacement``: uniform among idle clients; ``with_replacement``: uniform among all
clients (a busy one queues the task); ``routing``: client ``j`` with probability ``p_j``.
"""

import bisect

import numpy as np


def power_routing(rates: np.ndarray, power: float) -> np.ndarray:
    """The routing ``p_i = mu_i^a / sum_j mu_j^a`` (``a = power``, ``mu`` the clients' rates).

    ``a = 0`` is uniform routing; ``a = 1`` gives equal loads ``rho_i = 1 / sum_j mu_j`` (the
    closed form ``lambda = m / (rho (m + n - 1))``, from Buzen's ``G(c) = C(c + n - 1, c) rho^c``);
    ``a = 1/2`` lies between.
    """
    weights = np.asarray(rates, dtype=float) ** float(power)
    return weights / weights.sum()


class Selector:
    def __init__(self, mode: str, n: int, routing: np.ndarray, rng: np.random.Generator):
        self.mode, self.n, self.rng = mode, n, rng
        self.cdf = np.cumsum(routing).tolist()
        self.idle = list(range(n))  # without replacement: clients with no task

    def pick(self) -> int:
        """One client, from one uniform draw ``u``: ``idle[floor(u k)]`` of ``k`` idle clients,
        ``floor(u n)``, or the first ``j`` with ``cdf_j > u cdf_n``."""
        u = self.rng.random()
        if self.mode == "without_replacement":
            j = int(u * len(self.idle))
            self.idle[j], self.idle[-1] = self.idle[-1], self.idle[j]
            return self.idle.pop()
        if self.mode == "with_replacement":
            return int(u * self.n)
        return min(bisect.bisect_right(self.cdf, u * self.cdf[-1]), self.n - 1)

    def release(self, client: int) -> None:
        if self.mode == "without_replacement":
            self.idle.append(client)


# ----------------------------------------------------------------------------- sampling analysis


def sample_mean_variance(sigma2: float, m: int, n: int, replace: bool) -> float:
    """The variance ``E||mean_S u - mean u||^2`` of the mean of ``m`` of ``n`` fixed vectors drawn
    uniformly, the first seed's section 2.2: ``sigma^2 / m`` with replacement,
    ``sigma^2 / m * (n - m) / (n - 1)`` without, where ``sigma^2 = (1/n) sum_i ||u_i - mean u||^2``
    is the population variance."""
    if replace:
        return sigma2 / m
    if not 1 <= m <= n or n < 2:
        raise ValueError(f"without replacement needs 1 <= m <= n and n >= 2, got m={m}, n={n}")
    return sigma2 / m * (n - m) / (n - 1)


def draw_counts(rng: np.random.Generator, n: int, m: int, replace: bool, draws: int) -> np.ndarray:
    """``draws`` uniform samples of ``m`` of ``n`` clients: how often each client is in each, ``[draws, n]``."""
    if replace:
        picks = rng.integers(0, n, size=(draws, m))
    else:
        picks = np.argsort(rng.random((draws, n)), axis=1)[:, :m]
    counts = np.zeros((draws, n))
    np.add.at(counts, (np.repeat(np.arange(draws), m), picks.ravel()), 1.0)
    return counts


def sample_mean_deviations(gram: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``||mean_S u - mean u||^2`` of each sample (a row of ``counts``, from ``draw_counts``), from the
    Gram matrix of the centred vectors ``gram[i, j] = <u_i - mean u, u_j - mean u>``."""
    m = counts.sum(1)
    return np.einsum("rn,nk,rk->r", counts, gram, counts) / m**2
