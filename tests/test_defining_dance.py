"""DANCE's defining steps, each pinned by a behaviour that goes away when the step is removed or
altered. The first iteration is recomputed from the paper's description by independent code (a
hand-written SGD with momentum over one pixel tensor): the inner-class step matches class-mean
embeddings under the middle encoder ``lam * theta_init + (1 - lam) * theta_final``, the
calibration step is the final model's cross-entropy, the pixel lr is ``0.01 * IPC``, and pixels
are clipped to [0, 1]. The real and the synthetic batch share one DSA draw: on a class whose real
images all equal its synthetic image, the matching loss is zero only if they are augmented alike.

Reference: Hansong-Zhang/DANCE ``DANCE.py`` (``l * model_init + (1 - l) * model_final``,
``innerloss`` then ``iter_calib`` rounds of ``interloss``; ``lr_img = 0.01 * ipc`` in
``arguments/reproduce_condense.py``; ``DiffAug(batch=True)`` with one seed for both batches).
"""

import pytest
import torch
import torch.nn.functional as F

from ddlnl.config import apply_overrides
from ddlnl.data import LabeledTensors
from ddlnl.experts import get_experts
from ddlnl.methods import dance
from ddlnl.methods.dance import DANCEConfig

TINY = {"iterations": 1, "num_pretrained": 2, "pretrain_epochs": 2, "pretrain_lr": 0.05, "pretrain_batch": 32,
        "batch_real": 64, "batch_syn_max": 64, "width": 8, "depth": 2, "cache_experts": False, "factor": 1}


def _cfg(**over) -> DANCEConfig:
    return apply_overrides(DANCEConfig(), {**TINY, **over})


def _reference_first_iteration(train, ipc, cfg, syn_meta, num_classes=4):
    """The stored pixels after one DANCE iteration, without DSA, computed from the description."""
    experts = get_experts(train, cfg.expert_config(), seed=cfg.expert_seed, num_classes=num_classes, cache=False)
    model, lam = syn_meta["pretrained"][0], syn_meta["lam"][0]
    init, final = experts.params(model, 0), experts.params(model, -1)
    encoder = experts.layout.load(experts.build_model(), lam * init + (1 - lam) * final)
    final_net = experts.layout.load(experts.build_model(), final)
    lo = torch.tensor(syn_meta["pixel_box"]["lo"]).view(1, -1, 1, 1)
    hi = torch.tensor(syn_meta["pixel_box"]["hi"]).view(1, -1, 1, 1)
    pixels = ((train.images[syn_meta["init_indices"]] - lo) / (hi - lo)).clone()
    lr, buf = 0.01 * ipc, torch.zeros_like(pixels)

    def sgd(loss_of_class, c):
        nonlocal pixels, buf
        p = pixels.clone().requires_grad_(True)
        loss = loss_of_class(lo + (hi - lo) * p[c * ipc:(c + 1) * ipc], c)
        grad = torch.autograd.grad(loss, p)[0]
        buf = cfg.momentum * buf + grad
        pixels = pixels - lr * buf

    def inner(x, c):
        real = train.images[train.labels == c]  # batch_real >= class size: the whole class
        return ((encoder.embed(real).mean(0) - encoder.embed(x).mean(0)) ** 2).sum()

    def calib(x, c):
        return F.cross_entropy(final_net(x), torch.full((x.shape[0],), c))

    for c in range(num_classes):
        sgd(inner, c)
    for _ in range(cfg.iter_calib):
        for c in range(num_classes):
            sgd(calib, c)
    return lo + (hi - lo) * pixels.clamp(0, 1)


@pytest.mark.parametrize("ipc,iter_calib", [(2, 1), (3, 0)])
def test_first_iteration_equals_the_described_inner_and_calibration_steps(tiny_dataset, ipc, iter_calib):
    cfg = _cfg(dsa_strategy="", iter_calib=iter_calib)
    syn = dance.distill(tiny_dataset.train, ipc, cfg, seed=1, num_classes=4)
    lam = syn.meta["lam"][0]
    assert 0.0 < lam < 1.0 and abs(lam - 0.5) > 0.05  # lam and 1 - lam are told apart
    expected = _reference_first_iteration(tiny_dataset.train, ipc, cfg, syn.meta)
    start = tiny_dataset.train.images[syn.meta["init_indices"]]
    assert (syn.images - start).abs().max() > 1e-3  # the step moved the pixels
    torch.testing.assert_close(syn.images, expected, rtol=1e-4, atol=1e-5)


