"""The training loop's defining steps, pinned through :func:`ddlnl.train.train` itself.

A model whose logits are a learned bias (``x`` is ignored) and a loss whose gradient is known in
closed form make every SGD step computable by hand, independently of the loop:

- the ``step`` schedule: lr until epoch ``epochs // 2`` (0-based), then lr x 0.1;
- SGD with momentum and weight decay as torch defines them (``v = m v + g + wd w``, ``w -= lr v``)
  at the configured values, one step per batch of ``batch_size``;
- every sample is used exactly once per epoch (a fresh permutation per epoch);
- every training batch goes through the augmentation (DSA) when it is on, never when it is off;
- early stopping returns the weights of the earliest epoch with the best accuracy on the
  *selected* (validation) split, whatever the other monitored splits say.
"""

from __future__ import annotations

import math

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
