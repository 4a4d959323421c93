"""The cluster side: what runs on a login node. It imports no torch at import time.

``worker``
    Worker processes that import torch once and run cells one after another (``Pool``): the local
    workflow's run rules and SLURM tasks run their cells on them.
``task``
    What runs in a SLURM job: ``CellTask``, its k cells on a pool of workers, checkpointed on USR2.
``array``
    Cells as SLURM job arrays through submitit, waited for by one process: re-attach, per-cell
    outcomes and failure reports (the workflow's submit rules, ``afl launch --executor slurm``).
``launch``
    ``afl launch``: one cell of a grid, here or as a SLURM job, and the wait.
``pipeline``
    The Snakemake workflow's grids: cells, their names, their SLURM settings, their logs.
``plan``
    ``afl plan``: per experiment, cells, pending cells, jobs, resources and the estimated work of
    a cell; a short command that loads torch once for the models' FLOPs.
"""
