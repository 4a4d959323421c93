"""Batched local training (afl.learning.trainer) against the sequential reference (afl.learning.local).

The equality tests run in float64, where the two paths agree to rounding (1e-9), so any
difference in semantics shows; float32 runs agree to float tolerance on short runs.
"""

import numpy as np
import pytest
import torch

from afl import params
from afl.learning import models
from afl.learning.tables import FusedOptimizer
from afl.learning.trainer import BatchedTrainer, Options
from afl.rng import Stream, torch_stream
from afl.learning.local import LocalPlan, augment, draw_epoch, epoch_lr, gradient_batch, num_epochs, num_steps
from afl.learning.reference import local_gradient, local_train

SIZES = [40, 37, 5, 100, 18]  # batch 16: short last batches (8, 5, 5, 4, 2), one shard below a batch


def setup(name, shape, dtype=torch.float64, sizes=SIZES, seed=0):
    """A model, random data, disjoint shards of ``sizes`` and a different starting model per task."""
    g = torch.Generator().manual_seed(seed)
    model = models.build(name, 10, shape, torch.Generator().manual_seed(0)).to(dtype)
    n = sum(sizes) + 20
    x = torch.randn(n, *shape, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=g)
    perm = torch.randperm(n, generator=g).numpy()
    cuts = np.cumsum([0, *sizes])
    shards = [np.sort(perm[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    bases = [params.flatten(models.build(name, 10, shape, torch.Generator().manual_seed(i + 1))).to(dtype)
             for i in range(len(sizes))]
    return model, x, y, shards, bases


def gens(count, index=3):
    return [torch_stream(0, Stream.TRAIN, client, index) for client in range(count)]


def plan(**kw):
    base = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, epochs=2, steps=None,
                lr_rule="delay_aware", lr_alpha=0.1, delay=0.0, patience=None)
    return base | kw


def plans_for(count, **kw):
    return [LocalPlan(**plan(**kw, delay=0.7 * i)) for i in range(count)]  # delay-aware: a rate per task


def assert_same(got, ref, tol):
    for g, r in zip(got, ref):
        assert g.steps == r.steps
        assert g.train_loss == pytest.approx(r.train_loss, rel=tol, abs=tol)
        torch.testing.assert_close(g.vector, r.vector, rtol=tol, atol=tol)


CASES = {
    "logreg-sgd": ("logreg", (1, 6, 6), {}),
    "mlp-adam": ("mlp", (1, 6, 6), {"optimizer": "adam", "lr": 1e-2}),
    "cnn-adam": ("cnn", (1, 6, 6), {"optimizer": "adam", "lr": 1e-2}),
    "resnet20-sgd-augment": ("resnet20", (3, 8, 8), {"augment": True}),
    "mlp-steps-constant": ("mlp", (1, 6, 6), {"epochs": None, "steps": 7, "lr_rule": "constant", "momentum": 0.0}),
    "mlp-early-stopping": ("mlp", (1, 6, 6), {"epochs": 8, "patience": 1, "lr": 0.5}),
    # Plain SGD: the linear layers step themselves in their backward pass (grouped._LinearSGD),
    # the CNN's convolutions through the optimizer.
    "mlp-plain-sgd": ("mlp", (1, 6, 6), {"momentum": 0.0, "weight_decay": 0.0}),
    "cnn-plain-sgd": ("cnn", (1, 6, 6), {"momentum": 0.0, "weight_decay": 0.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_training_equals_the_sequential_reference(case):
    name, shape, kw = CASES[case]
    model, x, y, shards, bases = setup(name, shape)
    plans = plans_for(len(shards), **kw)
    trainer = BatchedTrainer(model, x, y, Options(precision="fp32"))
    assert trainer.fused_sgd(FusedOptimizer(plans[0], [])) == case.endswith("plain-sgd")
    got = trainer.train(bases, shards, plans, gens(len(shards)))
    ref = [local_train(model, b, x, y, torch.from_numpy(s), p, g)
           for b, s, p, g in zip(bases, shards, plans, gens(len(shards)))]
    assert_same(got, ref, 1e-9)
    if case == "mlp-early-stopping":  # some tasks stopped early, at different epochs, others ran all 8
        planned = [8 * -(-len(s) // 16) for s in shards]
        assert any(r.steps < n for r, n in zip(ref, planned)) and any(r.steps == n for r, n in zip(ref, planned))


@pytest.mark.blas
@pytest.mark.parametrize("name,shape,batch", [("cnn", (1, 6, 6), 16), ("resnet20", (3, 8, 8), 16),
                                              ("mlp", (1, 6, 6), 16), ("logreg", (1, 6, 6), 16),
                                              ("logreg", (1, 6, 6), 64)])
def test_batched_gradients_equal_the_sequential_reference(name, shape, batch):
    # The batched linear layers' own backward (weight gradient g^T h) and, at 64 samples a task
    # (at least 256 rows), the log-softmax through the transposed rows: the reference's gradients.
    # Softmax regression's in closed form, at batch 16 with shards shorter than a batch (padding).
    model, x, y, shards, bases = setup(name, shape, sizes=SIZES if batch == 16 else (64, 70, 80, 66, 90))
    trainer = BatchedTrainer(model, x, y, Options(precision="fp32"))
    assert trainer.closed_form == (name == "logreg")
    got = trainer.gradients(bases, shards, batch, gens(5), True)
    ref = [local_gradient(model, b, x, y, torch.from_numpy(s), batch, g, True)
           for b, s, g in zip(bases, shards, gens(5))]
    assert_same(got, ref, 1e-9)


@pytest.mark.blas
def test_softmax_regression_gradients_in_float32_match_autograd_within_float_tolerance():
    """The closed form in float32 at a docs cell's shape (whole shards of up to 1,024 samples, 60
    features, 10 classes) against autograd through the same grouped forward pass: 1e-5."""
    model, x, y, shards, bases = setup("logreg", (60,), torch.float32, sizes=(1024, 952, 700))
    closed = BatchedTrainer(model, x, y, Options(precision="fp32"))
    autograd = BatchedTrainer(model, x, y, Options(precision="fp32"))
    autograd.closed_form = False
    got = closed.gradients(bases, shards, 1024, gens(3), False)
    ref = autograd.gradients(bases, shards, 1024, gens(3), False)
    assert_same(got, ref, 1e-5)
    assert max(float((g.vector - r.vector).abs().max()) for g, r in zip(got, ref)) > 0  # another path, not the same one


def test_only_softmax_regression_takes_the_closed_form():
    from torch import nn

    from afl.learning.grouped import GroupedModel
    from afl.learning.models import LogSoftmax

    def grouped(*layers):
        return GroupedModel(nn.Sequential(*layers), channels_last=False).softmax_regression

    assert grouped(nn.Flatten(), nn.Linear(36, 10), LogSoftmax(dim=1))
    assert grouped(nn.Linear(36, 10), nn.LogSoftmax(dim=1))
    assert not grouped(nn.Flatten(), nn.Linear(36, 20), nn.ReLU(), nn.Linear(20, 10), LogSoftmax(dim=1))
    with pytest.raises(TypeError, match=r"needs a bias in every Linear layer \(1 has bias=False\)"):
        grouped(nn.Flatten(), nn.Linear(36, 10, bias=False), LogSoftmax(dim=1))  # a TypeError check_trainable reports
    assert not grouped(nn.Flatten(), nn.Linear(36, 10))
    assert not BatchedTrainer(models.build("logreg", 10, (1, 6, 6), torch.Generator().manual_seed(0)),
                              torch.zeros(4, 1, 6, 6), torch.zeros(4, dtype=torch.long), Options(precision="bf16")).closed_form


@pytest.mark.blas
@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("optimizer", ["adam", "plain-sgd"])
def test_float32_matches_within_float_tolerance(name, optimizer):
    model, x, y, shards, bases = setup(name, (1, 6, 6), dtype=torch.float32)
    kw = {"optimizer": "adam", "lr": 1e-3} if optimizer == "adam" else {"momentum": 0.0, "weight_decay": 0.0}
    plans = plans_for(len(shards), **kw)
    got = BatchedTrainer(model, x, y, Options()).train(bases, shards, plans, gens(len(shards)))
    ref = [local_train(model, b, x, y, torch.from_numpy(s), p, g)
           for b, s, p, g in zip(bases, shards, plans, gens(len(shards)))]
    assert_same(got, ref, 1e-4)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_compiled_training_matches_eager_within_float_tolerance(name):
    """``run.compile``: torch.compile of the forward pass and loss (one graph per number of tasks
    in a step: the ragged shards here need several) trains to the eager numbers."""
    model, x, y, shards, bases = setup(name, (1, 6, 6), dtype=torch.float32)
    plans = plans_for(len(shards), optimizer="adam", lr=1e-3)
    eager = BatchedTrainer(model, x, y, Options()).train(bases, shards, plans, gens(len(shards)))
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = BatchedTrainer(model, x, y, Options(compile=True)).train(bases, shards, plans, gens(len(shards)))
    assert counters["stats"]["unique_graphs"] >= 2, dict(counters["stats"])  # one graph per number of tasks
    assert_same(compiled, eager, 1e-5)


def test_results_do_not_depend_on_which_tasks_are_trained_together():
    model, x, y, shards, bases = setup("resnet20", (3, 8, 8))
    trainer = BatchedTrainer(model, x, y, Options(precision="fp32"))
    plans = plans_for(len(shards), optimizer="adam", lr=1e-2)
    together = trainer.train(bases, shards, plans, gens(5))
    for subset in ([3], [0, 4], [4, 2, 1]):
        pick = lambda seq: [seq[i] for i in subset]  # noqa: E731
        apart = trainer.train(pick(bases), pick(shards), pick(plans), pick(gens(5)))
        assert_same(apart, pick(together), 1e-10)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_bf16_autocast_trains_close_to_float32(name):
    """Each task's bf16 result lies within a quarter of its own float32 training movement of the
    float32 result (measured: 0.08-0.11 of it on CPU), so a bf16 path that skipped training (its
    error then the whole movement) or trained much less fails; likewise the final-epoch losses,
    against those of the same tasks at rate 0 (same minibatches, no training)."""
    model, x, y, shards, bases = setup(name, (1, 6, 6), dtype=torch.float32)
    plans = plans_for(len(shards), optimizer="adam", lr=1e-3)
    fp32 = BatchedTrainer(model, x, y, Options()).train(bases, shards, plans, gens(5))
    bf16 = BatchedTrainer(model, x, y, Options(precision="bf16")).train(bases, shards, plans, gens(5))
    at_rate_0 = plans_for(len(shards), optimizer="adam", lr=0.0)
    still = BatchedTrainer(model, x, y, Options()).train(bases, shards, at_rate_0, gens(5))
    for a, b, s, base in zip(fp32, bf16, still, bases):
        assert a.steps == b.steps and b.vector.dtype == torch.float32
        torch.testing.assert_close(s.vector, base, rtol=0, atol=0)  # rate 0: the untrained result
        moved = (a.vector - base).norm()
        assert moved > 0.1
        assert (b.vector - a.vector).norm() < 0.25 * moved
    # One task's loss barely moves in its few steps, so the losses are compared over all tasks at once.
    loss_error = sum(abs(b.train_loss - a.train_loss) for a, b in zip(fp32, bf16))
    trained = sum(abs(a.train_loss - s.train_loss) for a, s in zip(fp32, still))
    assert loss_error < 0.25 * trained


def test_local_helpers_equal_hand_computed_values():
    """The helpers the trainer's step tables draw on (``afl.learning.local``), which the reference
    restates rather than calls: epochs started, planned steps, rates, and each epoch's draws."""
    def p(**kw):
        return LocalPlan(**plan(**kw))
    # 40 samples in batches of 16: 3 batches an epoch (16, 16, 8).
    assert num_epochs(p(epochs=3), 40) == 3 and num_steps(3, None, 16, 40) == 9
    assert num_epochs(p(epochs=None, steps=7), 40) == 3  # steps 7 is in the third epoch
    assert num_epochs(p(epochs=None, steps=6), 40) == 2  # exactly two epochs
    assert num_epochs(p(epochs=None, steps=7), 5) == 7 and num_steps(None, 7, 16, 5) == 7  # one batch an epoch
    # delay-aware: 0.05 / (sqrt(e + 1) (1 + 0.1 * 2)) = 0.05 / (1.2 sqrt(e + 1))
    assert epoch_lr(p(delay=2.0), 0) == pytest.approx(0.05 / 1.2, rel=1e-15)
    assert epoch_lr(p(delay=2.0), 3) == pytest.approx(0.05 / 2.4, rel=1e-15)
    np.testing.assert_allclose(epoch_lr(p(delay=2.0), np.array([0, 3, 8])), [0.05 / 1.2, 0.05 / 2.4, 0.05 / 3.6],
                               rtol=1e-15)
    assert epoch_lr(p(lr_rule="constant", delay=2.0), 3) == 0.05
    np.testing.assert_array_equal(epoch_lr(p(lr_rule="constant", delay=2.0), np.array([0, 3])), [0.05, 0.05])
    # An epoch's draws from the task's stream: a permutation of the positions, then (augmenting) one
    # packed crop-and-flip in 0..9*9*2-1 per position; AsyncSGD's batch is the first of them.
    gen, same = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    order, packed = draw_epoch(gen, 10, True)
    torch.testing.assert_close(order, torch.randperm(10, generator=same), rtol=0, atol=0)
    torch.testing.assert_close(packed, torch.randint(0, 162, (10,), generator=same), rtol=0, atol=0)
    order, packed = draw_epoch(gen, 10, False)
    assert packed is None
    torch.testing.assert_close(order, torch.randperm(10, generator=same), rtol=0, atol=0)
    pick, packed = gradient_batch(gen, 10, 4, True)
    first, aug = torch.randperm(10, generator=same), torch.randint(0, 162, (10,), generator=same)
    torch.testing.assert_close(pick, first[:4], rtol=0, atol=0)
    torch.testing.assert_close(packed, aug[:4], rtol=0, atol=0)


def test_augment_crops_the_padded_image_and_flips():
    image = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    for dy, dx, flip in [(0, 0, 0), (4, 4, 0), (8, 8, 1), (3, 7, 1), (6, 1, 0)]:
        out = augment(image, torch.tensor([dy * 18 + dx * 2 + flip]))
        crop = padded[:, :, dy:dy + 5, dx:dx + 6]
        torch.testing.assert_close(out, crop.flip(3) if flip else crop, rtol=0, atol=0)


@pytest.mark.parametrize("name, shape, batch, limit, expected", [
    ("cnn", (1, 6, 6), 10, 64, 13),  # 128 samples a pass: round(12.8)
    ("cnn", (1, 6, 6), 64, 64, 2),
    ("cnn", (1, 6, 6), 500, 64, 1),  # never fewer than one task
    ("mlp", (1, 6, 6), 10, 64, 26),  # dense: 256 samples a pass: round(25.6)
    ("mlp", (1, 6, 6), 10, 5, 5),  # run.task_batch caps it
    ("logreg", (1, 6, 6), 64, 64, 4),
])
def test_tasks_per_pass_on_a_cpu(name, shape, batch, limit, expected):
    model, x, y, *_ = setup(name, shape)
    assert BatchedTrainer(model, x, y, Options()).tasks_per_pass(batch, limit) == expected


def test_tasks_per_pass_off_the_cpu_is_the_limit():
    model, x, y, *_ = setup("cnn", (1, 6, 6))
    trainer = BatchedTrainer(model, x.to("meta"), y.to("meta"), Options())
    assert trainer.tasks_per_pass(10, 64) == 64


def test_a_step_computes_only_the_columns_some_task_uses():
    """Three shards of 21 at batch 16: every task's second batch holds 5 samples, so that step
    runs on 5 columns, not 16 (no padding left, BatchNorm unmasked), with the reference's numbers."""
    model, x, y, shards, bases = setup("resnet20", (3, 8, 8), sizes=[21, 21, 21])
    plans = plans_for(3, epochs=1)
    trainer = BatchedTrainer(model, x, y, Options(precision="fp32"))
    widths, forward = [], trainer.grouped.forward

    def spy(parts, buffers, xb, mask, *rest):
        widths.append((xb.shape[0], mask is None))
        return forward(parts, buffers, xb, mask, *rest)

    trainer.grouped.forward = spy
    got = trainer.train(bases, shards, plans, gens(3))
    ref = [local_train(model, b, x, y, torch.from_numpy(s), p, g) for b, s, p, g in zip(bases, shards, plans, gens(3))]
    assert widths == [(16, True), (5, True)]
    assert_same(got, ref, 1e-9)
