"""Queueing theory of generalized AsyncSGD: the closed Jackson network, its routing.

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
    model is not exact) and the trainer's prediction.
``measure``
    The simulated counterparts, for the workflow's figures: batch-means standard errors,
    per-client staleness, update rate, Student-t intervals.
``cli``
    ``afl queue predict | optimize``; it imports the torch modules only when a command runs.

The bound's constants from a pilot run (``resolve_constants``, ``optimal_routing``) live in
``afl.run.pilot``: a pilot is a run, and this package sits below ``afl.run`` (only ``cli``
drives runs).
"""
