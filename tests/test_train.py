from dataclasses import replace

import pytest
import torch

from ddlnl.data import LabeledTensors
from ddlnl.errors import ConfigError
from ddlnl.train import (BaselineConfig, TrainConfig, accuracy, build_model, evaluate, run_baseline,
                         reinitialize_, stratified_split, train)

FAST = TrainConfig(width=16, epochs=15, batch_size=32, lr=0.05, augment="none")


def test_training_learns_a_separable_problem(tiny_dataset):
    ds = tiny_dataset
    res = evaluate(ds.train, ds.test, FAST, num_classes=4, n_runs=2, seed=0)
    assert res.mean > 0.9
    assert len(res.accs) == len(res.seeds) == 2 and res.seeds[0] != res.seeds[1]


def test_same_seed_same_model(tiny_dataset):
    ds = tiny_dataset
    a = evaluate(ds.train, ds.test, FAST, num_classes=4, n_runs=1, seed=3)
    b = evaluate(ds.train, ds.test, FAST, num_classes=4, n_runs=1, seed=3)
    assert a.accs == b.accs


def test_soft_labels_equal_one_hot_hard_labels(tiny_dataset):
    ds = tiny_dataset
    soft = LabeledTensors(ds.train.images, torch.nn.functional.one_hot(ds.train.labels, 4).float())
    m1 = build_model(FAST, channels=1, num_classes=4, image_size=(8, 8), seed=1)
    m2 = build_model(FAST, channels=1, num_classes=4, image_size=(8, 8), seed=1)
    train(m1, ds.train, FAST, seed=5)
    train(m2, soft, FAST, seed=5)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p1, p2, atol=1e-5)


def test_dsa_augmented_training_runs(tiny_dataset):
    cfg = TrainConfig(width=8, epochs=2, batch_size=32, augment="dsa")
    res = evaluate(tiny_dataset.train, tiny_dataset.test, cfg, num_classes=4, n_runs=1, seed=0)
    assert 0.0 <= res.mean <= 1.0


def test_history_records_curves_but_final_accuracy_is_end_of_training(tiny_dataset):
    ds = tiny_dataset
    res = evaluate(ds.train, ds.test, FAST, num_classes=4, n_runs=1, seed=0, monitor={"test": ds.test},
                   record_every=1)
    hist = res.histories[0]
    assert [h["epoch"] for h in hist] == list(range(1, FAST.epochs + 1))
    assert res.accs[0] == pytest.approx(hist[-1]["test_acc"])


def test_selecting_by_test_accuracy_is_refused(tiny_dataset):
    ds = tiny_dataset
    model = build_model(FAST, channels=1, num_classes=4, image_size=(8, 8), seed=0)
    with pytest.raises(ConfigError, match="test accuracy"):
        train(model, ds.train, FAST, seed=0, monitor={"test": ds.test}, select="test")


def test_early_stop_baseline_selects_on_noisy_validation(tiny_dataset):
    ds = tiny_dataset
    res = run_baseline(ds.train, ds.test, FAST, BaselineConfig(stopping="early-stop", val_fraction=0.2),
                       num_classes=4, n_runs=1, seed=0)
    hist = res.histories[0]
    assert "noisy_val_acc" in hist[0]
    best = max(h["noisy_val_acc"] for h in hist)
    assert res.mean > 0.8 and best > 0.8


def test_stratified_split_holds_out_each_class():
    labels = torch.arange(5).repeat_interleave(20)
    keep, held = stratified_split(labels, 0.25, seed=0)
    assert len(set(keep.tolist()) & set(held.tolist())) == 0 and len(keep) + len(held) == 100
    assert torch.bincount(labels[held], minlength=5).tolist() == [5] * 5


def test_accuracy_uses_argmax_of_soft_labels(tiny_dataset):
    model = build_model(FAST, channels=1, num_classes=4, image_size=(8, 8), seed=0)
    hard = tiny_dataset.test
    soft = LabeledTensors(hard.images, torch.nn.functional.one_hot(hard.labels, 4).float())
    assert accuracy(model, hard) == accuracy(model, soft)


