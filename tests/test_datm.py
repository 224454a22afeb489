"""DATM: the TESLA gradient against exact and independent computations, the objective going down on
real data, initialisation, the start-epoch window and the config checks."""

import math

import pytest
import torch

from ddlnl.augment import DSA
from ddlnl.errors import ConfigError
from ddlnl.experts import ParamLayout, functional_forward, get_experts
from ddlnl.methods import METHODS, method_config
from ddlnl.methods.datm import (DATMConfig, Student, datm_eval_config, distill,
                                plan_steps, tesla_gradients, unrolled_gradients)
from ddlnl.train import TrainConfig, build_model
from ddlnl.utils import generator

STRATEGY = "color_crop_cutout_flip_scale_rotate"
# Runs in ~0.1 s on the 120-image blobs (depth 2: 8x8 inputs, see models.fit_depth).
TINY = {"iterations": 2, "syn_steps": 3, "expert_epochs": 1, "current_max_start_epoch": 1, "max_start_epoch": 2,
        "num_experts": 2, "expert_train_epochs": 2, "expert_lr": 0.1, "expert_batch": 32, "width": 8, "depth": 2,
        "cache_experts": False}


def _problem(steps: int, batch: int, seed: int = 0, n: int = 8, dsa: bool = True):
    """A float64 matching problem on a width-8 ConvNet: student, images, logits, lr, start, target, plan."""
    g = torch.Generator().manual_seed(seed)
    model = build_model(TrainConfig(width=8, depth=2), channels=1, num_classes=4, image_size=(8, 8), seed=seed).double()
    layout = ParamLayout.of(model)
    start = layout.flatten(model).double()
    target = start + 0.05 * torch.randn(start.shape, generator=g, dtype=torch.float64)
    images = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    logits = torch.randn(n, 4, generator=g, dtype=torch.float64)
    lr = torch.tensor(0.1, dtype=torch.float64)
    aug = DSA(STRATEGY) if dsa else None
    plan = plan_steps(n, steps, batch, aug, g)
    return Student(model, layout, aug), images, logits, lr, start, target, plan


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tesla_equals_the_unrolled_gradient_for_one_step(seed):
    args = _problem(steps=1, batch=4, seed=seed)
    a, b = tesla_gradients(*args), unrolled_gradients(*args)
    assert a.loss == pytest.approx(b.loss, rel=1e-12)
    assert torch.allclose(a.grad_images, b.grad_images, rtol=1e-8, atol=1e-14)
    assert torch.allclose(a.grad_labels, b.grad_labels, rtol=1e-8, atol=1e-14)
    assert torch.allclose(a.grad_lr, b.grad_lr, rtol=1e-8, atol=1e-14)
    assert a.grad_images.abs().sum() > 0 and a.grad_labels.abs().sum() > 0


def _single_step_sum(student, images, logits, lr, start, target, plan):
    """The TESLA approximation computed independently: for each step i, the loss through the
    detached student path with ONLY step i's update left differentiable, differentiated by autograd;
    the lr gradient from the path with every g_i detached."""
    thetas, grads = [start], []
    for step in plan:  # the student's path, no graph
        theta = thetas[-1].detach().requires_grad_(True)
        ce = student.loss(theta, images[step.indices], logits[step.indices], step)
        grads.append(torch.autograd.grad(ce, theta)[0])
        thetas.append(thetas[-1] - lr * grads[-1])
    denom = ((start - target) ** 2).sum()
    gx, gy = torch.zeros_like(images), torch.zeros_like(logits)
    for i, step in enumerate(plan):
        x = images.clone().requires_grad_(True)
        y = logits.clone().requires_grad_(True)
        theta_i = thetas[i].detach().requires_grad_(True)
        ce = student.loss(theta_i, x[step.indices], y[step.indices], step)
        g_i = torch.autograd.grad(ce, theta_i, create_graph=True)[0]
        # theta_N with step i's g_i live and every other step frozen.
        theta_n = thetas[-1].detach() + lr * grads[i] - lr * g_i
        loss = ((theta_n - target) ** 2).sum() / denom
        dx, dy = torch.autograd.grad(loss, [x, y])
        gx, gy = gx + dx, gy + dy
    lr_var = lr.clone().requires_grad_(True)
    theta_n = start - lr_var * sum(grads)
    glr = torch.autograd.grad(((theta_n - target) ** 2).sum() / denom, lr_var)[0]
    return gx, gy, glr


