from dataclasses import replace

import pytest
import torch

from ddlnl.data import LabeledTensors
from ddlnl.errors import ConfigError
from ddlnl.train import (BaselineConfig, TrainConfig, accuracy, build_model, evaluate, run_baseline,
                         stratified_split, train)

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
    res = run_baseline(ds.train, ds.test, FAST, BaselineConfig(protocol="early-stop", val_fraction=0.2),
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


def test_adam_with_mse_on_label_vectors_learns(tiny_dataset):
    ds = tiny_dataset
    targets = torch.nn.functional.one_hot(ds.train.labels, 4).float() - 0.25  # centred, as RCIG's labels
    cfg = replace(FAST, optimizer="adam", loss="mse", lr=3e-3, epochs=30)
    res = evaluate(LabeledTensors(ds.train.images, targets), ds.test, cfg, num_classes=4, n_runs=1, seed=0)
    assert res.mean > 0.9
