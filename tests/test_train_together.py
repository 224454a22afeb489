"""Evaluation runs trained together (``train_together``) against the exact one-by-one path."""

from dataclasses import replace

import pytest
import torch

from ddlnl.data import LabeledTensors
from ddlnl.errors import ConfigError
from ddlnl.train import (TrainConfig, build_model, evaluate, together_supported, train,
                         train_together)

# Full batch (120 images, batch 128), no augmentation: the deterministic case.
FULL = TrainConfig(width=8, epochs=6, batch_size=128, lr=0.05, augment="none")
SEEDS = [11, 22, 33]


def _models(cfg, seeds, channels=1, classes=4, size=(8, 8)):
    return [build_model(cfg, channels=channels, num_classes=classes, image_size=size, seed=s) for s in seeds]


def _sequential_and_together(data, cfg, seeds=SEEDS, **kw):
    seq = _models(cfg, seeds)
    seq_res = [train(m, data, cfg, seed=s, **kw) for m, s in zip(seq, seeds)]
    tog = _models(cfg, seeds)
    tog_res = train_together(tog, data, cfg, seeds=seeds, **kw)
    return seq, seq_res, tog, tog_res


def _assert_same_params(seq, tog, atol):
    for a, b in zip(seq, tog):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=atol, rtol=0), k


@pytest.mark.parametrize("cfg", [
    FULL,  # step schedule (lr / 10 at epoch 3), SGD momentum + weight decay, instance norm
    replace(FULL, schedule="cosine", warmup_epochs=2, final_lr_fraction=0.01),
    # Adam without a norm: a conv bias before instance norm has a zero true gradient, whose
    # round-off Adam would blow up to full-size steps (in either path, differently).
    replace(FULL, optimizer="adam", lr=0.005, norm="none"),
    replace(FULL, loss="mse"),
    replace(FULL, norm="batch", pooling="max", activation="gelu"),
    replace(FULL, norm="none", depth=2, activation="softplus"),
], ids=["step-sgd", "cosine-warmup", "adam", "mse", "batchnorm-maxpool-gelu", "nonorm-depth2"])
def test_full_batch_together_equals_sequential_parameters(tiny_dataset, cfg):
    seq, seq_res, tog, tog_res = _sequential_and_together(tiny_dataset.train, cfg)
    _assert_same_params(seq, tog, atol=1e-5)
    for a, b in zip(seq_res, tog_res):
        assert b.history[-1]["loss"] == pytest.approx(a.history[-1]["loss"], rel=1e-5)
        assert b.images_seen == a.images_seen


def test_learned_lr_and_soft_labels_match(tiny_dataset):
    g = torch.Generator().manual_seed(0)
    soft = torch.softmax(3 * torch.randn(len(tiny_dataset.train), 4, generator=g), 1)
    data = LabeledTensors(tiny_dataset.train.images, soft)
    seq, _, tog, _ = _sequential_and_together(data, FULL, lr=0.123)
    _assert_same_params(seq, tog, atol=1e-5)
    # The learned lr is used: at the config's lr the result is another one.
    other = _models(FULL, SEEDS)
    train_together(other, data, FULL, seeds=SEEDS)
    assert not torch.allclose(other[0].classifier.weight, tog[0].classifier.weight, atol=1e-3)


def test_minibatches_and_dsa_keep_each_runs_own_draws(tiny_dataset):
    """Batch order and DSA draws come from each run's seed: run r matches its sequential twin."""
    cfg = TrainConfig(width=8, epochs=3, batch_size=32, lr=0.01, augment="dsa")  # 4 steps/epoch, last one 24
    seq, _, tog, _ = _sequential_and_together(tiny_dataset.train, cfg)
    _assert_same_params(seq, tog, atol=1e-4)
    # ... and the runs differ from each other (different seeds, not one run copied n times).
    assert not torch.allclose(tog[0].classifier.weight, tog[1].classifier.weight, atol=1e-2)


def test_same_seeds_same_results(tiny_dataset):
    cfg = TrainConfig(width=8, epochs=2, batch_size=32, augment="dsa")
    a, b = _models(cfg, SEEDS), _models(cfg, SEEDS)
    train_together(a, tiny_dataset.train, cfg, seeds=SEEDS)
    train_together(b, tiny_dataset.train, cfg, seeds=SEEDS)
    for ma, mb in zip(a, b):
        for pa, pb in zip(ma.parameters(), mb.parameters()):
            assert torch.equal(pa, pb)


def test_evaluate_together_and_sequential_agree(tiny_dataset):
    ds = tiny_dataset
    cfg = TrainConfig(width=16, epochs=15, batch_size=32, lr=0.05, augment="none")
    seq = evaluate(ds.train, ds.test, cfg, num_classes=4, n_runs=3, seed=4, together=False)
    tog = evaluate(ds.train, ds.test, cfg, num_classes=4, n_runs=3, seed=4, together=True)
    assert tog.seeds == seq.seeds
    assert tog.accs == pytest.approx(seq.accs, abs=1 / len(ds.test) + 1e-9)
    assert seq.mean > 0.9


def test_monitor_and_selection_on_a_noisy_split_match(tiny_dataset):
    ds = tiny_dataset
    val = LabeledTensors(ds.test.images[:40], ds.test.labels[:40].roll(1))  # a noisy split, not the test set
    kw = dict(monitor={"noisy_val": val}, record_every=2, select="noisy_val")
    cfg = replace(FULL, epochs=8)
    seq, seq_res, tog, tog_res = _sequential_and_together(ds.train, cfg, **kw)
    for a, b in zip(seq_res, tog_res):
        assert [h["epoch"] for h in b.history] == [h["epoch"] for h in a.history] == [2, 4, 6, 8]
        assert [h["noisy_val_acc"] for h in b.history] == [h["noisy_val_acc"] for h in a.history]
        assert [h["lr"] for h in b.history] == [h["lr"] for h in a.history]
    _assert_same_params(seq, tog, atol=1e-5)  # the selected epoch's weights
    with pytest.raises(ConfigError, match="test accuracy"):
        train_together(_models(cfg, SEEDS), ds.train, cfg, seeds=SEEDS, monitor={"test": ds.test}, select="test")


def test_unsupported_configs_train_one_by_one(tiny_dataset):
    sam = replace(FULL, sam_rho=0.05)
    model = _models(sam, [0])[0]
    assert not together_supported(model, sam) and together_supported(model, FULL)
    with pytest.raises(ConfigError, match="one by one"):
        train_together([model], tiny_dataset.train, sam, seeds=[0])
    a = evaluate(tiny_dataset.train, tiny_dataset.test, sam, num_classes=4, n_runs=2, seed=1, together=True)
    b = evaluate(tiny_dataset.train, tiny_dataset.test, sam, num_classes=4, n_runs=2, seed=1, together=False)
    assert a.accs == b.accs
