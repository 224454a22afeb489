"""The bf16 fast path (``precision="bf16"``, :mod:`ddlnl.precision`) against the exact float32 one.

DM's and DANCE's one-iteration update of the synthetic images is computed both ways from the same start and
the same draws: bf16 must give the float32 step to within bfloat16 rounding (cosine > 0.99,
relative error < 15%; measured 0.996 and 9% for both), must actually differ from it (the option does something), and fp32 must be
bit-identical to a distil call that does not name the option.
"""

import pytest
import torch

from ddlnl.data import LabeledTensors
from ddlnl.errors import ConfigError
from ddlnl.methods import dm
from ddlnl.methods.dm import DMConfig
from ddlnl.precision import autocast


def _data(n_per_class=40, classes=4, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    centres = torch.randn(classes, 3, 1, 1, generator=g)
    images = centres[labels] + 0.5 * torch.randn(labels.numel(), 3, side, side, generator=g)
    return LabeledTensors(images, labels)


def _step(precision):
    """Synthetic images after one DM iteration (lr 1, so the change is minus the gradient)."""
    train = _data()
    cfg = DMConfig(iterations=1, width=16, batch_real=32, precision=precision, momentum=0.0)
    syn = dm.distill(train, 2, cfg, seed=3, num_classes=4)
    start = train.images[torch.tensor(syn.meta["init_indices"])]
    return syn.images - start


def test_bf16_step_agrees_with_fp32():
    exact, fast = _step("fp32"), _step("bf16")
    assert not torch.equal(exact, fast)  # the option changes the computation
    cos = torch.nn.functional.cosine_similarity(exact.flatten(), fast.flatten(), dim=0)
    rel = (exact - fast).norm() / exact.norm()
    assert cos > 0.99 and rel < 0.15, (float(cos), float(rel))


def test_fp32_is_the_default_path():
    train = _data()
    a = dm.distill(train, 2, DMConfig(iterations=2, width=8, batch_real=16), seed=1, num_classes=4)
    b = dm.distill(train, 2, DMConfig(iterations=2, width=8, batch_real=16, precision="fp32"), seed=1,
                   num_classes=4)
    assert torch.equal(a.images, b.images)


def test_bf16_runs_the_convolutions_in_bfloat16():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    with autocast("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert conv(x).dtype == torch.float32


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        DMConfig(precision="fp16").check()


def _dance_change(precision):
    from ddlnl.methods import dance
    from ddlnl.methods.dance import DANCEConfig

    train = _data(n_per_class=24)
    base = dict(width=8, batch_real=16, num_pretrained=1, pretrain_epochs=1, pretrain_batch=32, cache_experts=False,
                precision=precision)
    start = dance.distill(train, 1, DANCEConfig(iterations=0, **base), seed=2, num_classes=4).images
    after = dance.distill(train, 1, DANCEConfig(iterations=1, **base), seed=2, num_classes=4).images
    return after - start


def test_dance_bf16_step_agrees_with_fp32():
    exact, fast = _dance_change("fp32"), _dance_change("bf16")
    assert exact.abs().max() > 0 and not torch.equal(exact, fast)
    cos = torch.nn.functional.cosine_similarity(exact.flatten(), fast.flatten(), dim=0)
    rel = (exact - fast).norm() / exact.norm()
    assert cos > 0.99 and rel < 0.15, (float(cos), float(rel))


def test_inplace_relu_leaves_dm_and_dance_unchanged(monkeypatch):
    """DM and DANCE make their networks' ReLUs in-place (as the reference): bit-identical sets."""
    from ddlnl.methods import dance
    from ddlnl.methods.dance import DANCEConfig

    train = _data(n_per_class=24)
    dcfg = DANCEConfig(iterations=2, width=8, batch_real=16, num_pretrained=1, pretrain_epochs=1, pretrain_batch=32,
                       cache_experts=False)
    fast_dm = dm.distill(train, 2, DMConfig(iterations=2, width=8, batch_real=16), seed=1, num_classes=4)
    fast_dance = dance.distill(train, 1, dcfg, seed=2, num_classes=4)
    monkeypatch.setattr(dm, "inplace_relu_", lambda net: net)
    monkeypatch.setattr(dance, "inplace_relu_", lambda net: net)
    assert torch.equal(fast_dm.images, dm.distill(train, 2, DMConfig(iterations=2, width=8, batch_real=16), seed=1,
                                                  num_classes=4).images)
    assert torch.equal(fast_dance.images, dance.distill(train, 1, dcfg, seed=2, num_classes=4).images)


def test_inplace_relu_is_applied():
    from ddlnl.precision import inplace_relu_
    from ddlnl.train import TrainConfig, build_model

    net = inplace_relu_(build_model(TrainConfig(width=4, depth=2), channels=3, num_classes=2, image_size=(8, 8), seed=0))
    relus = [m for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
