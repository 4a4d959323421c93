"""When clients are online: an on/off path per client over virtual time (``timing.availability``).

A path is the times at which a client switches between online and offline, and its state from
each. ``online_at(i, t)`` is client ``i``'s state at ``t``; ``next_switch(i, t)`` its first switch
after ``t`` (``inf``: none). The simulator (``afl.sim.simulator``) schedules each client's next
switch as a timer; what a switch does to the client's tasks is its business, not this module's.

``MarkovAvailability``
    Online and offline periods are exponential with means ``mean_on_i`` and ``mean_off_i``; the
    state at time 0 is drawn from the stationary law ``P(online) = mean_on / (mean_on + mean_off)``.
``DiurnalAvailability``
    A daily cycle: virtual time is cut into ``slots`` slots per ``period``; in the slot of midpoint
    ``t`` client ``i`` is online with probability ``p_i(t) = clip(share (1 + amplitude cos(2 pi (t /
    period - phase_i))), 0, 1)``, each slot drawn apart, ``phase_i`` uniform in [0, 1) (its time zone):
    who is online shifts over the day while about ``share`` of the clients are.
``TraceAvailability``
    Online windows ``[start, end)`` read from a CSV ``client,start,end``; offline outside them.

Random paths are drawn from ``CounterUniforms`` of ``(seed, AVAILABILITY)``, the ``j``-th uniform of a
client for its ``j``-th draw: a path is a function of the seed and the client alone, drawn as far as
the simulation has looked, with nothing to checkpoint.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import numpy as np

from afl.errors import ConfigError
from afl.rng import Stream
from afl.sim.timing import CounterUniforms, csv_records, group_sizes


class _Path:
    """Switch times ``times[i]`` (``times[i][0] = 0``) and the state ``online[i][j]`` from each;
    ``_extend(i, t)`` makes sure the switches up to past ``t`` are known."""

    def _extend(self, client: int, until: float) -> None:
        pass

    def online_at(self, client: int, t: float) -> bool:
        self._extend(client, t)
        return self.online[client][bisect.bisect_right(self.times[client], t) - 1]

    def next_switch(self, client: int, t: float) -> float:
        """The first time after ``t`` at which the client's state changes (``inf``: never)."""
        self._extend(client, t)
        times = self.times[client]
        j = bisect.bisect_right(times, t)
        return times[j] if j < len(times) else math.inf


class MarkovAvailability(_Path):
    """Exponential online and offline periods of means ``mean_on[i]`` and ``mean_off[i]``."""

    def __init__(self, mean_on: np.ndarray, mean_off: np.ndarray, seed: int):
        self.mean_on, self.mean_off = np.asarray(mean_on, float).tolist(), np.asarray(mean_off, float).tolist()
        self.uniforms = CounterUniforms(seed, Stream.AVAILABILITY)
        n = len(self.mean_on)
        self.times: list[list[float]] = [[] for _ in range(n)]
        self.online: list[list[bool]] = [[] for _ in range(n)]

    def _extend(self, client: int, until: float) -> None:
        times, online = self.times[client], self.online[client]
        on, off = self.mean_on[client], self.mean_off[client]
        if not times:  # the stationary state at time 0 (draw 0)
            times.append(0.0)
            online.append(self.uniforms(client, 0) < on / (on + off))
        while times[-1] <= until:  # the j-th period: draw j
            times.append(times[-1] - math.log(self.uniforms(client, len(times))) * (on if online[-1] else off))
            online.append(not online[-1])

    def shares(self) -> np.ndarray:
        """Each client's long-run share of time online, ``mean_on / (mean_on + mean_off)``."""
        on, off = np.asarray(self.mean_on), np.asarray(self.mean_off)
        return on / (on + off)


