import math

import pytest
import torch
from torch import nn

from afl.learning import models

SHAPES = {"cnn": (1, 28, 28), "resnet20": (3, 32, 32), "mlp": (1, 28, 28), "logreg": (1, 28, 28)}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _build(name: str, seed: int = 0, num_classes: int = 10, shape=None) -> nn.Module:
    return models.build(name, num_classes, shape or SHAPES[name], _gen(seed))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("num_classes", [10, 3])
def test_outputs_are_log_probabilities(name, num_classes):
    model = _build(name, num_classes=num_classes)
    x = torch.randn(4, *SHAPES[name], generator=_gen(1))
    out = model(x)
    assert out.shape == (4, num_classes) and out.dtype == torch.float32
    assert torch.all(out <= 0)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(4))


@pytest.mark.parametrize(("name", "shape", "expected"), [
    # conv 1*32*9+32 = 320, conv 32*32*9+32 = 9,248 (twice), linear 32*10+10 = 330
    ("cnn", (1, 28, 28), 320 + 9248 + 9248 + 330),
    # the same with 3 input channels: first conv 3*32*9+32 = 896
    ("cnn", (3, 32, 32), 896 + 9248 + 9248 + 330),
    # stem 3*16*9 + BN 2*16 = 464
    # stage 1: 3 blocks of 2 convs 16*16*9 + 2 BN(16): 3 * (2*2304 + 64) = 14,016
    # stage 2: first block 16*32*9 + 32*32*9 + 2 BN(32) + 1x1 16*32 + BN(32) = 4608+9216+128+512+64 = 14,528
    #          two blocks 2*9216 + 128 = 18,560 each
    # stage 3: first block 32*64*9 + 64*64*9 + 2 BN(64) + 1x1 32*64 + BN(64) = 18432+36864+256+2048+128 = 57,728
    #          two blocks 2*36864 + 256 = 73,984 each
    # classifier 64*10+10 = 650
    ("resnet20", (3, 32, 32), 464 + 14016 + 14528 + 2 * 18560 + 57728 + 2 * 73984 + 650),
    # 784*200+200 = 157,000; 200*200+200 = 40,200; 200*10+10 = 2,010
    ("mlp", (1, 28, 28), 157000 + 40200 + 2010),
    # 784*10+10
    ("logreg", (1, 28, 28), 7850),
    # synthetic (flat 60-feature inputs): 60*10+10
    ("logreg", (60,), 610),
])
def test_parameter_counts(name, shape, expected):
    assert _count(_build(name, shape=shape)) == expected


def test_cnn_has_19146_parameters():
    assert _count(_build("cnn")) == 19146


def test_resnet20_has_about_027m_parameters():
    assert _count(_build("resnet20")) == 272474


def test_cnn_initialisation_is_xavier_uniform_with_zero_bias():
    model = _build("cnn")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = module.weight[0].numel(), module.weight.shape[0] * module.weight[0, 0].numel()
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert module.weight.abs().max() <= bound
            assert module.weight.abs().max() > 0.9 * bound
            assert torch.all(module.bias == 0)


def test_default_initialisation_bounds_for_linear_models():
    for name in ("mlp", "logreg"):
        for module in _build(name).modules():
            if isinstance(module, nn.Linear):
                bound = 1 / math.sqrt(module.in_features)  # kaiming_uniform(a=sqrt(5)) and bias bound
                assert module.weight.abs().max() <= bound and module.bias.abs().max() <= bound
                assert module.bias.abs().max() > 0


def test_resnet20_batchnorm_starts_fresh():
    model = _build("resnet20")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 1 + 18 + 2
    for bn in norms:
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
        assert bn.num_batches_tracked.item() == 0


@pytest.mark.parametrize("name", models.MODELS)
def test_same_seed_gives_bitwise_identical_models(name):
    torch.manual_seed(123)
    a = _build(name, seed=7).state_dict()
    torch.manual_seed(456)
    b = _build(name, seed=7).state_dict()
    c = _build(name, seed=8).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert a[key].dtype in (torch.float32, torch.int64)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", models.MODELS)
def test_global_rng_untouched(name):
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _build(name)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("name", models.MODELS)
def test_generator_is_advanced(name):
    g = _gen(3)
    before = g.get_state()
    models.build(name, 10, SHAPES[name], g)
    assert not torch.equal(before, g.get_state())


def test_unknown_model_lists_the_names():
    with pytest.raises(ValueError, match="cnn, resnet20, mlp, logreg"):
        models.build("vgg", 10, (1, 28, 28), _gen())


