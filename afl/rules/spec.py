"""What a server rule owns: its facts, defaults and checks, next to its aggregation.

Every rule module ends with one ``Rule``; nothing outside ``afl.rules`` asks for a rule by name,
it asks the rule's ``Rule`` (``afl.rules.get(name)``) for the fact it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the rules take tensors but need no torch import (the login node loads afl.config)
    import torch


@dataclass(frozen=True)
class Arrival:
    """A finished task as the server sees it."""

    client: int
    base_version: int
    base: torch.Tensor  # the model x_v the task was sent
    vector: torch.Tensor  # the client's model x_i, or its gradient g_i for a gradient rule
    num_samples: int  # n_i, the client's shard size
    train_loss: float


@dataclass(frozen=True)
class Clients:
    """What a rule may know of the clients: routing probabilities ``p_i``, rates ``mu_i`` (their
    mean speeds) and the config's ``timing`` section (``afl.sim.timing``)."""

    routing: Any
    rates: Any
    timing: Any


def _one(algorithm) -> int:
    return 1


def _no_defaults(algorithm) -> dict:
    return {}


def _no_check(algorithm) -> None:
    return None


def _never(algorithm) -> None:
    return None


@dataclass(frozen=True)
class Rule:
    """A server rule's facts. ``algorithm`` below is the config's ``algorithm`` section.

    - ``build(algorithm, s, clients)``: the aggregator (``clients``: ``Clients``), whose ``aggregate(x, arrivals, taus)``
      returns the new model and the weight (or step) applied to each arrival, or ``(None, None)``
      when it holds the arrivals for later steps without a step now (Ringleader's table); one that keeps
      state between updates (FADAS's moments) keeps it in a ``state`` dict of tensors and
      numbers, which every checkpoint saves and a resume restores;
    - ``batch(algorithm)``: arrivals per server update (the server buffers until it is full; under a
      ``plan``, about how many a round brings, for budgets);
    - ``barrier``: synchronous rounds: a new round of ``m`` tasks only when none is in flight;
    - ``gradient``: a task returns one stochastic gradient at the model it was sent (one local
      step), not a locally trained model;
    - ``staleness``, ``lr_rule``, ``selection``: its default ``s(tau)``, local learning-rate rule
      and client selection;
    - ``keys``: the ``algorithm`` keys it reads (a key with no default that another rule owns is
      refused here);
    - ``defaults(algorithm)``: its own defaults that depend on other keys; ``check(algorithm)``:
      its own validation (``afl.errors.config_fail``);
    - what it refuses (``afl.sim.simulator.Simulation``; None: nothing): ``discard_after(algorithm)``,
      the largest staleness of a result it applies (a staler one is discarded on arrival);
      ``cancel_after(algorithm)``, the largest staleness a task in flight may reach (it is stopped
      when an update would make it staler, which needs one task per client). A stopped or
      discarded task's client gets a new one on the current model;
    - ``all_clients``: it works with every client (``concurrency`` must be the number of
      clients, selection without replacement): one computation in flight on each, or its plan;
    - ``plan(algorithm, clients)``: a synchronous rule's tasks per client and round, all on the
      round's model, its update on every result of the round (None: ``m`` selected clients);
    - ``time_limit(algorithm)``: a task whose draw ``S`` (``afl.sim.timing``) exceeds it is
      stopped at the time of ``S = time_limit`` (None: none is).
    """

    name: str
    build: Callable[[Any, Callable, Clients], Any]
    batch: Callable[[Any], int] = _one
    barrier: bool = False
    gradient: bool = False
    staleness: str = "constant"
    lr_rule: str = "constant"
    selection: str = "without_replacement"
    keys: tuple[str, ...] = field(default=())
    defaults: Callable[[Any], dict] = _no_defaults
    check: Callable[[Any], None] = _no_check
    discard_after: Callable[[Any], int | None] = _never
    cancel_after: Callable[[Any], int | None] = _never
    all_clients: bool = False
    plan: Callable[[Any, Clients], list[int] | None] = lambda algorithm, clients: None
    time_limit: Callable[[Any], float | None] = _never