class DiurnalAvailability(_Path):
    """A daily cycle of online probabilities, each client at its own phase, drawn slot by slot."""

    def __init__(self, n: int, period: float, slots: int, share: float, amplitude: float, seed: int):
        self.period, self.slots, self.share, self.amplitude = period, slots, share, amplitude
        self.uniforms = CounterUniforms(seed, Stream.AVAILABILITY)
        self.phases = diurnal_phases(n, seed).tolist()
        self.times: list[list[float]] = [[] for _ in range(n)]
        self.online: list[list[bool]] = [[] for _ in range(n)]
        self.drawn = [0] * n  # slots drawn so far
        cycle = [self._probabilities(phase) for phase in self.phases]
        self.fixed = [all(p in (0.0, 1.0) for p in ps) and len(set(ps)) == 1 for ps in cycle]

    def probability(self, client: int, t: float) -> float:
        """``p_i(t)`` (the module's docstring)."""
        phase = self.phases[client]
        p = self.share * (1 + self.amplitude * math.cos(2 * math.pi * (t / self.period - phase)))
        return min(max(p, 0.0), 1.0)

    def _probabilities(self, phase: float) -> list[float]:
        """``p`` at the midpoints of one period's slots for a client of ``phase``."""
        out = []
        for k in range(self.slots):
            p = self.share * (1 + self.amplitude * math.cos(2 * math.pi * ((k + 0.5) / self.slots - phase)))
            out.append(min(max(p, 0.0), 1.0))
        return out

    def _extend(self, client: int, until: float) -> None:
        times, online = self.times[client], self.online[client]
        width = self.period / self.slots
        if self.fixed[client]:  # online always or never: no switch to look for
            if not times:
                times.append(0.0)
                online.append(self.probability(client, width / 2) == 1.0)
            return
        while not times or self.drawn[client] * width <= until:
            k = self.drawn[client]
            self.drawn[client] = k + 1
            state = self.uniforms(client, k + 1) < self.probability(client, (k + 0.5) * width)
            if not times:
                times.append(0.0)
                online.append(state)
            elif state != online[-1]:
                times.append(k * width)
                online.append(state)

    def next_switch(self, client: int, t: float) -> float:
        if self.fixed[client]:
            return math.inf
        horizon = t
        while True:  # draw slots until a switch after t is known (each slot may switch)
            self._extend(client, horizon)
            times = self.times[client]
            j = bisect.bisect_right(times, t)
            if j < len(times):
                return times[j]
            horizon = self.drawn[client] * (self.period / self.slots)  # as _extend computes it: one slot more

    def shares(self) -> np.ndarray:
        """Each client's long-run share of time online: the mean of ``p_i`` over one period's slots."""
        return np.array([float(np.mean(self._probabilities(phase))) for phase in self.phases])


def diurnal_phases(n: int, seed: int) -> np.ndarray:
    """Each client's phase in [0, 1) under ``diurnal`` availability: the first ``CounterUniforms`` of
    ``(seed, AVAILABILITY)`` of each client (its slots take the next ones). A function of the seed
    and the client alone, so a figure can recompute it from a run's seed."""
    uniforms = CounterUniforms(seed, Stream.AVAILABILITY)
    return np.array([uniforms(i, 0) for i in range(n)])


class TraceAvailability(_Path):
    """Online windows per client from a trace; offline outside them, and after the last."""

    def __init__(self, windows: list[list[tuple[float, float]]]):
        self.times, self.online = [], []
        self.span = max((end for w in windows for _, end in w), default=0.0)
        for w in windows:
            times, online = [0.0], [False]
            for start, end in w:  # sorted, merged: disjoint and apart
                if start == times[-1]:
                    online[-1] = True
                else:
                    times.append(start)
                    online.append(True)
                times.append(end)
                online.append(False)
            self.times.append(times)
            self.online.append(online)

    def shares(self) -> np.ndarray:
        """Each client's share of the trace's span (to its last window's end, over all clients) online."""
        if self.span == 0:
            return np.zeros(len(self.times))
        return np.array([sum(b - a for a, b, on in zip(t, t[1:], o) if on) / self.span
                         for t, o in zip(self.times, self.online)])


def read_trace(path: Path, n: int) -> TraceAvailability:
    """A ``TraceAvailability`` from a CSV with columns ``client,start,end`` (any row order;
    overlapping or touching windows of a client are merged)."""
    key = "timing.availability.path"
    windows: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    for line, (client, start, end) in csv_records(path, key, ("client", "start", "end")):
        if not 0 <= client < n or not (math.isfinite(start) and start >= 0) or not (math.isfinite(end) and end > start):
            raise ConfigError(f"{key}: {path} line {line}: client must be in 0..{n - 1} and 0 <= start < end "
                              "(finite); fix: correct that line")
        windows[client].append((start, end))
    merged = []
    for w in windows:
        out: list[tuple[float, float]] = []
        for start, end in sorted(w):
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        merged.append(out)
    return TraceAvailability(merged)


def availability(cfg, n: int, seed: int):
    """The availability of the config's ``timing.availability`` section (``cfg``) for ``n`` clients,
    or None for ``kind: always`` (every client online all the time)."""
    if cfg.kind == "markov":
        if cfg.groups:
            sizes = group_sizes([g.fraction for g in cfg.groups], n)
            on = np.repeat([g.mean_on for g in cfg.groups], sizes)
            off = np.repeat([g.mean_off for g in cfg.groups], sizes)
        else:
            on, off = np.full(n, cfg.mean_on), np.full(n, cfg.mean_off)
        return MarkovAvailability(on, off, seed)
    if cfg.kind == "diurnal":
        return DiurnalAvailability(n, cfg.period, cfg.slots, cfg.share, cfg.amplitude, seed)
    if cfg.kind == "trace":
        return read_trace(Path(cfg.path), n)
    return None