@pytest.mark.parametrize("steps,batch", [(5, 4), (7, 3)])
def test_tesla_equals_an_independent_sum_of_single_step_gradients(steps, batch):
    args = _problem(steps=steps, batch=batch)
    a = tesla_gradients(*args)
    gx, gy, glr = _single_step_sum(*args)
    assert torch.allclose(a.grad_images, gx, rtol=1e-7, atol=1e-13)
    assert torch.allclose(a.grad_labels, gy, rtol=1e-7, atol=1e-13)
    assert torch.allclose(a.grad_lr, glr, rtol=1e-7, atol=1e-13)
    # ... and it is an approximation: the exact gradient differs once there are several steps.
    exact = unrolled_gradients(*args)
    assert exact.loss == pytest.approx(a.loss, rel=1e-10)
    assert not torch.allclose(exact.grad_images, a.grad_images, rtol=1e-3)


def test_tesla_labels_off_gives_no_label_gradient():
    args = _problem(steps=2, batch=4)
    res = tesla_gradients(*args, learn_labels=False)
    assert res.grad_labels is None and res.grad_images.abs().sum() > 0


def test_plan_covers_every_image_once_per_pass():
    g = generator(0)
    plan = plan_steps(10, 5, 4, None, g)
    assert [p.indices.numel() for p in plan] == [2, 4, 4, 2, 4]  # chunks 4,4,2 taken from the end
    assert sorted(torch.cat([p.indices for p in plan[:3]]).tolist()) == list(range(10))
    assert all(p.draw is None for p in plan)
    dsa_plan = plan_steps(10, 2, 0, DSA(STRATEGY), g)
    assert all(p.indices.numel() == 10 and p.draw.batch_size == 10 for p in dsa_plan)  # per-sample draws


def _held_out_loss(student, experts, syn, ipc, num_classes, starts):
    """Mean exact matching loss of ``syn`` over fixed (expert, start) problems without augmentation."""
    g = generator(123)
    losses = []
    for e in range(experts.num_experts):
        for t in starts:
            plan = plan_steps(ipc * num_classes, 8, 0, None, g)
            res = tesla_gradients(student, syn.images, syn.labels.log(), torch.tensor(syn.lr),
                                  experts.params(e, t), experts.params(e, t + 1), plan)
            losses.append(res.loss)
    return sum(losses) / len(losses)


def test_matching_loss_decreases_on_digits(monkeypatch, tmp_path):
    from ddlnl.data import load_dataset

    monkeypatch.setenv("DDLNL_CACHE", str(tmp_path))  # experts trained once, shared by both calls
    train = load_dataset("digits").train
    over = dict(syn_steps=8, expert_epochs=1, current_max_start_epoch=4, max_start_epoch=4,
                sequential_generation=False, num_experts=2, expert_train_epochs=5, expert_lr=0.01,
                expert_batch=64, width=16, depth=2, batch_syn=0, dsa_strategy="color_crop_cutout_scale_rotate",
                syn_lr_init=0.01, lr_img=100.0)
    before = distill(train, 2, DATMConfig(**over, iterations=0), seed=0, num_classes=10)
    after = distill(train, 2, DATMConfig(**over, iterations=25), seed=0, num_classes=10)
    assert torch.equal(torch.tensor(before.meta["init_indices"]), torch.tensor(after.meta["init_indices"]))
    assert len(after.meta["loss"]) == 25 and all(math.isfinite(x) for x in after.meta["loss"])
    experts = get_experts(train, DATMConfig(**over).expert_config(), seed=0, num_classes=10, allow_training=False)
    student = Student(experts.build_model(), experts.layout, None)
    first = _held_out_loss(student, experts, before, 2, 10, range(4))
    last = _held_out_loss(student, experts, after, 2, 10, range(4))
    assert last < 0.7 * first
    assert after.lr != before.lr and not torch.equal(after.images, before.images)
    assert not torch.allclose(after.labels, before.labels)  # the soft labels were learned too


