"""Degenerate distillation runs are named, with the thresholds the module documents."""

from __future__ import annotations

import math

import torch

from ddlnl.diagnostics import (degenerate_run_warnings, rising_warning, saturation_warning,
                               skipped_warning)
from ddlnl.synthetic import SyntheticSet


def test_skipped_counts_more_than_half_of_the_iterations():
    assert skipped_warning({"skipped": 36, "config": {"iterations": 72}}) is None
    text = skipped_warning({"skipped": 71, "config": {"iterations": 72, "threshold": 1.0}})
    assert text == "71 of 72 iterations skipped (objective above the threshold 1.0)"
    assert skipped_warning({"config": {"iterations": 72}}) is None  # a method that never skips


def test_rising_objective_compares_the_last_fifth_with_the_first():
    falling = [10.0 / (i + 1) for i in range(50)]
    assert rising_warning(falling) is None
    assert rising_warning([1.0] * 10 + [1.9] * 10) is None  # below twice the start
    text = rising_warning([0.8] * 10 + [4.08] * 10)
    assert text is not None and "0.8" in text and "4.08" in text
    assert rising_warning([0.1, 5.0, 5.0, 5.0]) is None  # too short a log to judge
    assert rising_warning([1.0] * 10 + [math.nan] * 10) == "objective became non-finite"
    # One outlier at the end does not make a trend (medians, not the last value).
    assert rising_warning([1.0] * 19 + [100.0] + [1.0] * 5) is None


def test_saturation_reads_images_in_pixel_units():
    mean, std = [0.5], [0.25]
    inside = torch.rand(10, 1, 8, 8) * 4 - 2  # pixels 0..1 after de-normalising
    assert saturation_warning(inside, mean, std) is None
    # 60% of pixels at 2.5 in pixel units: beyond one full range above 1.
    far = inside.clone().flatten()
    far[: int(0.6 * far.numel())] = (2.5 - 0.5) / 0.25
    assert "60%" in saturation_warning(far.view_as(inside), mean, std)
    nan = inside.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert "non-finite" in saturation_warning(nan, mean, std)


def test_a_healthy_set_has_no_warnings_and_a_degenerate_one_all_of_its_symptoms():
    images = torch.zeros(4, 1, 8, 8)
    labels = torch.arange(4)
    healthy = SyntheticSet(images, labels, meta={"loss": [3.0, 2.0, 1.5, 1.2, 1.0], "num_classes": 4,
                                                 "config": {"iterations": 5}})
    assert degenerate_run_warnings(healthy, [0.0], [1.0]) == []
    bad = SyntheticSet(images + 50, labels, meta={"loss": [1.0] * 5 + [9.0] * 20, "skipped": 20, "num_classes": 4,
                                                  "config": {"iterations": 25}})
    assert len(degenerate_run_warnings(bad, [0.0], [1.0])) == 3
