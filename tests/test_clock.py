import asyncio
import heapq
import json
import os
import subprocess
import sys
import time

import pytest

from afl.sim.clock import Deadlock, run
from helpers import REPO


def test_sleep_jumps_the_clock_without_real_waiting():
    async def main():
        loop = asyncio.get_running_loop()
        order = []

        async def worker(name, delay):
            await asyncio.sleep(delay)
            order.append((name, loop.time()))

        await asyncio.gather(worker("slow", 1e6), worker("fast", 2.5), worker("mid", 5.0))
        return order, loop.time()

    t0 = time.perf_counter()
    order, end = run(main())
    assert time.perf_counter() - t0 < 1.0  # a million virtual seconds, no real wait
    assert order == [("fast", 2.5), ("mid", 5.0), ("slow", 1e6)]
    assert end == 1e6


def test_call_at_and_start_offset():
    async def main():
        loop = asyncio.get_running_loop()
        fired = loop.create_future()
        loop.call_at(loop.time() + 7.0, fired.set_result, "x")
        return await fired, loop.time()

    assert run(main(), start=100.0) == ("x", 107.0)


def test_simultaneous_timers_fire_first_scheduled_first():
    """The documented tie-break (afl/sim/clock.py): timers fire in ``(time, seq)`` order, ``seq``
    numbering them as scheduled, so equal times fire first-scheduled-first."""

    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        for name in ["c", "a", "e", "b", "d"]:  # scheduled in this order (not sorted, not reversed)
            loop.call_at(5.0, fired.append, name)
        loop.call_at(3.0, fired.append, "earlier time, scheduled last")
        # Scheduled at time 3, for time 5: after the five scheduled at time 0.
        loop.call_at(3.0, lambda: loop.call_at(5.0, fired.append, "scheduled at time 3"))
        await asyncio.sleep(10.0)
        return fired

    assert run(main()) == ["earlier time, scheduled last", "c", "a", "e", "b", "d", "scheduled at time 3"]


def test_sleeping_tasks_with_equal_wake_times_resume_in_the_order_they_slept():
    async def main():
        out = []

        async def worker(i):
            await asyncio.sleep(1.0)
            out.append(i)

        await asyncio.gather(*(worker(i) for i in range(50)))  # gather starts the tasks in order 0..49
        return out

    assert run(main()) == list(range(50))


def test_call_at_seq_rebuilds_a_timer_with_its_own_tie_breaking_number():
    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        first = loop.call_at(2.0, fired.append, "seq 100")
        second = loop.call_at(2.0, fired.append, "seq 101")
        loop.call_at_seq(2.0, 7, fired.append, "seq 7")  # restored from a checkpoint: ties before both
        loop.call_at_seq(2.0, 200, fired.append, "seq 200")
        await asyncio.sleep(3.0)
        return fired, first.seq, second.seq

    fired, first, second = run(main(), first_seq=100)
    assert (first, second) == (100, 101)
    assert fired == ["seq 7", "seq 100", "seq 101", "seq 200"]


# Twelve workers waking every 0.5, 1 or 1.5 (exact binary fractions): most wake times are shared.
TIES_PROGRAM = """
import asyncio
from afl.sim.clock import run

async def main():
    loop = asyncio.get_running_loop()
    out = []

    async def worker(i):
        for _ in range(4):
            await asyncio.sleep(0.5 * (1 + i % 3))
            out.append([i, loop.time()])

    await asyncio.gather(*(worker(i) for i in range(12)))
    return out
"""


def _ties_reference():
    """The same wake-ups by the documented rule, without asyncio: a heap of (time, schedule counter)."""
    heap, counter, out = [], 0, []
    for i in range(12):  # each worker's first sleep, scheduled in task order at time 0
        heapq.heappush(heap, (0.5 * (1 + i % 3), counter, i, 4))
        counter += 1
    while heap:
        t, _, i, left = heapq.heappop(heap)
        out.append([i, t])
        if left > 1:  # it sleeps again at once, after the wake-ups already due (later seq)
            heapq.heappush(heap, (t + 0.5 * (1 + i % 3), counter, i, left - 1))
            counter += 1
    return out


def test_ties_break_in_the_documented_order_in_this_and_fresh_processes():
    expected = _ties_reference()
    assert len(expected) == 48 and expected[:4] == [[0, 0.5], [3, 0.5], [6, 0.5], [9, 0.5]]
    assert expected[4:12] == [[1, 1.0], [4, 1.0], [7, 1.0], [10, 1.0], [0, 1.0], [3, 1.0], [6, 1.0], [9, 1.0]]
    namespace: dict = {}
    exec(TIES_PROGRAM, namespace)
    assert run(namespace["main"]()) == expected
    assert run(namespace["main"]()) == expected
    # Two fresh interpreters (other string-hash seeds, other object addresses) give the same order.
    script = TIES_PROGRAM + "\nimport json\nprint(json.dumps(run(main())))\n"
    for hash_seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              cwd=REPO, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout) == expected


def test_waiting_forever_is_a_deadlock_not_a_hang():
    async def main():
        await asyncio.get_running_loop().create_future()

    with pytest.raises(Deadlock):
        run(main())