def test_initialisation_picks_images_the_experts_classify_as_their_noisy_label(tiny_dataset):
    train = tiny_dataset.train
    noisy = train.labels.clone()
    noisy[::3] = (noisy[::3] + 1) % 4  # a third of the labels are wrong
    t = train.with_labels(noisy)
    cfg = DATMConfig(**{**TINY, "iterations": 0, "expert_train_epochs": 4})
    syn = distill(t, 3, cfg, seed=0, num_classes=4)
    experts = get_experts(t, cfg.expert_config(), seed=0, num_classes=4, cache=False)
    idx = torch.tensor(syn.meta["init_indices"])
    slots = torch.arange(4).repeat_interleave(3)
    assert torch.equal(noisy[idx], slots) and torch.equal(syn.images, train.images[idx])
    assert syn.meta["init_filled"] == 0 and syn.meta["initial_label_accuracy"] == 1.0
    model = experts.build_model()
    first = functional_forward(model, experts.layout, experts.params(0, -1), syn.images).argmax(1)
    assert torch.equal(first, slots)  # expert 0 (last epoch) agrees with every chosen label
    assert torch.allclose(syn.labels.sum(1), torch.ones(12)) and torch.equal(syn.hard_labels, slots)
    # The logits are the mean over the experts that predict the slot class.
    logits = torch.stack([functional_forward(model, experts.layout, experts.params(e, -1), syn.images)
                          for e in range(2)])
    ok = (logits.argmax(2) == slots).float()
    mean = (logits * ok[..., None]).sum(0) / ok.sum(0)[:, None]
    assert torch.allclose(syn.labels, torch.softmax(mean, 1), atol=1e-6)


def test_unrolled_mode_and_real_init_run(tiny_dataset):
    cfg = method_config("datm", overrides={**TINY, "gradient": "unrolled", "init": "real"})
    syn = METHODS["datm"].distill(tiny_dataset.train, 2, cfg, seed=1, num_classes=4)
    assert syn.labels.shape == (8, 4) and syn.lr > 0 and len(syn.meta["loss"]) == 2


def test_window_grows_as_datm_upper_bound():
    cfg = DATMConfig()  # IPC 10: 10 -> 20 over 1000 iterations
    assert [cfg.window_upper(i) for i in (0, 99, 100, 550, 1000, 5000)] == [10, 10, 11, 15, 20, 20]
    # IPC 1 (no sequential generation): the whole window from the start, whatever current_max says
    assert DATMConfig(sequential_generation=False, max_start_epoch=4, current_max_start_epoch=20).window_upper(0) == 4


def test_cpu_preset():
    cpu = method_config("datm", "cpu")
    cpu.check()
    assert cpu.expert_config().num_experts == cpu.num_experts


@pytest.mark.parametrize("over,match", [
    ({"norm": "batch"}, "norm=batch"),
    ({"zca": True, "zca_reg": 0.0}, "zca_reg"),
    ({"max_start_epoch": 50}, "exceeds expert_train_epochs"),
    ({"gradient": "exact"}, "tesla or unrolled"),
    ({"current_max_start_epoch": 0}, "min_start_epoch < current_max_start_epoch"),
])
def test_bad_configs_are_refused(over, match):
    with pytest.raises(ConfigError, match=match):
        method_config("datm", overrides=over)


def test_eval_recipe():
    cfg = datm_eval_config(TrainConfig(width=64))
    assert (cfg.epochs, cfg.momentum, cfg.weight_decay, cfg.schedule, cfg.batch_size) == (1000, 0.9, 5e-4, "step", 128)
    assert cfg.use_learned_lr and cfg.augment == "dsa" and cfg.width == 64


def test_own_recipe_trains_on_the_probabilities(tiny_dataset):
    syn = distill(tiny_dataset.train, 1, method_config("datm", overrides=TINY), seed=0, num_classes=4)
    cfg, data = METHODS["datm"].own_recipe(TrainConfig(width=8), syn, "blobs")
    assert cfg == datm_eval_config(TrainConfig(width=8)) and torch.equal(data.labels, syn.labels)


