"""A virtual-time asyncio event loop: nothing ever sleeps for real.

``VirtualClockLoop.time()`` returns a virtual clock. When no callback is ready, the loop
jumps the clock straight to the earliest scheduled timer instead of blocking, so
``asyncio.sleep``, ``call_at``, futures and tasks work unchanged while no wall-clock time
passes.

Timers fire in order of ``(time, seq)``, where ``seq`` numbers timers in the order they were
scheduled: ties between equal times break first-scheduled-first, the same way in every run.
A timer can be re-created with its original ``seq`` (``call_at_seq``), which is how a
simulation restored from a checkpoint rebuilds its event queue exactly.

Just before each jump of the clock the loop is quiescent: no callback is ready and every
coroutine waits on a timer in the future. ``on_quiescent`` is called there, the one point
where a simulation's state is complete and safe to save.

The loop has no I/O, so it replaces ``BaseEventLoop._run_once`` with the same iteration
minus the selector: its heap holds ``(time, seq, handle)`` tuples, compared in C rather
than through ``TimerHandle.__lt__`` (the heap operations were most of an event's cost).
"""

import asyncio
import heapq
from typing import Callable


class Deadlock(RuntimeError):
    """Raised when coroutines wait on each other with no timer left to fire."""


class _Timer(asyncio.TimerHandle):
    __slots__ = ("seq",)


class VirtualClockLoop(asyncio.BaseEventLoop):
    """An event loop on virtual time, for simulations without I/O."""

    def __init__(self, start: float = 0.0, first_seq: int = 0):
        super().__init__()
        self._now = float(start)
        self.next_seq = first_seq  # the seq the next timer gets (saved with a checkpoint)
        self.on_quiescent: Callable[[], None] | None = None

    def time(self) -> float:
        return self._now

    def call_at(self, when, callback, *args, context=None):
        self.next_seq += 1
        return self.call_at_seq(when, self.next_seq - 1, callback, *args, context=context)

    def call_at_seq(self, when, seq: int, callback, *args, context=None):
        """``call_at`` with an explicit tie-breaking number (to rebuild a saved event queue)."""
        self._check_closed()
        timer = _Timer(when, callback, args, self, context)
        timer.seq = seq
        heapq.heappush(self._scheduled, (when, seq, timer))
        timer._scheduled = True
        return timer

    def _run_once(self):
        """One iteration of ``BaseEventLoop._run_once`` (Python 3.11) on virtual time.

        Drop cancelled timers (all of them once they are most of the heap, else those at its
        head); if nothing is ready, call ``on_quiescent`` and jump the clock to the next
        timer; move every timer due by then to the ready queue in ``(time, seq)`` order;
        run the callbacks that were ready at the start of this step.
        """
        timers, ready = self._scheduled, self._ready
        if len(timers) > 100 and self._timer_cancelled_count * 2 > len(timers):
            timers[:] = [entry for entry in timers if not entry[2]._cancelled]
            heapq.heapify(timers)
            self._timer_cancelled_count = 0
        while timers and timers[0][2]._cancelled:
            self._timer_cancelled_count -= 1
            heapq.heappop(timers)[2]._scheduled = False
        if not ready and not self._stopping:
            if not timers:
                raise Deadlock("virtual clock: nothing is scheduled but the simulation is not finished")
            if timers[0][0] > self._now:
                if self.on_quiescent is not None:
                    self.on_quiescent()
                self._now = timers[0][0]
        end = self._now + self._clock_resolution
        while timers and timers[0][0] < end:
            handle = heapq.heappop(timers)[2]
            handle._scheduled = False
            ready.append(handle)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()

    def _process_events(self, event_list):
        pass

    def _write_to_self(self):
        pass


def run(coro, start: float = 0.0, first_seq: int = 0, on_quiescent: Callable[[], None] | None = None):
    """Run ``coro`` to completion on a fresh virtual clock starting at ``start``."""
    loop = VirtualClockLoop(start, first_seq)
    loop.on_quiescent = on_quiescent
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.on_quiescent = None
        _cancel_all(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _cancel_all(loop: VirtualClockLoop) -> None:
    """Cancel what an interrupted run left waiting (as ``asyncio.run`` does), silently."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
