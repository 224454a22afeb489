"""``evaluation_recipe`` fits the network to the images itself, so a library caller that passes a
plain ``TrainConfig`` (``evaluate_synthetic``'s documented input: "before fitting") gets the same
recipe as a resolved ``ddlnl run`` job, whose config arrives already fitted."""

from __future__ import annotations

import pytest
import torch

from ddlnl.data import LabeledTensors, load_digits
from ddlnl.pipeline import JobConfig, evaluation_recipe, resolve_job
from ddlnl.synthetic import SyntheticSet
from ddlnl.train import TrainConfig


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _set(ds):
    idx = torch.cat([torch.nonzero(ds.train.labels == c).flatten()[:2] for c in range(10)])
    return SyntheticSet(ds.train.images[idx], ds.train.labels[idx], meta={"method": "dm", "ipc": 2, "num_classes": 10})


def test_an_unfitted_config_is_fitted_to_8x8_digits(digits):
    raw = TrainConfig()  # depth 3 ends at a 1x1 map on 8x8 images; flip mirrors digits
    assert raw.depth == 3 and "flip" in raw.dsa_strategy
    for syn in (_set(digits), LabeledTensors(digits.train.images[:20], digits.train.labels[:20])):
        cfg, _, _ = evaluation_recipe(syn, digits, raw)
        assert cfg.depth == 2 and "flip" not in cfg.dsa_strategy.split("_")


def test_the_recipe_of_a_raw_config_equals_that_of_a_resolved_job(digits):
    resolved = resolve_job(JobConfig(dataset="digits", methods=("dm",)), [], torch.device("cpu"),
                           image_size=digits.image_size)
    assert resolved.train.depth == 2  # a resolved job arrives fitted; fitting again changes nothing
    syn = _set(digits)
    fitted, _, _ = evaluation_recipe(syn, digits, resolved.train)
    from_raw, _, _ = evaluation_recipe(syn, digits, TrainConfig(**{**resolved.train.__dict__, "depth": 3}))
    assert fitted == resolved.train.for_dataset("digits") and from_raw == fitted