def _constant_classes(n_per_class=12, num_classes=4, side=8, seed=0) -> LabeledTensors:
    """Every image of a class is the same image (with a black and a white pixel)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, 1, side, side, generator=g)
    protos[:, :, 0, 0], protos[:, :, 0, 1] = 0.0, 1.0
    return LabeledTensors(protos.repeat_interleave(n_per_class, 0), torch.arange(num_classes).repeat_interleave(n_per_class))


def test_real_and_synthetic_batches_share_one_dsa_draw(monkeypatch):
    train = _constant_classes()
    seen = []
    real_loss = dance.inner_class_loss

    def spy(encoder, real, syn):
        seen.append((real.detach().clone(), syn.detach().clone()))
        return real_loss(encoder, real, syn)

    monkeypatch.setattr(dance, "inner_class_loss", spy)
    syn = dance.distill(train, 1, _cfg(iterations=3, iter_calib=0), seed=0, num_classes=4)
    assert len(seen) == 12
    changed = 0
    for c, (real, s) in zip([0, 1, 2, 3] * 3, seen):
        raw = train.images[train.labels == c][0]
        torch.testing.assert_close(real, s.expand_as(real), rtol=0, atol=1e-5)  # one transform for both
        changed += int((s[0] - raw).abs().max() > 1e-3)
    assert changed >= 8  # and the transform was applied (colour/crop/cutout change almost every draw)
    assert max(syn.meta["loss_inner"]) < 1e-8


def test_middle_encoders_span_the_pretrained_path(tiny_dataset):
    syn = dance.distill(tiny_dataset.train, 1, _cfg(iterations=12, dsa_strategy="", iter_calib=0, width=4),
                        seed=0, num_classes=4)
    lams = syn.meta["lam"]
    assert len(set(lams)) == 12 and all(0 <= x < 1 for x in lams)
    assert min(lams) < 0.3 and max(lams) > 0.7  # lam ~ U(0, 1), not a constant end
    assert set(syn.meta["pretrained"]) == {0, 1}


def test_pixels_are_clipped_to_the_box_at_the_start_of_every_iteration_and_at_the_end(tiny_dataset, monkeypatch):
    seen = []
    real_loss = dance.inner_class_loss

    def spy(encoder, real, syn):
        seen.append(syn.detach().clone())
        return real_loss(encoder, real, syn)

    monkeypatch.setattr(dance, "inner_class_loss", spy)
    # A huge pixel lr throws pixels out of [0, 1] within an iteration.
    syn = dance.distill(tiny_dataset.train, 1, _cfg(iterations=3, dsa_strategy="", lr_img_per_ipc=50.0),
                        seed=0, num_classes=4)
    lo, hi = dance.pixel_box(tiny_dataset.train.images)

    def inside(x):
        return bool((x >= lo - 1e-5).all() and (x <= hi + 1e-5).all())

    assert all(inside(seen[i]) for i in (0, 4, 8))  # class 0, first thing of each iteration
    assert not all(inside(x) for x in seen)  # momentum moved later classes out meanwhile
    assert inside(syn.images)


def test_inter_class_loss_with_probability_rows_is_the_soft_cross_entropy_by_hand():
    # The remedy's targets are rows T[c]: -sum_k p_k log softmax(z)_k per image, averaged; one-hot
    # rows give the hard-label cross-entropy.
    import math

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    syn = torch.randn(4, 1, 4, 4)
    rows = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]])
    z = model(syn).detach().double()
    by_hand = 0.0
    for n in range(4):
        log_norm = math.log(sum(math.exp(float(v)) for v in z[n]))
        by_hand -= sum(float(rows[n, k]) * (float(z[n, k]) - log_norm) for k in range(3)) / 4
    assert float(dance.inter_class_loss(model, syn, rows).detach()) == pytest.approx(by_hand, rel=1e-5)
    hard = torch.tensor([0, 2, 1, 1])
    assert float(dance.inter_class_loss(model, syn, torch.eye(3)[hard]).detach()) == \
        pytest.approx(float(dance.inter_class_loss(model, syn, hard).detach()), rel=1e-6)