def test_ftd_experts_option(tiny_dataset):
    from ddlnl.config import identity
    from ddlnl.experts import FTD

    plain = method_config("datm", overrides=TINY)
    assert plain.expert_config().sam_rho == 0.0
    assert not any(k.startswith(("expert_ftd", "expert_sam")) for k in identity(plain))  # old keys stay valid
    cfg = method_config("datm", overrides={**TINY, "expert_ftd": True})
    ecfg = cfg.expert_config()
    assert {k: getattr(ecfg, k) for k in FTD} == FTD
    assert "expert_ftd" in identity(cfg)
    syn = METHODS["datm"].distill(tiny_dataset.train, 2, cfg, seed=0, num_classes=4)
    assert torch.isfinite(syn.images).all() and syn.lr > 0
    with pytest.raises(ConfigError, match="expert_ftd needs"):
        method_config("datm", overrides={**TINY, "expert_ftd": True, "expert_sam_rho": 0.0})


def test_zca_distils_in_the_whitened_space_and_evaluation_whitens_the_test_set(tiny_dataset, monkeypatch):
    # DATM --zca: experts and synthetic images live in ZCA space (kornia, fitted on the training
    # pixels); the set records it and ddlnl's evaluation feeds the test set through the same map.
    from ddlnl import evaluation, pipeline
    from ddlnl.augment import zca_space_for
    from ddlnl.noise import make_noise, parse_noise_spec

    cfg = method_config("datm", overrides={**TINY, "iterations": 0, "zca": True})
    syn = distill(tiny_dataset.train, 2, cfg, seed=0, num_classes=4)
    assert syn.meta["image_space"] == "zca" and syn.meta["zca"]["convention"] == "kornia"
    space = zca_space_for(syn.meta, tiny_dataset.train.images)
    whitened = space.transform(tiny_dataset.train.images)
    # With no iteration the set is its initialisation: real images, taken in ZCA space.
    assert torch.allclose(syn.images, whitened[torch.tensor(syn.meta["init_indices"])], atol=1e-5)
    plain = distill(tiny_dataset.train, 2, method_config("datm", overrides={**TINY, "iterations": 0}),
                    seed=0, num_classes=4)
    assert plain.meta["image_space"] == "normalised" and plain.meta["expert_key"] != syn.meta["expert_key"]

    seen = {}

    def fake_evaluate(data, test, cfg, **kwargs):
        seen["test"] = test
        return pipeline.EvalResult(accs=[0.0], seeds=[0])

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)  # the one evaluation path
    noisy = make_noise(parse_noise_spec("none"), tiny_dataset, 0)
    prepared = pipeline.Prepared(dataset=tiny_dataset, noisy=noisy, noisy_train=tiny_dataset.train)
    pipeline.evaluate_synthetic(syn, prepared, TrainConfig(), n_runs=1, seed=0, device=torch.device("cpu"))
    assert torch.allclose(seen["test"].images, space.transform(tiny_dataset.test.images))
    pipeline.evaluate_synthetic(plain, prepared, TrainConfig(), n_runs=1, seed=0, device=torch.device("cpu"))
    assert torch.equal(seen["test"].images, tiny_dataset.test.images)


def test_label_epoch_minus_one_is_the_experts_last_epoch(tiny_dataset):
    # The reference labels with buffer[...][-1]: its experts store train_epochs + 1 parameter sets,
    # so -1 is epoch train_epochs (the study: 100). The initial logits are the mean, over experts
    # predicting the slot's class, of the logits of that epoch's network.
    from ddlnl.methods.datm_init import initial_label_logits

    cfg = method_config("datm", overrides={**TINY, "expert_train_epochs": 3, "max_start_epoch": 2})
    experts = get_experts(tiny_dataset.train, cfg.expert_config(), seed=0, num_classes=4, cache=False)
    student = Student(experts.build_model(), experts.layout, None)
    images = tiny_dataset.train.images[:8]
    slots = tiny_dataset.train.labels[:8]
    last, _ = initial_label_logits(images, slots, experts, student, label_epoch=-1, device=torch.device("cpu"))
    explicit, _ = initial_label_logits(images, slots, experts, student, label_epoch=3, device=torch.device("cpu"))
    assert torch.equal(last, explicit)
    by_hand = []
    for e in range(experts.num_experts):
        with torch.no_grad():
            by_hand.append(functional_forward(student.model, experts.layout, experts.params(e, 3), images))
    stack = torch.stack(by_hand)
    ok = (stack.argmax(2) == slots).float()
    expected = (stack * ok[..., None]).sum(0) / ok.sum(0).clamp_min(1)[:, None]
    rows = ok.sum(0) > 0
    assert torch.allclose(last[rows], expected[rows], atol=1e-5)
