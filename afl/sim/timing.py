"""Task durations: duration = download + compute + upload.

Client ``i`` has a rate ``mu_i``. A task's compute time is ``S / mu_i`` where ``S`` is drawn
from the configured distribution for a client of rate 1: ``exponential`` (Exp(1), so the
compute time is Exp(mu_i), the queueing-theory model), ``uniform(low, high)`` (the first
seed's ``uniform(0, 2)``), ``constant`` (1) or ``lognormal`` (mean 1, log-std ``sigma``).
With ``per: step`` the draw is the time of one local step and is multiplied by the task's
number of local steps, so compute time scales with the work done.

``timing`` and ``rates`` below are the config's ``timing`` and ``timing.rates`` sections (any
object with those attributes): this module knows no whole config.
"""

import csv
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np

from afl.errors import ConfigError
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
    return read_rate_trace(Path(cfg.path), n)


def group_sizes(fractions: list[float], n: int) -> np.ndarray:
    """Split ``n`` clients into groups by ``fractions``; rounding leftovers go to the largest remainders."""
    exact = np.asarray(fractions) * n / np.sum(fractions)
    sizes = np.floor(exact).astype(int)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: n - sizes.sum()]] += 1
    return sizes


def read_rate_trace(path: Path, n: int) -> np.ndarray:
    """Per-client rates from a CSV with columns ``client,rate`` (one row per client 0..n-1)."""
    key = "timing.rates.path"
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror}); fix: give a readable CSV file") from None
    if not rows or not {"client", "rate"} <= set(rows[0]):
        raise ConfigError(f"{key}: {path} needs a header with columns client,rate; fix: add the header line 'client,rate'")
    rates = np.full(n, np.nan)
    for line, row in enumerate(rows, start=2):
        try:
            client, rate = int(row["client"]), float(row["rate"])
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {path} line {line} is not 'client,rate' numbers; fix: correct that line") from None
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


class ServiceDraws:
    """The draw ``S`` of each client's ``k``-th task, keyed by ``(seed, client, k)``.

    Counter-based: client ``i`` has the key ``K_i`` hashed from ``(seed, DURATION, i)``, and its
    ``k``-th draw comes from the uniform ``u = (mix(K_i + (k + 1) * golden) >> 11 + 1/2) / 2^53``
    in ``(0, 1)``, SplitMix64's ``k``-th output, turned into ``S`` by the inverse CDF. A draw
    depends on nothing but its client and index: no state to save or replay (the cached keys
    are a function of the seed), a microsecond each.
    """

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.base = _mix(int(np.random.SeedSequence([seed, int(Stream.DURATION)]).generate_state(1, np.uint64)[0]))
        self.keys: dict[int, int] = {}  # K_i of the clients seen so far

    def __call__(self, client: int, k: int) -> float:
        key = self.keys.get(client)
        if key is None:
            key = self.keys[client] = _mix(self.base ^ _mix(client + 1))
        u = ((_mix(key + (k + 1) * _GOLDEN & _MASK) >> 11) + 0.5) * 2.0**-53
        cfg = self.cfg
        if cfg.distribution == "exponential":
            return -math.log(u)
        if cfg.distribution == "uniform":
            return cfg.low + (cfg.high - cfg.low) * u
        if cfg.distribution == "lognormal":
            return math.exp(cfg.sigma * _NORMAL.inv_cdf(u) - cfg.sigma**2 / 2)
        return 1.0


def task_duration(cfg, rate: float, steps: int, service: float) -> float:
    """Duration of a task of ``steps`` local steps at a client of rate ``rate``, given its draw ``S``."""
    work = steps if cfg.per == "step" else 1
    return cfg.download + work * service / rate + cfg.upload
