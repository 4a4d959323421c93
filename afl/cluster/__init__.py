"""The cluster side: what runs on a login node. It imports no torch.

``launch``
    ``afl launch``: one cell of a grid, locally or as a SLURM job through submitit, and the wait.
``pipeline``
    The Snakemake workflow's grids: cells, their names, their SLURM settings, their logs.
"""
