import asyncio
import time

import pytest

from afl.sim.clock import Deadlock, run


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


def test_ties_break_in_the_same_order_every_run():
    async def main():
        out = []

        async def worker(i):
            await asyncio.sleep(1.0)
            out.append(i)

        await asyncio.gather(*(worker(i) for i in range(50)))
        return out

    assert run(main()) == run(main())


def test_waiting_forever_is_a_deadlock_not_a_hang():
    async def main():
        await asyncio.get_running_loop().create_future()

    with pytest.raises(Deadlock):
        run(main())
