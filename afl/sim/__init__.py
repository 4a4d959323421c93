"""The event simulation: clients, tasks, queues and a server in virtual time; no torch, no config.

``clock``
    ``VirtualClock``: an asyncio event loop whose time is virtual (nothing sleeps for real).
``tasks``
    ``Task``: one client's job from dispatch to application.
``timing``
    Task durations (download + compute + upload) from counter-keyed draws; ``client_rates``.
``availability``
    When each client is online: on/off paths (Markov, diurnal, a trace) from counter-keyed draws.
``selection``
    ``Selector``: which client gets the next task (uniform, with or without replacement, or a
    routing vector) among the online clients, from the server's own random stream.
``executor``
    ``LazyExecutor``: computes pending tasks' results only when the server needs one, in batches,
    through a workload (``afl.learning.workloads``) it knows only as a callable.
``simulator``
    ``Simulation``: the event loop's server and clients, with plain parameters; the server rule
    is a callable ``server(x, tasks, taus, version, now) -> (x_new, norm)``.

Above it: ``afl.rules`` (what the server does with arrivals), ``afl.learning`` (what a task
computes) and ``afl.run.build`` (which wires the three from a config).
"""
