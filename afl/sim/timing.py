"""Task durations: duration = download + compute + upload.

Client ``i`` has a rate ``mu_i``. A task's compute time is ``S / mu_i`` where ``S`` is drawn
from the configured distribution for a client of rate 1: ``exponential`` (Exp(1), so the
compute time is Exp(mu_i), the queueing-theory model), ``uniform(low, high)`` (the first
seed's ``uniform(0, 2)``), ``constant`` (1) or ``lognormal`` (mean 1, log-std ``sigma``).
With ``per: step`` the draw is the time of one local step and is multiplied by the task's
number of local steps, so compute time scales with the work done.

``timing`` and ``rates`` below are the config's ``timing`` and ``timing.rates`` sections (any
object with those attributes): this module knows no whole config.

Speeds may change over virtual time (``timing.modulation``, the third seed's workers whose
"computation frequency varies over time"): a client of speed ``r(t)`` finishes work ``W`` started
at ``t0`` at the ``T`` with ``integral_{t0}^{t0+T} r(t) dt = W`` (``Speeds.compute_time``).
``ConstantSpeeds`` is ``r(t) = mu_i`` (compute time ``W / mu_i``, as above); ``MarkovSpeeds`` a
two-state Markov-modulated rate per client (fast ``mu_i``, slow ``mu_i * slow_factor``); ``TraceSpeeds``
a per-client piecewise-constant trace read from a CSV ``client,time,rate``.
"""

import bisect
import csv
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np

from afl.errors import MAX_TRACE_BYTES, ConfigError, check_size
from afl.rng import Stream, numpy_stream


def client_rates(cfg, n: int, seed: int) -> np.ndarray:
    """The rate ``mu_i`` of each of ``n`` clients (``cfg``: the ``timing.rates`` section), drawn from
    the keyed stream ``(seed, RATES)``: the rates the trainer simulates and the queueing model
    (``afl.queueing.model.network``) predicts with."""
    rng = numpy_stream(seed, Stream.RATES)
    if cfg.kind == "constant":
        return np.full(n, cfg.value)
    if cfg.kind == "groups":
        return np.repeat([g.rate for g in cfg.groups], group_sizes([g.fraction for g in cfg.groups], n))
    if cfg.kind == "lognormal":
        return rng.lognormal(-cfg.sigma**2 / 2, cfg.sigma, size=n)
    if cfg.kind == "uniform":
        return rng.uniform(cfg.low, cfg.high, size=n)
    if cfg.kind == "power":
        return power_rates(n, cfg.exponent)
    return read_rate_trace(Path(cfg.path), n)


def power_rates(n: int, exponent: float) -> np.ndarray:
    """``mu_i = i^-a`` for clients ``i = 1..n`` (``a = exponent``): compute times ``tau_i = i^a``, such as
    the ``tau_i = sqrt(i)`` of Tyurin and Richtárik's and Ringmaster's experiments (``a = 1/2``)."""
    return np.arange(1, n + 1, dtype=float) ** -float(exponent)


def group_sizes(fractions: list[float], n: int) -> np.ndarray:
    """Split ``n`` clients into groups by ``fractions``; rounding leftovers go to the largest remainders."""
    exact = np.asarray(fractions) * n / np.sum(fractions)
    sizes = np.floor(exact).astype(int)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: n - sizes.sum()]] += 1
    return sizes


def csv_records(path: Path, key: str, columns: tuple[str, ...]) -> list[tuple[int, tuple]]:
    """The rows of the CSV at ``path`` (the config key ``key``), which must have ``columns``: its line
    number and its values, the first column an int (a client) and the others floats. A file that
    cannot be read, is larger than ``MAX_TRACE_BYTES``, has no such header or a row that is not
    numbers is one line naming it."""
    check_size(path, key, MAX_TRACE_BYTES, "CSV trace")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror}); fix: give a readable CSV file") from None
    except (UnicodeDecodeError, csv.Error):
        raise ConfigError(f"{key}: {path} is not a CSV text file; fix: give a CSV file with columns "
                          f"{','.join(columns)}") from None
    header = ",".join(columns)
    if not rows or not set(columns) <= set(rows[0]):
        raise ConfigError(f"{key}: {path} needs a header with columns {header}; fix: add the header line '{header}'")
    records = []
    for line, row in enumerate(rows, start=2):
        try:
            records.append((line, (int(row[columns[0]]), *(float(row[c]) for c in columns[1:]))))
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {path} line {line} is not '{header}' numbers; fix: correct that line") from None
    return records


