"""m-synchronous SGD: each round, the first ``m`` of the ``n`` gradients in flight; the rest are stopped."""

from dataclasses import dataclass

from afl.errors import config_fail
from afl.rules.rennala import mean_gradient_step
from afl.rules.spec import Rule


@dataclass(frozen=True)
class MSync:
    """A round sends the model to ``concurrency`` workers; once ``buffer_size`` (the ``m`` of
    "m-synchronous") gradients are in, ``x <- x - gamma (1/m) sum g`` and the round's other
    computations are stopped (``cancel_after = 0``), their time wasted. ``buffer_size`` equal to
    ``concurrency`` is plain mini-batch SGD, which waits for every worker."""

    server_lr: float

    def aggregate(self, x, arrivals, taus):
        return mean_gradient_step(x, arrivals, self.server_lr)


def _check(a) -> None:
    if not 1 <= a.buffer_size <= a.concurrency:
        config_fail("algorithm.buffer_size", f"the first {a.buffer_size} of {a.concurrency} gradients of a round "
                    "cannot be taken", f"set it between 1 and algorithm.concurrency ({a.concurrency})")


MSYNC = Rule(
    name="msync", build=lambda a, s, clients: MSync(a.server_lr), batch=lambda a: a.buffer_size, barrier=True,
    gradient=True, keys=("buffer_size", "server_lr"),
    defaults=lambda a: {"buffer_size": a.buffer_size if a.buffer_size is not None else a.concurrency},
    check=_check, cancel_after=lambda a: 0,
)