@pytest.mark.parametrize(("name", "classes", "shape"), [
    ("cnn", 10, (784,)),
    ("resnet20", 10, (32, 32)),
    ("mlp", 1, (1, 28, 28)),
    ("logreg", 10, ()),
    ("logreg", 10, (0, 5)),
])
def test_invalid_arguments(name, classes, shape):
    with pytest.raises(ValueError):
        models.build(name, classes, shape, _gen())


def test_generator_is_required():
    with pytest.raises(TypeError, match="Generator"):
        models.build("logreg", 10, (1, 28, 28), 0)


@pytest.mark.parametrize("name", ["cnn", "mlp", "logreg"])
def test_sgd_steps_reduce_loss(name):
    """50 plain SGD steps on 20 learnable samples: class c has brightness (2c/9 - 1)/2 plus its
    own fixed pattern and a little noise (the pooled CNN sees the brightness, the others both)."""
    model = _build(name)
    g = _gen(2)
    y = torch.arange(10).repeat(2)
    patterns = torch.randn(10, *SHAPES[name], generator=g)
    brightness = 0.5 * (2 * y.float() / 9 - 1)
    x = brightness[:, None, None, None] + 0.3 * patterns[y] + 0.1 * torch.randn(20, *SHAPES[name], generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = nn.functional.nll_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("train", [True, False])
def test_resnet20_forward_backward(train):
    model = _build("resnet20")
    model.train(train)
    x = torch.randn(2, 3, 32, 32, generator=_gen(4))
    loss = nn.functional.nll_loss(model(x), torch.tensor([1, 7]))
    loss.backward()
    assert torch.isfinite(loss)
    for p in model.parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad))
    tracked = model[1].num_batches_tracked.item()
    assert tracked == (1 if train else 0)


@pytest.mark.parametrize("name", models.MODELS)
def test_functional_call_matches_module(name):
    model = _build(name).eval()
    x = torch.randn(3, *SHAPES[name], generator=_gen(5))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.testing.assert_close(torch.func.functional_call(model, state, (x,)), model(x), rtol=0, atol=0)
    shifted = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in state.items()}
    assert not torch.equal(torch.func.functional_call(model, shifted, (x,)), model(x))


@pytest.mark.parametrize(("name", "shape", "expected"), [
    ("logreg", (1, 28, 28), 2 * 784 * 10),  # 15,680
    ("logreg", (60,), 2 * 60 * 10),
    ("mlp", (1, 28, 28), 2 * (784 * 200 + 200 * 200 + 200 * 10)),  # 397,600
    # conv1 28*28 outputs * 32 channels * 1*9 = 225,792 MACs; conv2, conv3 28*28*32 * 32*9 = 7,225,344 each;
    # linear 32*10 = 320: 14,676,800 MACs, about the 30 MFLOP forward CNN of SPEC section 7
    ("cnn", (1, 28, 28), 2 * (225792 + 2 * 7225344 + 320)),
])
def test_flops_per_sample(name, shape, expected):
    assert models.flops_per_sample(_build(name, shape=shape), shape) == expected


def test_flops_per_sample_leaves_the_model_alone():
    model = _build("resnet20")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = models.flops_per_sample(model, (3, 32, 32))
    # MACs: stem 32*32*16 * 3*9 = 442,368; stage 1, six convs 32*32*16 * 16*9 = 2,359,296 each;
    # stages 2 and 3: a strided conv 1,179,648, five convs 2,359,296 each, a 1x1 shortcut 131,072;
    # classifier 640: 40,813,184 MACs (ResNet-20's well-known ~41 M)
    assert flops == 2 * (442368 + 6 * 2359296 + 2 * (1179648 + 5 * 2359296 + 131072) + 640)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("shape, dim", [((2048, 10), 1), ((300, 3), 1), ((16, 10), 1), ((2048, 16), 1),
                                        ((5, 64, 10), 2), ((5, 20, 10), 2)])
def test_log_softmax_matches_torch_to_float_rounding(shape, dim):
    # Both paths (the transposed rows for few classes and many rows, torch's own otherwise): the
    # values and the gradient of torch.log_softmax to float32 rounding, contiguous like torch's.
    h = (3 * torch.randn(*shape, generator=_gen(2))).requires_grad_()
    g = torch.randn(*shape, generator=_gen(3))
    ours = models.log_softmax(h, dim)
    (mine,) = torch.autograd.grad(ours, h, g)
    theirs = torch.log_softmax(h, dim)
    (reference,) = torch.autograd.grad(theirs, h, g)
    assert ours.is_contiguous() and ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", models.MODELS)
def test_built_models_end_in_the_fast_log_softmax(name):
    last = list(_build(name).modules())[-1]
    assert isinstance(last, models.LogSoftmax) and isinstance(last, nn.LogSoftmax) and last.dim == 1
