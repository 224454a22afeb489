"""``random``'s defining steps: ``ipc`` distinct real images from every *noisy* class, unchanged,
with their noisy labels, class-major, each image of a class equally likely to be drawn."""

import pytest
import torch

from ddlnl.data import LabeledTensors
from ddlnl.errors import ConfigError
from ddlnl.methods import random_subset
from ddlnl.methods.common import check_ipc, class_indices


def _noisy(tiny_dataset):
    train = tiny_dataset.train
    noisy = train.labels.clone()
    noisy[::4] = (noisy[::4] + 1) % 4  # a quarter of the labels are wrong
    return train.with_labels(noisy)


def test_real_images_of_each_noisy_class_with_their_noisy_labels(tiny_dataset):
    t = _noisy(tiny_dataset)
    syn = random_subset.distill(t, 3, seed=5, num_classes=4)
    idx = torch.tensor(syn.meta["source_indices"])
    assert torch.equal(syn.images, t.images[idx]) and torch.equal(syn.labels, t.labels[idx])
    assert syn.labels.tolist() == [c for c in range(4) for _ in range(3)]  # class-major, by NOISY class
    assert len(set(idx.tolist())) == 12
    assert random_subset.distill(t, 3, seed=6, num_classes=4).meta["source_indices"] != syn.meta["source_indices"]


def test_every_image_of_a_class_is_equally_likely():
    # 3 classes of 10 images, ipc 2, 300 seeds: each image is expected 60 times.
    data = LabeledTensors(torch.arange(30.0).view(30, 1, 1, 1), torch.arange(3).repeat_interleave(10))
    counts = torch.zeros(30)
    for seed in range(300):
        idx = random_subset.distill(data, 2, seed=seed, num_classes=3).meta["source_indices"]
        counts[idx] += 1
    assert counts.sum() == 300 * 6
    assert counts.min() > 35 and counts.max() < 85  # binomial(300, 0.2): sd ~ 6.9


def test_class_indices_and_ipc_limit():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    assert [i.tolist() for i in class_indices(labels, 4)] == [[1, 4], [3], [0, 2, 5], []]
    idx = class_indices(labels, 3)
    check_ipc(idx, 1)
    with pytest.raises(ConfigError, match="^ipc must be >= 1, got 0$"):
        check_ipc(idx, 0)
    with pytest.raises(ConfigError, match="^ipc=2 exceeds the 1 images of \\(noisy\\) class 1: use ipc <= 1$"):
        check_ipc(idx, 2)


def test_same_seed_same_subset_and_the_set_records_what_made_it(tiny_dataset):
    t = _noisy(tiny_dataset)
    a = random_subset.distill(t, 2, seed=9, num_classes=4)
    b = random_subset.distill(t, 2, seed=9, num_classes=4)
    assert a.meta["source_indices"] == b.meta["source_indices"] and torch.equal(a.images, b.images)
    assert {k: a.meta[k] for k in ("method", "config", "ipc", "seed", "num_classes")} == \
        {"method": "random", "config": {}, "ipc": 2, "seed": 9, "num_classes": 4}


def test_per_class_budgets_are_checked_against_each_noisy_class():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])  # class sizes 2, 1, 3
    idx = class_indices(labels, 3)
    check_ipc(idx, [2, 1, 3])  # every class's whole size is allowed
    check_ipc(idx, [1, 1, 1])
    for bad in ([1, 1], [1, 1, 1, 1], [1, 0, 1]):
        with pytest.raises(ConfigError, match=r"^per-class ipc must give one value >= 1 for each of the 3 classes, "
                                              rf"got \[{', '.join(map(str, bad))}\]$"):
            check_ipc(idx, bad)
    with pytest.raises(ConfigError, match=r"^per-class ipc must give one value >= 1 for each of the 0 classes"):
        check_ipc([], [])
    with pytest.raises(ConfigError, match=r"^ipc 2 for \(noisy\) class 1 exceeds its 1 images: lower that class's "
                                          r"budget$"):
        check_ipc(idx, [1, 2, 1])


def test_per_class_budget_draws_that_many_real_images_of_each_noisy_class(tiny_dataset):
    t = _noisy(tiny_dataset)
    syn = random_subset.distill(t, [1, 3, 2, 4], seed=5, num_classes=4)
    idx = torch.tensor(syn.meta["source_indices"])
    assert syn.labels.tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 3, 3]
    assert torch.equal(t.labels[idx], syn.labels) and len(set(idx.tolist())) == 10
