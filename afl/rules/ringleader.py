"""Ringleader ASGD (Maranjyan and Richtárik, arXiv 2509.22860): asynchronous SGD with a table of gradients."""

from dataclasses import dataclass, field

import numpy as np

from afl.rules.spec import Rule


@dataclass(frozen=True)
class Ringleader:
    """Steps on the mean over workers of each worker's mean gradient in a table:
    ``x^{k+1} = x^k - gamma (1/n) sum_i (1/b_i) G_i``, ``G_i`` the sum of worker ``i``'s ``b_i``
    gradients in the table (the paper's update; every worker counts alike, however fast).

    In rounds of ``n`` steps. Phase 1: each arriving gradient joins the table, no step, until
    every worker has one there; that arrival makes the round's first step. Phase 2: a gradient
    from a worker not yet stepped for this round joins the table (stale, it is kept) and makes a
    step; one from a worker already stepped for (computed at a newer model) waits in a second
    table for the next round. After the ``n``-th step the second table becomes the table. An
    arrival that makes no step is held (``aggregate`` returns None). Every worker keeps one
    computation in flight and restarts on the current model after each arrival, so delays stay
    below ``2n - 1`` steps. The tables (``2 n`` model-sized tensors) are the rule's ``state``.

    Read from the paper's text and its authors' simulation code (``RingleaderASGD``, which keeps
    the mean of the workers' means and starts the second phase with the first phase's last
    arrival); the mean is recomputed at each round's first step and updated in place after.
    """

    n: int
    server_lr: float
    state: dict = field(default_factory=dict)

    def aggregate(self, x, arrivals, taus):
        (a,) = arrivals
        i, s = a.client, self.state
        if not s:
            s.update(table=x.new_zeros(self.n, x.numel()), counts=[0] * self.n,
                     next=x.new_zeros(self.n, x.numel()), next_counts=[0] * self.n,
                     stepped=[False] * self.n, steps=0, mean=x.new_zeros(x.numel()))
        table, counts = s["table"], s["counts"]
        started = min(counts) >= 1  # phase 2: every worker is in the table
        if s["stepped"][i]:  # computed at a model this round made: for the next round
            s["next"][i].add_(a.vector)
            s["next_counts"][i] += 1
            return None, None
        before = table[i] / counts[i] if started else None
        table[i].add_(a.vector)
        counts[i] += 1
        if started:
            s["mean"].add_(table[i] / counts[i] - before, alpha=1.0 / self.n)
        elif min(counts) == 0:
            return None, None  # phase 1 goes on
        else:
            s["mean"] = (table / table.new_tensor(counts).unsqueeze(1)).mean(0)
        weight = self.server_lr / (self.n * counts[i])
        new = x.add(s["mean"], alpha=-self.server_lr)
        s["stepped"][i] = True
        s["steps"] += 1
        if s["steps"] == self.n:  # the round's n steps are made: the second table becomes the table
            s.update(table=s["next"], counts=s["next_counts"], next=table.zero_(), next_counts=[0] * self.n,
                     stepped=[False] * self.n, steps=0)
        return new, np.array([weight])


RINGLEADER = Rule(
    name="ringleader", build=lambda a, s, clients: Ringleader(len(clients.routing), a.server_lr), gradient=True,
    keys=("server_lr",), all_clients=True,
)
