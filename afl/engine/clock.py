"""A virtual-time asyncio event loop: nothing ever sleeps for real.

``VirtualClockLoop.time()`` returns a virtual clock. When no callback is ready,
the loop jumps the clock straight to the earliest scheduled timer instead of
blocking, so ``asyncio.sleep``, ``call_at``, futures and tasks work unchanged
while no wall-clock time passes. Timers fire in order of their virtual time;
ties fall back to the heap order of their scheduling, which is the same in
every run with the same inputs, so event order is deterministic.
"""

import asyncio


class Deadlock(RuntimeError):
    """Raised when coroutines wait on each other with no timer left to fire."""


class _JumpSelector:
    """Stands in for the I/O selector: waiting ``timeout`` means jumping the clock."""

    def __init__(self, loop: "VirtualClockLoop"):
        self._loop = loop

    def select(self, timeout):
        if timeout is None:
            raise Deadlock("virtual clock: nothing is scheduled but the simulation is not finished")
        if timeout > 0:
            self._loop._now = max(self._loop._now, self._loop._scheduled[0]._when)
        return []

    def close(self):
        pass


class VirtualClockLoop(asyncio.BaseEventLoop):
    """An event loop on virtual time, for simulations without I/O."""

    def __init__(self, start: float = 0.0):
        super().__init__()
        self._now = float(start)
        self._selector = _JumpSelector(self)

    def time(self) -> float:
        return self._now

    def _process_events(self, event_list):
        pass

    def _write_to_self(self):
        pass


def run(coro, start: float = 0.0):
    """Run ``coro`` to completion on a fresh virtual clock starting at ``start``."""
    loop = VirtualClockLoop(start)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