def test_warmup_and_cosine_floor_schedule():
    from ddlnl.train import _lr_at

    cfg = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=2, final_lr_fraction=0.01)
    assert _lr_at(cfg, 1.0, 0, 0.0) == 0.0
    assert _lr_at(cfg, 1.0, 1, 0.0) == pytest.approx(0.5)
    assert _lr_at(cfg, 1.0, 2, 0.0) == pytest.approx(1.0)
    assert _lr_at(cfg, 1.0, 9, 0.999999) == pytest.approx(0.01, abs=1e-4)


@pytest.mark.parametrize("epochs", [12, 1500])
def test_multistep_schedule_is_torchs_multisteplr_at_two_thirds_and_five_sixths(epochs):
    """DANCE's evaluation (train.py): MultiStepLR(milestones=[2N//3, 5N//6], gamma=0.2), one step per epoch."""
    from ddlnl.train import _lr_at

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2 * epochs // 3, 5 * epochs // 6], gamma=0.2)
    cfg = TrainConfig(epochs=epochs, schedule="multistep")
    for epoch in range(epochs):
        assert _lr_at(cfg, 0.01, epoch, 0.5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()
    assert _lr_at(cfg, 0.01, epochs - 1, 0.0) == pytest.approx(0.01 * 0.04)


def test_adam_with_mse_on_label_vectors_learns(tiny_dataset):
    ds = tiny_dataset
    targets = torch.nn.functional.one_hot(ds.train.labels, 4).float() - 0.25  # centred, as RCIG's labels
    cfg = replace(FAST, optimizer="adam", loss="mse", lr=3e-3, epochs=30)
    res = evaluate(LabeledTensors(ds.train.images, targets), ds.test, cfg, num_classes=4, n_runs=1, seed=0)
    assert res.mean > 0.9


# ---- Sharpness-aware (GSAM) steps, used for FTD's flat expert trajectories -------------------------

def _one_step(model, data, **sam):
    cfg = TrainConfig(width=4, depth=2, epochs=1, batch_size=len(data), lr=0.1, momentum=0.0, weight_decay=0.0,
                      schedule="constant", augment="none", **sam)
    train(model, data, cfg, seed=0)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _reference_gsam_step(model, data, rho, alpha, adaptive, lr=0.1):
    """One GSAM step written from the paper's formulas on a flat parameter vector with torch.func."""
    from torch.func import functional_call, grad

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        params = {n: c.view(s) for n, c, s in zip(names, torch.split(flat, sizes), shapes)}
        return torch.nn.functional.cross_entropy(functional_call(model, params, (data.images,)), data.labels)

    g = grad(loss)(w)
    a = w.abs() if adaptive else torch.ones_like(w)
    h = grad(loss)(w + rho * a * a * g / torch.linalg.norm(a * g))
    surrogate_gap_direction = g - (g @ h) / (h @ h) * h  # g's component orthogonal to h
    return w - lr * (h - alpha * surrogate_gap_direction)


@pytest.mark.parametrize("rho,alpha,adaptive", [(0.05, 0.0, False), (0.05, 0.3, False), (0.5, 0.3, True)])
def test_gsam_step_equals_the_formula(tiny_dataset, rho, alpha, adaptive):
    data = LabeledTensors(tiny_dataset.train.images[:40].double(), tiny_dataset.train.labels[:40])
    model = build_model(TrainConfig(width=4, depth=2), channels=1, num_classes=4, image_size=(8, 8), seed=1).double()
    expected = _reference_gsam_step(model, data, rho, alpha, adaptive)
    got = _one_step(model, data, sam_rho=rho, sam_alpha=alpha, sam_adaptive=adaptive)
    plain = _one_step(build_model(TrainConfig(width=4, depth=2), channels=1, num_classes=4, image_size=(8, 8),
                                  seed=1).double(), data)
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    assert not torch.allclose(got, plain, atol=1e-6)  # the perturbation changed the step


def test_gsam_updates_batch_norm_statistics_once_per_step(tiny_dataset):
    data = tiny_dataset.train
    stats = []
    for rho in (0.0, 0.05):
        model = build_model(TrainConfig(width=4, depth=2, norm="batch"), channels=1, num_classes=4,
                            image_size=(8, 8), seed=0)
        _one_step(model, data, sam_rho=rho)
        stats.append(torch.cat([b.float().reshape(-1) for b in model.buffers()]))
    assert torch.allclose(stats[0], stats[1], atol=1e-6)


def test_negative_sam_settings_are_refused():
    with pytest.raises(ConfigError, match="sam_rho=0 turns"):
        TrainConfig(sam_rho=-0.1).check()


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_reinitialize_gives_the_weights_of_a_fresh_build(norm):
    cfg = TrainConfig(width=8, depth=2, norm=norm)
    kw = dict(channels=3, num_classes=5, image_size=(8, 8))
    net = build_model(cfg, seed=0, **kw)
    with torch.no_grad():  # weights and running statistics moved away from any initial state
        net(torch.randn(4, 3, 8, 8))
        for p in net.parameters():
            p.add_(1.0)
    host = build_model(cfg, seed=99, **kw)
    for seed in (3, 4):
        fresh = build_model(cfg, seed=seed, **kw).state_dict()
        for target, h in ((net, None), (build_model(cfg, seed=7, **kw), host)):
            out = reinitialize_(target, seed, host=h).state_dict()
            assert out.keys() == fresh.keys()
            assert all(torch.equal(out[k], fresh[k]) for k in fresh)


def test_cutmix_box_is_dance_rand_bbox():
    # DANCE misc/utils.rand_bbox: cut_rat = sqrt(1 - lam), cut = int(side * cut_rat), centre
    # uniform, each end clipped to the image; written out here for one draw.
    import math

    import numpy as np

    from ddlnl.train import cutmix_box

    for seed, lam in [(0, 0.3), (1, 0.9), (2, 0.05)]:
        r1, c1, r2, c2 = cutmix_box(32, 32, lam, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        cut = int(32 * math.sqrt(1 - lam))
        cy, cx = rng.integers(32), rng.integers(32)
        assert (r1, r2) == (max(cy - cut // 2, 0), min(cy + cut // 2, 32))
        assert (c1, c2) == (max(cx - cut // 2, 0), min(cx + cut // 2, 32))


def test_cutmix_pastes_a_box_from_the_shuffled_batch_and_mixes_the_targets():
    import numpy as np

    from ddlnl.train import cutmix
    from ddlnl.utils import generator

    x = torch.stack([torch.full((1, 16, 16), float(i)) for i in range(4)])
    mixed, perm, ratio = cutmix(x, TrainConfig(cutmix_prob=1.0), np.random.default_rng(4), generator(0))
    assert perm is not None and 0.0 <= ratio <= 1.0
    for i in range(4):
        pasted = (mixed[i] == float(perm[i])).float().mean().item() if perm[i] != i else 1 - ratio
        assert abs((1 - ratio) - pasted) < 1e-6  # the pasted share is 1 - ratio
    assert torch.equal(x[0], torch.zeros(1, 16, 16))  # the input is not modified in place
    same, none, one = cutmix(x, TrainConfig(cutmix_prob=0.0), np.random.default_rng(4), generator(0))
    assert none is None and one == 1.0 and same is x


def test_training_loop_applies_cutmix_when_asked():
    from ddlnl.train import train

    data = LabeledTensors(torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)]), torch.arange(4))
    seen: list[torch.Tensor] = []
    for prob in (0.0, 1.0):
        model = build_model(TrainConfig(width=4, depth=1), channels=1, num_classes=4, image_size=(8, 8), seed=0)
        model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
        train(model, data, TrainConfig(width=4, depth=1, epochs=3, batch_size=4, augment="none", cutmix_prob=prob),
              seed=0)
        mixed = [bool((x.flatten(1).amax(1) != x.flatten(1).amin(1)).any()) for x in seen]
        assert any(mixed) == (prob == 1.0)
        seen.clear()
