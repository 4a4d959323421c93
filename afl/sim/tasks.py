"""A task: one client's local job, from dispatch to the application of its result."""

from dataclasses import dataclass
from typing import Any


@dataclass
class Task:
    id: int  # global dispatch order
    client: int
    index: int  # the client's own task count: keys the task's random streams
    base_version: int  # the version v of the model the task was sent
    base: Any  # x_v (a flat parameter tensor), never modified in place
    dispatch_time: float
    duration: float  # virtual service time: download + compute + upload
    start_time: float = float("nan")  # when the client started it (later than dispatch if queued)
    timer_seq: int = -1  # tie-breaking number of its completion timer (see afl.sim.clock)
    cut: bool = False  # stopped at the rule's time limit: no result
