"""A run: a resolved config wired, simulated, recorded and resumable.

``build``
    The one place a config becomes a wired run (federation, model, workload, rule, simulation);
    it owns the update budget and the round semantics.
``train``
    ``afl train``: build, simulate, write results atomically; resume from a checkpoint.
``federation``
    The dataset on the training device, its client shards, the client rates and the routing.
``recorder``
    What a run records (the update, eval and client tables; ``run.json``).
``checkpoint``
    A run's whole state in one file, written atomically, loaded without code execution.
``pilot``
    The routing bound's constants ``A, L, sigma, zeta`` from a short AsyncSGD run
    (``pilot_constants``, ``resolve_constants``), and ``optimal_routing``: a config's
    ``algorithm.routing: {optimize: ...}`` made a vector when its run starts.
"""
