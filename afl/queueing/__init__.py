"""Queueing theory of generalized AsyncSGD: the closed Jackson network, its routing, the optimal time.

Callers import from the submodule that holds what they need (this package re-exports nothing):

``network``
    The closed Jackson network's stationary analysis (torch, differentiable): Buzen's
    normalising constants, throughput, queue lengths, utilisation, relative delay, sojourn
    time, mean-value analysis as a cross-check, and ``predict`` (every ``Prediction`` at
    once); ``QueueingError`` and the input checks the other modules share.
``routing``
    The second seed's working bound ``B(p)`` and its ``BoundConstants``; ``optimize_routing``,
    ``optimize_concurrency`` and the ``power_routing`` family.
``rounds``
    The synchronous round: ``expected_max_duration``, the slowest of ``c`` task durations.
``model``
    A config read as a network: ``network(cfg) = (mu, p, m)``, ``jackson_reasons`` (where the
    model is not exact) and the trainer's prediction; with clients that come and go,
    ``online_throughput`` (``mu_i a_i``) and ``online_shares``.
``measure``
    The simulated counterparts, for the workflow's figures: batch-means standard errors,
    per-client staleness, update rate, Student-t intervals.
``optimal``
    Tyurin and Richtárik's optimal time with fixed compute times (NumPy): the prefix harmonic
    means ``H_m``, ``t(m) = H_m (L Delta/eps + sigma^2 L Delta/(m eps^2))`` and its best ``m*``
    (``optimal_time``), Rennala's batch ``S``, Ringmaster's ``collection_time`` and the exact
    ``collect_time_fixed``; ``mean_compute_times`` reads a config's clients as times ``tau_i``.
``cli``
    ``afl queue predict | optimize | optimal``; it imports the torch modules only when a command runs.

The bound's constants from a pilot run (``resolve_constants``, ``optimal_routing``) live in
``afl.run.pilot``: a pilot is a run, and this package sits below ``afl.run`` (only ``cli``
drives runs).
"""
