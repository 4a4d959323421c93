"""Server rules: each turns a batch of arrivals into the next global model.

One module per rule family (``fedavg``: ``sfl`` and ``afl``; ``fedasync``; ``fedbuff``;
``asyncsgd``; ``rennala``; ``ringmaster``; ``ringleader``; ``msync``; ``fadas``; ``mindflayer``), each ending with its ``Rule`` (``afl.rules.spec``): the facts the rest of afl
asks for (how many arrivals form an update, synchronous or not, model or gradient, its
defaults and checks). ``staleness`` holds the staleness functions ``s(tau)`` and ``lr`` the
step-size rules the rules use. The simulator buffers arrivals until a rule's batch is full,
computes each arrival's staleness ``tau = t - v``, and the run applies ``aggregate``.

A rule outside afl (docs/extending.md) is named in ``algorithm.name`` by import path,
``"package.module:OBJECT"``, or by the name of an installed entry point of the group
``afl.rules``; either gives a ``Rule`` that ``get`` loads once and treats as a built-in one.
"""

from afl import extensions
from afl.errors import config_fail
from afl.rules import staleness
from afl.rules.asyncsgd import ASYNCSGD
from afl.rules.fedasync import FEDASYNC
from afl.rules.fadas import FADAS
from afl.rules.fedavg import AFL, SFL
from afl.rules.fedbuff import FEDBUFF
from afl.rules.mindflayer import MINDFLAYER
from afl.rules.msync import MSYNC
from afl.rules.rennala import RENNALA
from afl.rules.ringleader import RINGLEADER
from afl.rules.ringmaster import RINGMASTER
from afl.rules.spec import Arrival, Clients, Rule

__all__ = ["RULES", "Arrival", "Clients", "Rule", "get", "make", "validate"]

RULES: dict[str, Rule] = {r.name: r for r in (SFL, AFL, FEDASYNC, FEDBUFF, ASYNCSGD, RENNALA, RINGMASTER, RINGLEADER,
                                                 MSYNC, FADAS, MINDFLAYER)}

# Keys unset by default (what they name): setting one for a rule that does not read it is a mistake.
_UNSET_UNLESS_READ = {"buffer_size": "a buffer", "max_delay": "a delay threshold R", "stop_stale": "stopped computations",
                      "drop_stale": "dropped stale updates", "server_beta1": "server moments",
                      "server_beta2": "server moments", "server_eps": "server moments",
                      "time_limit": "a time limit per attempt"}


_LOADED: dict[str, Rule] = {}  # rules from outside afl, by the name the config gives


def get(name: str) -> Rule:
    """The ``Rule`` of ``algorithm.name``: a built-in one, or one loaded from outside afl (a
    ``ConfigError`` naming ``algorithm.name`` if it cannot be)."""
    rule = RULES.get(name) or _LOADED.get(name)
    if rule is None:
        rule = extensions.load(extensions.RULE_GROUP, "algorithm.name", name)
        if not isinstance(rule, Rule):
            config_fail("algorithm.name", f"{name} is a {type(rule).__name__}, not an afl.rules.Rule",
                        "point it at a Rule(name=..., build=...) object (docs/extending.md)")
        _LOADED[name] = rule
    return rule


def staleness_function(algorithm):
    """``s(tau)`` of the config's ``algorithm.staleness`` section, parameters bound."""
    st = algorithm.staleness
    return staleness.make(st.name, **{k: getattr(st, k) for k in ("a", "b", "beta") if getattr(st, k) is not None})


def make(algorithm, clients: Clients):
    """The aggregator of the config's ``algorithm`` section for ``clients`` (their routing p, asyncsgd's
    ``1/(n p_i)``; their rates and timing, mindflayer's attempts)."""
    return get(algorithm.name).build(algorithm, staleness_function(algorithm), clients)


def validate(algorithm) -> None:
    """The checks of the rule named in ``algorithm``, and keys set that it does not read."""
    rule = get(algorithm.name)
    for key, noun in _UNSET_UNLESS_READ.items():
        if getattr(algorithm, key) not in (None, False) and key not in rule.keys:
            owners = [r.name for r in RULES.values() if key in r.keys]
            config_fail(f"algorithm.{key}", f"only {'/'.join(owners)} has {noun}, not {rule.name}",
                        f"remove algorithm.{key}")
    if algorithm.step_rule != "constant" and "step_rule" not in rule.keys:
        owners = [r.name for r in RULES.values() if "step_rule" in r.keys]
        config_fail("algorithm.step_rule", f"the delay-adaptive step applies to {'/'.join(owners)}, not {rule.name}",
                    f"remove algorithm.step_rule or use algorithm.name: {owners[0]}")
    if rule.cancel_after(algorithm) is not None and algorithm.selection != "without_replacement":
        config_fail("algorithm.selection", f"{rule.name} stops tasks in flight, which needs one task per client, "
                    f"not selection {algorithm.selection}", "set algorithm.selection: without_replacement")
    rule.check(algorithm)
