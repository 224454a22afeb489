"""Long-tailed construction (counts as requested), per-class IPC budgets (sum to the total, within
bounds, following their rule), per-class accuracy and head/middle/tail thirds."""

import numpy as np
import pytest
import torch

from ddlnl.errors import ConfigError
from ddlnl.longtail import (class_thirds, group_accuracy, ipc_budget, longtail_counts, longtail_indices,
                            per_class_accuracy)


def test_longtail_counts_follow_the_exponential_profile():
    # Independent values: n_max * r^(-c/9) for r = 100, n_max = 1000 (CIFAR-10-LT style).
    expected = [int(np.floor(1000 * 100 ** (-c / 9) + 1e-9)) for c in range(10)]
    assert longtail_counts(1000, 10, 100) == expected
    assert expected[0] == 1000 and expected[-1] == 10 and expected[5] == 77
    assert longtail_counts(500, 10, 10)[-1] == 50
    assert longtail_counts(500, 10, 1) == [500] * 10
    with pytest.raises(ConfigError, match="ratio"):
        longtail_counts(50, 10, 100)


def test_longtail_indices_give_the_requested_counts_per_class():
    labels = torch.arange(10).repeat_interleave(300)[torch.randperm(3000, generator=torch.Generator().manual_seed(0))]
    keep = longtail_indices(labels, 10, seed=3, n_max=200)
    got = torch.bincount(labels[keep], minlength=10).tolist()
    assert got == longtail_counts(200, 10, 10)
    assert keep.unique().numel() == keep.numel()
    assert torch.equal(keep, longtail_indices(labels, 10, seed=3, n_max=200))  # seeded
    assert not torch.equal(keep, longtail_indices(labels, 10, seed=4, n_max=200))
    assert torch.bincount(labels[longtail_indices(labels, 100, seed=0)], minlength=10)[0] == 300  # n_max = smallest class


def test_budgets_sum_to_the_total_and_follow_their_rule():
    counts = longtail_counts(500, 10, 100)  # 500 ... 5
    for total in (10, 37, 100, 500):
        for rule in ("uniform", "proportional", "clean"):
            b = ipc_budget(rule, total, counts, clean_counts=[0.6 * c for c in counts])
            assert sum(b) == total and len(b) == 10
            assert all(1 <= n <= c for n, c in zip(b, counts))
    # Classes 8 and 9 cap at their 8 and 5 images; the 7 left over go one each to the lowest classes.
    assert counts[-2:] == [8, 5]
    assert ipc_budget("uniform", 100, counts) == [11] * 7 + [10, 8, 5]
    prop = ipc_budget("proportional", 100, counts)
    assert prop[0] > prop[4] > prop[9] and prop[9] == 1
    # clean: a class whose labels are mostly wrong gets less than its label count would give it.
    given = [100, 100, 100]
    b = ipc_budget("clean", 30, given, clean_counts=[90, 50, 10])
    assert sum(b) == 30 and b[0] > b[1] > b[2] and b == [18, 10, 2]  # 30 x (0.6, 0.33, 0.07)
    with pytest.raises(ConfigError, match="between"):
        ipc_budget("uniform", 5, counts)
    with pytest.raises(ConfigError, match="clean count"):
        ipc_budget("clean", 30, given)
    with pytest.raises(ConfigError, match="budget rule"):
        ipc_budget("square", 30, given)


def test_per_class_accuracy_and_thirds():
    pred = np.array([0, 0, 1, 1, 2, 0])
    true = np.array([0, 0, 1, 2, 2, 2])
    assert per_class_accuracy(pred, true, 4)[:3] == [1.0, 1.0, pytest.approx(1 / 3)]
    assert np.isnan(per_class_accuracy(pred, true, 4)[3])
    head, middle, tail = class_thirds([5, 500, 50, 100, 7, 300, 10, 200, 20, 30])
    assert head == [1, 3, 5, 7] and middle == [2, 8, 9] and tail == [0, 4, 6]
    acc = group_accuracy([0.1, 0.9, 0.5, 0.9, 0.1, 0.9, 0.1, 0.9, 0.5, 0.5], [5, 500, 50, 100, 7, 300, 10, 200, 20, 30])
    assert acc == pytest.approx({"head": 0.9, "middle": 0.5, "tail": 0.1})


def test_evaluation_records_per_class_accuracy_consistent_with_overall(tiny_dataset):
    from ddlnl.train import TrainConfig, evaluate

    cfg = TrainConfig(epochs=2, width=8, depth=2, augment="none")
    res = evaluate(tiny_dataset.train, tiny_dataset.test, cfg, num_classes=4, n_runs=1, seed=0)
    per = np.asarray(res.to_dict()["per_class"][0])
    counts = torch.bincount(tiny_dataset.test.labels, minlength=4).numpy()
    # Overall accuracy is the count-weighted mean of the per-class accuracies.
    assert float((per * counts).sum() / counts.sum()) == pytest.approx(res.accs[0], abs=1e-6)


def test_thirds_text_reads_records_old_and_new():
    from ddlnl.longtail import thirds_text

    assert thirds_text({"mean": 0.5}) == "-"  # a record written before per-class accuracy existed
    rec = {"per_class": [[1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0], [1.0] * 4 + [0.5] * 3 + [0.2] * 3]}
    assert thirds_text(rec) == "100.0/50.0/10.0"
