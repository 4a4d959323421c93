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
    """``pool``: the clients a pick may return, in the order the draws index them: the idle online
    clients (without replacement) or the online ones (with replacement); ``where[i]`` is client
    ``i``'s place in it (-1: not in it). Routing draws from ``p`` renormalised over the online
    clients. With every client online (``timing.availability: always``) this is the plain uniform
    or routing draw."""

    def __init__(self, mode: str, n: int, routing: np.ndarray, rng: np.random.Generator):
        self.mode, self.n, self.rng = mode, n, rng
        self.weights = np.asarray(routing, dtype=float)
        self.cdf = np.cumsum(routing).tolist()
        self.pool = list(range(n))
        self.where = list(range(n))
        self.online = [True] * n
        self.offline_idle: set[int] = set()  # without replacement: idle clients that are offline
        self.stale_cdf = False

    def available(self) -> bool:
        """Whether a pick has a client to return."""
        if self.mode == "routing":
            self._refresh()
            return self.cdf[-1] > 0
        return bool(self.pool)

    def pick(self) -> int:
        """One client, from one uniform draw ``u``: ``pool[floor(u k)]`` of ``k`` clients in the pool
        (taken out of it without replacement), or the first ``j`` with ``cdf_j > u cdf_n``."""
        u = self.rng.random()
        if self.mode == "routing":
            self._refresh()
            return min(bisect.bisect_right(self.cdf, u * self.cdf[-1]), self.n - 1)
        j = int(u * len(self.pool))
        if self.mode == "with_replacement":
            return self.pool[j]
        client = self.pool[j]
        self._remove(client)
        return client

    def release(self, client: int) -> None:
        """``client`` has no task any more (without replacement: it may be picked again once online)."""
        if self.mode == "without_replacement":
            if self.online[client]:
                self._add(client)
            else:
                self.offline_idle.add(client)

    def set_online(self, client: int, online: bool) -> None:
        """``client`` came online or went offline (or, unchanged, nothing); an idle client going offline
        stays idle."""
        if self.online[client] == online:
            return
        self.online[client] = online
        if self.mode == "routing":
            self.stale_cdf = True
        elif self.mode == "with_replacement":
            self._add(client) if online else self._remove(client)
        elif online and client in self.offline_idle:
            self.offline_idle.discard(client)
            self._add(client)
        elif not online and self.where[client] >= 0:
            self._remove(client)
            self.offline_idle.add(client)

    def _add(self, client: int) -> None:
        self.where[client] = len(self.pool)
        self.pool.append(client)

    def _remove(self, client: int) -> None:
        """Take ``client`` out of the pool: the last client takes its place."""
        j, last = self.where[client], self.pool[-1]
        self.pool[j], self.where[last] = last, j
        self.pool.pop()
        self.where[client] = -1

    def _refresh(self) -> None:
        if self.stale_cdf:
            self.cdf = np.cumsum(self.weights * np.asarray(self.online)).tolist()
            self.stale_cdf = False

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "idle": list(self.pool), "online": list(self.online),
                "offline_idle": sorted(self.offline_idle)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.pool = list(state["idle"])
        self.where = [-1] * self.n
        for j, client in enumerate(self.pool):
            self.where[client] = j
        self.online = list(state.get("online", [True] * self.n))
        self.offline_idle = set(state.get("offline_idle", ()))
        self.stale_cdf = self.mode == "routing" and not all(self.online)


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
