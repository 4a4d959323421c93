"""Client selection from the server's own random stream.

``without_replacement``: uniform among idle clients; ``with_replacement``: uniform among all
clients (a busy one queues the task); ``routing``: client ``j`` with probability ``p_j``.
"""

import bisect

import numpy as np


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
