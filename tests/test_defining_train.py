"""The training loop's defining steps, pinned through :func:`ddlnl.train.train` itself.

A model whose logits are a learned bias (``x`` is ignored) and a loss whose gradient is known in
closed form make every SGD step computable by hand, independently of the loop:

- the ``step`` schedule: lr until epoch ``epochs // 2`` (0-based), then lr x 0.1;
- SGD with momentum and weight decay as torch defines them (``v = m v + g + wd w``, ``w -= lr v``)
  at the configured values, one step per batch of ``batch_size``;
- every sample is used exactly once per epoch (a fresh permutation per epoch);
- every training batch goes through the augmentation (DSA) when it is on, never when it is off;
- early stopping returns the weights of the earliest epoch with the best accuracy on the
  *selected* (validation) split, whatever the other monitored splits say;
- the schedule's lr is set every step (``epoch + step / steps_per_epoch``), the history records
  every ``record_every``-th epoch and the last with the sample-weighted mean loss and the lr;
- CutMix's loss mixes both label sets by the share of own pixels; ``sam_rho > 0`` takes SAM's step.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from ddlnl.data import LabeledTensors
from ddlnl.train import TrainConfig, train


class Bias(nn.Module):
    """Logits = a learned bias, the same for every image; records the inputs it sees."""

    def __init__(self, start: list[float]) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(start, dtype=torch.float64))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.b.expand(x.shape[0], -1)


def data(n: int, label: int = 0) -> LabeledTensors:
    images = torch.arange(n * 4, dtype=torch.float64).view(n, 1, 2, 2) / (4 * n)
    return LabeledTensors(images, torch.full((n,), label, dtype=torch.long))


def first_logit(logits, targets, idx, epoch):  # d loss / d b0 = 1 at every step
    return logits[:, 0].mean()


def simulate(b0: float, steps_lr: list[float], momentum: float, wd: float, grad: float = 1.0) -> float:
    """torch.optim.SGD on one weight with loss gradient ``grad`` (dampening 0, no Nesterov)."""
    v = None
    for lr in steps_lr:
        g = grad + wd * b0
        v = g if v is None else momentum * v + g
        b0 -= lr * v
    return b0


@pytest.mark.parametrize("epochs,n,batch", [(4, 10, 4), (5, 6, 6)])
def test_step_schedule_momentum_and_weight_decay_are_the_sgd_steps_by_hand(epochs, n, batch):
    cfg = TrainConfig(epochs=epochs, batch_size=batch, augment="none")  # lr 0.01, momentum 0.9, wd 5e-4
    model = Bias([0.3, 0.7])
    train(model, data(n), cfg, seed=0, lr=0.2, loss_fn=first_logit)
    steps = math.ceil(n / batch)
    lrs = [0.2 * (0.1 if e >= epochs // 2 else 1.0) for e in range(epochs) for _ in range(steps)]
    assert float(model.b.detach()[0]) == pytest.approx(simulate(0.3, lrs, 0.9, 5e-4), rel=1e-9)
    # b1 has no loss gradient: only weight decay (through the momentum buffer) moves it
    assert float(model.b.detach()[1]) == pytest.approx(simulate(0.7, lrs, 0.9, 5e-4, grad=0.0), rel=1e-12)
    assert float(model.b.detach()[1]) < 0.7
    # the published defaults are those of the DC/DSA/DM evaluation (evaluate_synset)
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.schedule) == (0.01, 0.9, 5e-4, "step")


def test_constant_schedule_without_momentum_is_plain_sgd():
    cfg = TrainConfig(epochs=3, batch_size=5, augment="none", momentum=0.0, weight_decay=0.0, schedule="constant")
    model = Bias([1.0, 0.0])
    train(model, data(10), cfg, seed=1, lr=0.1, loss_fn=first_logit)
    assert float(model.b.detach()[0]) == pytest.approx(1.0 - 0.1 * 6, rel=1e-12)


def test_every_sample_is_used_once_per_epoch_in_a_fresh_order():
    seen: list[list[int]] = []

    def record(logits, targets, idx, epoch):
        while len(seen) <= epoch:
            seen.append([])
        seen[epoch].extend(idx.tolist())
        return logits[:, 0].mean()

    cfg = TrainConfig(epochs=3, batch_size=4, augment="none")
    train(Bias([0.0, 0.0]), data(10), cfg, seed=2, loss_fn=record)
    assert [sorted(s) for s in seen] == [list(range(10))] * 3
    assert len({tuple(s) for s in seen}) == 3  # another permutation every epoch


@pytest.mark.parametrize("augment", ["dsa", "none"])
def test_every_training_batch_is_augmented_when_dsa_is_on(augment):
    d = data(8)
    model = Bias([0.0, 0.0])
    cfg = TrainConfig(epochs=2, batch_size=3, augment=augment, dsa_strategy="brightness")
    train(model, d, cfg, seed=3, loss_fn=first_logit)
    assert len(model.seen) == 2 * 3
    raw = {tuple(img.flatten().tolist()) for img in d.images}
    for x in model.seen:
        for img in x:
            assert (tuple(img.flatten().tolist()) in raw) == (augment == "none")


def test_early_stopping_chooses_the_earliest_best_epoch_on_the_selected_split_only():
    # b0 falls by 0.15 per epoch from 0.35: argmax is class 0 for epochs 1-2, class 1 from epoch 3.
    cfg = TrainConfig(epochs=5, batch_size=4, augment="none", momentum=0.0, weight_decay=0.0, schedule="constant")
    val, test = data(4, label=0), data(4, label=1)
    model = Bias([0.5, 0.0])
    result = train(model, data(4), cfg, seed=4, lr=0.15, loss_fn=first_logit, monitor={"val": val, "test": test},
                   record_every=1, select="val")
    assert [h["val_acc"] for h in result.history] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert [h["test_acc"] for h in result.history] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert float(model.b.detach()[0]) == pytest.approx(0.35)  # epoch 1's weights, not the test-best epoch 4-5's
    last = Bias([0.5, 0.0])
    train(last, data(4), cfg, seed=4, lr=0.15, loss_fn=first_logit, monitor={"val": val}, record_every=1)
    assert float(last.b.detach()[0]) == pytest.approx(0.5 - 5 * 0.15)  # without select: the last epoch


def test_losses_and_schedules_by_hand():
    import torch.nn.functional as F

    from ddlnl.train import _loss, _lr_at

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    hard = torch.tensor([0, 2])
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]])
    mse = TrainConfig(loss="mse")
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert float(_loss(mse, logits, hard)) == pytest.approx(float(0.5 * ((logits - onehot) ** 2).mean()))
    assert float(_loss(mse, logits, soft)) == pytest.approx(float(0.5 * ((logits - soft) ** 2).mean()))
    ce = TrainConfig()
    logp = F.log_softmax(logits, dim=1)
    assert float(_loss(ce, logits, soft)) == pytest.approx(float(-(soft * logp).sum(1).mean()))
    assert float(_loss(ce, logits, hard)) == pytest.approx(float(-logp[[0, 1], [0, 2]].mean()))
    # multistep (DANCE): x0.2 from epoch 2N//3 (integer division) and again from 5N//6; N = 10 -> 6 and 8
    ms = TrainConfig(epochs=10, schedule="multistep")
    assert [_lr_at(ms, 1.0, e, 0.0) for e in (5, 6, 7, 8, 9)] == pytest.approx([1, 0.2, 0.2, 0.04, 0.04])
    # cosine from lr to lr * floor over the epochs after warm-up
    cos = TrainConfig(epochs=12, schedule="cosine", warmup_epochs=2, final_lr_fraction=0.1)
    for e, frac in ((2, 0.0), (4, 0.5), (7, 0.0), (11, 0.75)):
        progress = (e + frac - 2) / 10
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        assert _lr_at(cos, 1.0, e, frac) == pytest.approx(expected)
    assert _lr_at(cos, 1.0, 1, 0.0) == pytest.approx(0.5)  # linear warm-up


def test_history_records_every_kth_epoch_and_the_last_with_the_epochs_mean_loss_and_lr():
    # b0 falls by lr per step (loss = mean logit 0, gradient 1; no momentum, no decay), so each
    # batch's loss is b0 before its step; the epoch's loss is the sample-weighted mean over its
    # batches (4, 4 and 2 samples here), its lr the step schedule's (x0.1 from epoch 5 // 2).
    cfg = TrainConfig(epochs=5, batch_size=4, augment="none", momentum=0.0, weight_decay=0.0, schedule="step")
    lr_of = [0.1 * (0.1 if e >= 2 else 1.0) for e in range(5)]
    b0, by_epoch = 0.3, []
    for e in range(5):
        total = 0.0
        for size in (4, 4, 2):
            total += b0 * size
            b0 -= lr_of[e]
        by_epoch.append(total / 10)
    val = {"val": data(4)}
    for record_every, epochs in ((2, [2, 4, 5]), (3, [3, 5]), (0, [5]), (1, [1, 2, 3, 4, 5])):
        start = time.perf_counter()
        res = train(Bias([0.3, 0.7]), data(10), cfg, seed=5, lr=0.1, loss_fn=first_logit, monitor=val,
                    record_every=record_every)
        wall = time.perf_counter() - start
        assert [h["epoch"] for h in res.history] == epochs
        for h in res.history:
            assert h["loss"] == pytest.approx(by_epoch[h["epoch"] - 1], rel=1e-12)
            assert h["lr"] == pytest.approx(lr_of[h["epoch"] - 1], rel=1e-12)
            assert h["val_acc"] == 0.0  # b1 > b0 throughout: every image is called class 1
        assert res.images_seen == 5 * 10
        assert 0.0 < res.seconds <= wall
    bare = train(Bias([0.3, 0.7]), data(10), cfg, seed=5, lr=0.1, loss_fn=first_logit)
    assert bare.history == [{"epoch": 5, "loss": pytest.approx(by_epoch[-1], rel=1e-12)}]


def test_the_lr_follows_the_schedule_within_each_epoch():
    # Warm-up then cosine: the lr changes every step (epoch + step / steps_per_epoch), written out
    # here from the formula; b0 then ends at b0 - sum of the per-step lrs.
    cfg = TrainConfig(epochs=4, batch_size=3, augment="none", momentum=0.0, weight_decay=0.0, schedule="cosine",
                      warmup_epochs=1, final_lr_fraction=0.1)
    lrs = []
    for e in range(4):
        for s in range(3):  # 8 samples, batches of 3: 3 steps per epoch
            t = e + s / 3
            lrs.append(0.2 * t if t < 1 else 0.2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 1) / 3))))
    model = Bias([1.0, 0.0])
    res = train(model, data(8), cfg, seed=6, lr=0.2, loss_fn=first_logit, monitor={"val": data(2)},
                record_every=1)
    assert float(model.b.detach()[0]) == pytest.approx(1.0 - sum(lrs), rel=1e-12)
    assert [h["lr"] for h in res.history] == pytest.approx(lrs[2::3], rel=1e-12)  # the last step's lr


def test_cutmix_loss_is_the_pixel_share_weighted_mix_of_both_labels():
    # CutMix (Yun et al.): the loss of a pasted batch is ratio * loss(own labels) + (1 - ratio) *
    # loss(labels of the pasted images), ratio = the share of its own pixels. Images are constant
    # (value i + 1), so the share and the pasted source are read off the batch the model sees.
    import torch.nn.functional as F

    images = torch.stack([torch.full((1, 8, 8), float(i + 1), dtype=torch.float64) for i in range(4)])
    d = LabeledTensors(images, torch.tensor([0, 1, 2, 3]))
    cfg = TrainConfig(epochs=1, batch_size=4, augment="none", cutmix_prob=1.0)
    for seed in range(50):
        seen, calls = [], []
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).double()
        model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))

        def ce(logits, targets, idx, epoch):
            loss = F.cross_entropy(logits, targets)
            calls.append((targets.clone(), idx.clone(), float(loss.detach())))
            return loss

        res = train(model, d, cfg, seed=seed, loss_fn=ce)
        x, (own_y, own_idx, own_loss), (mix_y, mix_idx, mix_loss) = seen[0].flatten(1), calls[0], calls[1]
        own_value = (own_idx + 1).double()[:, None]
        pasted = (x != own_value).double().mean(dim=1)
        moved = own_idx != mix_idx
        if moved.any() and 0.0 < float(pasted[moved][0]) < 1.0:
            break
    else:
        pytest.fail("no seed gave a partial box")
    assert len(calls) == 2  # one loss per label set, for the one step
    ratio = 1.0 - float(pasted[moved][0])
    np.testing.assert_allclose(pasted[moved].numpy(), 1.0 - ratio)  # one box for the whole batch
    assert torch.equal(own_y, d.labels[own_idx]) and torch.equal(mix_y, d.labels[mix_idx])
    # the pasted pixels are those of the images whose labels the second term uses
    for row, src in zip(x[moved], mix_idx[moved]):
        assert set(row.unique().tolist()) <= {float(src + 1)} | set(own_value.flatten().tolist())
        assert float(src + 1) in row.tolist()
    assert res.history[-1]["loss"] == pytest.approx(ratio * own_loss + (1.0 - ratio) * mix_loss, rel=1e-12)


def test_a_positive_sam_rho_takes_the_sharpness_aware_step():
    # SAM (Foret et al.) on a quadratic in one weight: g = b0 - 1, the ascent point b0 + rho g / |g|
    # = b0 - rho (b0 < 1), and the step uses the gradient there, b0 - rho - 1 (the second weight has
    # no gradient, so GSAM's orthogonal part is 0 and alpha changes nothing).
    def quadratic(logits, targets, idx, epoch):
        return 0.5 * (logits[:, 0].mean() - 1.0) ** 2

    for rho, alpha in ((0.05, 0.0), (0.2, 0.3), (0.0, 0.0)):
        cfg = TrainConfig(epochs=3, batch_size=4, augment="none", momentum=0.0, weight_decay=0.0,
                          schedule="constant", sam_rho=rho, sam_alpha=alpha)
        model = Bias([0.3, 0.0])
        train(model, data(4), cfg, seed=7, lr=0.1, loss_fn=quadratic)
        b0 = 0.3
        for _ in range(3):
            b0 -= 0.1 * (b0 - rho - 1.0)
        assert float(model.b.detach()[0]) == pytest.approx(b0, rel=1e-12)
        assert len(model.seen) == 3 * (2 if rho > 0 else 1)  # the loss is evaluated again at w + e only with SAM


def test_select_must_name_a_monitored_split():
    from ddlnl.errors import ConfigError

    cfg = TrainConfig(epochs=1, batch_size=4, augment="none")
    for monitor in (None, {"train": data(4)}):
        with pytest.raises(ConfigError, match="^select='val' must name a monitored split$"):
            train(Bias([0.0, 0.0]), data(4), cfg, seed=0, monitor=monitor, select="val")
    with pytest.raises(ConfigError, match="^selecting a checkpoint by test accuracy is not allowed"):
        train(Bias([0.0, 0.0]), data(4), cfg, seed=0, monitor={"test": data(4)}, select="test")


def test_the_seed_alone_fixes_the_batch_order_augmentation_and_cutmix_draws():
    # Same seed -> the same run, whatever the global torch RNG holds; another seed -> another run.
    cfg = TrainConfig(epochs=2, batch_size=4, augment="dsa", dsa_strategy="color_crop", cutmix_prob=1.0)
    images = torch.arange(10 * 64, dtype=torch.float64).view(10, 1, 8, 8) / 640  # 8 x 8: room for a CutMix box
    d = LabeledTensors(images, torch.zeros(10, dtype=torch.long))
    runs = []
    for seed, global_seed in ((3, 0), (3, 1), (4, 0)):
        torch.manual_seed(global_seed)
        model = Bias([0.0, 0.0])
        train(model, d, cfg, seed=seed, loss_fn=first_logit)
        runs.append(torch.cat([x.flatten() for x in model.seen]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
