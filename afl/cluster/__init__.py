"""The cluster side: what runs on a login node. It imports no torch at import time.

``launch``
    ``afl launch``: one cell of a grid, locally or as a SLURM job through submitit, and the wait.
``pipeline``
    The Snakemake workflow's grids: cells, their names, their SLURM settings, their logs.
``plan``
    ``afl plan``: per experiment, cells, pending cells, jobs, resources and the estimated work of
    a cell; a short command that loads torch once for the models' FLOPs.
"""
