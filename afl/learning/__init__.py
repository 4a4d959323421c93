"""Local learning: what a task computes on its client.

``local``
    One task's plan (``LocalPlan``), its step count, its random draws and its result.
``models``
    The models (logistic regression, MLP, the seeds' CNNs, ResNet-20) and ``evaluate``.
``trainer``
    ``BatchedTrainer``: the local work of many tasks at once; ``local_step`` is the training
    step a reader opens first, the grouped-model and fused-optimizer machinery sits below it.
``workloads``
    What the executor calls: ``TrainingWorkload`` (local training) or ``NullWorkload``.
``reference``
    The test oracle: one task at a time through ``torch.nn`` and ``torch.optim``.
"""