def read_rate_trace(path: Path, n: int) -> np.ndarray:
    """Per-client rates from a CSV with columns ``client,rate`` (one row per client 0..n-1)."""
    key = "timing.rates.path"
    rates = np.full(n, np.nan)
    for line, (client, rate) in csv_records(path, key, ("client", "rate")):
        if not 0 <= client < n or not rate > 0:
            raise ConfigError(f"{key}: {path} line {line}: client must be in 0..{n - 1} and rate > 0; fix: correct that line")
        rates[client] = rate
    missing = np.flatnonzero(np.isnan(rates))
    if missing.size:
        raise ConfigError(f"{key}: {path} has no rate for client {missing[0]} ({missing.size} missing); fix: give one row per client")
    return rates


_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_NORMAL = NormalDist()


def _mix(z: int) -> int:
    """SplitMix64's finaliser (Steele, Lea, Flood 2014): a bijective 64-bit hash."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK
    return z ^ (z >> 31)


class CounterUniforms:
    """Uniforms in ``(0, 1)`` keyed by ``(seed, purpose, client, k)``, counter-based: client ``i``
    has the key ``K_i`` hashed from ``(seed, purpose, i)``, and its ``k``-th uniform is
    ``u = (mix(K_i + (k + 1) * golden) >> 11 + 1/2) / 2^53``, SplitMix64's ``k``-th output. A uniform
    depends on nothing but its client and index: no state to save or replay (the cached keys are a
    function of the seed), a microsecond each."""

    def __init__(self, seed: int, purpose: Stream):
        self.base = _mix(int(np.random.SeedSequence([seed, int(purpose)]).generate_state(1, np.uint64)[0]))
        self.keys: dict[int, int] = {}  # K_i of the clients seen so far

    def __call__(self, client: int, k: int) -> float:
        key = self.keys.get(client)
        if key is None:
            key = self.keys[client] = _mix(self.base ^ _mix(client + 1))
        return ((_mix(key + (k + 1) * _GOLDEN & _MASK) >> 11) + 0.5) * 2.0**-53


class ServiceDraws:
    """The draw ``S`` of each client's ``k``-th task, keyed by ``(seed, client, k)``: the
    ``CounterUniforms`` of ``(seed, DURATION)`` turned into ``S`` by the inverse CDF."""

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.uniforms = CounterUniforms(seed, Stream.DURATION)

    def __call__(self, client: int, k: int) -> float:
        u = self.uniforms(client, k)
        cfg = self.cfg
        if cfg.distribution == "exponential":
            return -math.log(u)
        if cfg.distribution == "uniform":
            return cfg.low + (cfg.high - cfg.low) * u
        if cfg.distribution == "lognormal":
            return math.exp(cfg.sigma * _NORMAL.inv_cdf(u) - cfg.sigma**2 / 2)
        return 1.0


def service_cdf(cfg, s: float) -> float:
    """``P(S <= s)`` for ``ServiceDraws``' draw: ``1 - e^-s`` (exponential), ``(s - low) / (high - low)``
    clipped to [0, 1] (uniform), ``Phi((ln s + sigma^2 / 2) / sigma)`` (lognormal of mean 1), ``[s >= 1]``."""
    if cfg.distribution == "exponential":
        return 1.0 - math.exp(-s) if s > 0 else 0.0
    if cfg.distribution == "uniform":
        return min(max((s - cfg.low) / (cfg.high - cfg.low), 0.0), 1.0)
    if cfg.distribution == "lognormal":
        return _NORMAL.cdf((math.log(s) + cfg.sigma**2 / 2) / cfg.sigma) if s > 0 else 0.0
    return 1.0 if s >= 1.0 else 0.0


def mean_service(cfg) -> float:
    """``E[S]``, the mean of ``ServiceDraws``' draw: ``(low + high) / 2`` for ``uniform``, else 1
    (``exponential`` Exp(1), ``constant`` 1, ``lognormal`` ``exp(sigma Z - sigma^2 / 2)``)."""
    return (cfg.low + cfg.high) / 2 if cfg.distribution == "uniform" else 1.0


def task_duration(cfg, rate: float, steps: int, service: float) -> float:
    """Duration of a task of ``steps`` local steps at a client of rate ``rate``, given its draw ``S``."""
    work = steps if cfg.per == "step" else 1
    return cfg.download + work * service / rate + cfg.upload


def varying_task_duration(cfg, speeds, client: int, start: float, steps: int, service: float) -> float:
    """Duration of a task started at ``start`` by a client whose speed varies (``speeds``): its
    compute phase begins after the download and does the work ``steps * S`` (or ``S``)."""
    work = steps if cfg.per == "step" else 1
    return cfg.download + speeds.compute_time(client, start + cfg.download, work * service) + cfg.upload



# ----------------------------------------------------------------------------- speeds over time


class ConstantSpeeds:
    """Client ``i`` computes at ``mu_i`` forever."""

    varying = False

    def __init__(self, rates: np.ndarray):
        self.rates = np.asarray(rates, dtype=float).tolist()

    def compute_time(self, client: int, start: float, work: float) -> float:
        return work / self.rates[client]

    def mean_rates(self) -> np.ndarray:
        return np.asarray(self.rates)


class _Piecewise:
    """Speeds that are constant between change points: ``times[i][j]`` the ``j``-th change of client
    ``i`` (``times[i][0] = 0``), ``speeds[i][j]`` its speed from then on; ``_extend(i, t)`` makes sure
    the changes up to time ``t`` are known (a trace knows them all; a Markov path draws them)."""

    varying = True

    def _extend(self, client: int, until: float) -> None:
        pass

    def speed_at(self, client: int, t: float) -> float:
        self._extend(client, t)
        times = self.times[client]
        return self.speeds[client][bisect.bisect_right(times, t) - 1]

    def compute_time(self, client: int, start: float, work: float) -> float:
        """The ``T`` with ``integral_{start}^{start+T} speed(t) dt = work`` (speeds are > 0: the
        config and the trace reader refuse others)."""
        self._extend(client, start)
        times, speeds = self.times[client], self.speeds[client]
        j = bisect.bisect_right(times, start) - 1
        t, left = start, work
        while True:
            if j + 1 == len(times):
                self._extend(client, t + left / speeds[j])  # a Markov path: draw past the finish
            end = times[j + 1] if j + 1 < len(times) else math.inf  # a trace: its last speed holds
            if (end - t) * speeds[j] >= left:
                return t + left / speeds[j] - start
            left -= (end - t) * speeds[j]
            t, j = end, j + 1


class MarkovSpeeds(_Piecewise):
    """Two-state Markov-modulated speeds: client ``i`` runs at ``mu_i`` (fast) or
    ``mu_i * slow_factor`` (slow), leaving fast at rate ``to_slow`` and slow at rate ``to_fast``
    (exponential sojourns). Its state at time 0 is drawn from the stationary law
    ``P(slow) = to_slow / (to_slow + to_fast)``. Every draw is a ``CounterUniforms`` of
    ``(seed, SPEED)``, the ``j``-th for the ``j``-th sojourn: a path is a function of the seed
    alone, drawn as far as the simulation has looked, with nothing to checkpoint."""

    def __init__(self, rates: np.ndarray, slow_factor: float, to_slow: float, to_fast: float, seed: int):
        self.rates = np.asarray(rates, dtype=float).tolist()
        self.slow_factor, self.to_slow, self.to_fast = slow_factor, to_slow, to_fast
        self.uniforms = CounterUniforms(seed, Stream.SPEED)
        n = len(self.rates)
        self.times: list[list[float]] = [[] for _ in range(n)]
        self.speeds: list[list[float]] = [[] for _ in range(n)]
        self.slow: list[list[bool]] = [[] for _ in range(n)]

    def _extend(self, client: int, until: float) -> None:
        times, speeds, slow = self.times[client], self.speeds[client], self.slow[client]
        if not times:  # the stationary state at time 0 (draw 0)
            times.append(0.0)
            slow.append(self.uniforms(client, 0) < self.to_slow / (self.to_slow + self.to_fast))
            speeds.append(self.rates[client] * (self.slow_factor if slow[-1] else 1.0))
        while times[-1] <= until:  # the j-th sojourn: draw j
            leave = self.to_fast if slow[-1] else self.to_slow
            times.append(times[-1] - math.log(self.uniforms(client, len(times))) / leave)
            slow.append(not slow[-1])
            speeds.append(self.rates[client] * (self.slow_factor if slow[-1] else 1.0))

    def mean_rates(self) -> np.ndarray:
        """Long-run mean speeds ``mu_i (1 - P(slow) (1 - slow_factor))``."""
        p_slow = self.to_slow / (self.to_slow + self.to_fast)
        return np.asarray(self.rates) * (1 - p_slow * (1 - self.slow_factor))


class TraceSpeeds(_Piecewise):
    """Speeds read from a trace: client ``i`` runs at the ``rate`` of its latest row with
    ``time <= t`` (each client needs a row at time 0; the last rate holds after the trace ends)."""

    def __init__(self, times: list[list[float]], speeds: list[list[float]]):
        self.times, self.speeds = times, speeds

    def mean_rates(self) -> np.ndarray:
        """Each client's speed averaged over the trace's span (to its last change point, over all
        clients), or its one rate."""
        end = max(t[-1] for t in self.times)
        out = []
        for times, speeds in zip(self.times, self.speeds):
            if end == 0:
                out.append(speeds[0])
                continue
            edges = [*times, end] if times[-1] < end else times
            out.append(sum(s * (b - a) for s, a, b in zip(speeds, edges, edges[1:])) / end)
        return np.asarray(out)


def read_speed_trace(path: Path, n: int) -> TraceSpeeds:
    """A ``TraceSpeeds`` from a CSV with columns ``client,time,rate`` (any row order)."""
    key = "timing.modulation.path"
    points: list[dict[float, float]] = [{} for _ in range(n)]
    for line, (client, t, rate) in csv_records(path, key, ("client", "time", "rate")):
        if not 0 <= client < n or not (math.isfinite(t) and t >= 0) or not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"{key}: {path} line {line}: client must be in 0..{n - 1}, time >= 0 and rate > 0; "
                              "fix: correct that line")
        if t in points[client]:
            raise ConfigError(f"{key}: {path} line {line}: client {client} has two rates at time {t:g}; "
                              "fix: keep one of them")
        points[client][t] = rate
    for client, p in enumerate(points):
        if 0.0 not in p:
            raise ConfigError(f"{key}: {path} has no rate of client {client} at time 0; "
                              f"fix: add a row '{client},0,RATE'")
    times = [sorted(p) for p in points]
    return TraceSpeeds(times, [[p[t] for t in ts] for p, ts in zip(points, times)])


def speeds(cfg, rates: np.ndarray, seed: int):
    """The speeds of the config's ``timing`` section (``cfg``) over time, from the rates ``mu_i``."""
    mod = cfg.modulation
    if mod.kind == "markov":
        return MarkovSpeeds(rates, mod.slow_factor, mod.to_slow, mod.to_fast, seed)
    if mod.kind == "trace":
        return read_speed_trace(Path(mod.path), len(rates))
    return ConstantSpeeds(rates)
