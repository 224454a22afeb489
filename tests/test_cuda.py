"""The CUDA path gives what the CPU path gives (skipped without CUDA; run on a GPU machine).

ddlnl draws every random number on the host (`ddlnl.utils.generator`: "sample on CPU and move, so
results match across devices"), so the same seed must give the same synthetic set and the same
trained model on either device, up to float rounding. Each test below runs one thing on both
devices and compares: a random draw made on the device, or a tensor left on the wrong device,
shows up as a difference far above rounding (or as an error).

`DDLNL_TEST_DEVICE=cpu pytest tests/test_cuda.py` runs the same comparisons CPU against CPU, which
checks the tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from ddlnl.cli import main
from ddlnl.methods import METHODS, method_config
from ddlnl.train import TrainConfig, evaluate, train, build_model

from test_methods import TINY
from test_run_dir import TINY as RUN_TINY

DEVICE = os.environ.get("DDLNL_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs CUDA")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).norm() / a.norm().clamp_min(1e-12))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_distils_the_same_set_on_cuda(name, tiny_dataset):
    cfg = method_config(name, overrides=TINY.get(name, {}))
    cpu = METHODS[name].distill(tiny_dataset.train, 2, cfg, seed=3, num_classes=4, device="cpu")
    gpu = METHODS[name].distill(tiny_dataset.train, 2, cfg, seed=3, num_classes=4, device=DEVICE)
    assert gpu.images.shape == cpu.images.shape
    assert torch.isfinite(gpu.images).all()
    assert gpu.hard_labels.tolist() == cpu.hard_labels.tolist()
    # A few iterations of float32 on two devices: rounding differences only.
    assert _rel(cpu.images, gpu.images) < 1e-3, name
    if cpu.labels.is_floating_point():  # learned soft labels (DATM, RCIG)
        assert _rel(cpu.labels, gpu.labels) < 1e-3, name
    assert (cpu.lr is None) == (gpu.lr is None)
    if cpu.lr is not None:
        assert abs(cpu.lr - gpu.lr) <= 1e-3 * abs(cpu.lr) + 1e-12, name


def test_training_loop_gives_the_same_weights_on_cuda(tiny_dataset):
    cfg = TrainConfig(epochs=3, batch_size=32, width=8, depth=2, augment="dsa")
    models = []
    for device in ("cpu", DEVICE):
        model = build_model(cfg, channels=1, num_classes=4, image_size=(8, 8), seed=5, device=device)
        train(model, tiny_dataset.train, cfg, seed=5)
        models.append(torch.cat([p.detach().flatten().cpu() for p in model.parameters()]))
    assert _rel(models[0], models[1]) < 1e-3


@pytest.mark.parametrize("together", [False, True])
def test_evaluation_on_cuda_scores_as_on_cpu(tiny_dataset, together):
    cfg = TrainConfig(epochs=5, batch_size=32, width=8, depth=2, augment="dsa")
    cpu = evaluate(tiny_dataset.train, tiny_dataset.test, cfg, num_classes=4, n_runs=3, seed=1, device="cpu",
                   together=False)
    gpu = evaluate(tiny_dataset.train, tiny_dataset.test, cfg, num_classes=4, n_runs=3, seed=1, device=DEVICE,
                   together=together)
    assert gpu.seeds == cpu.seeds
    # 80 test images: one image is 1.25 points; rounding may flip at most a couple.
    assert max(abs(a - b) for a, b in zip(cpu.accs, gpu.accs)) <= 0.03


def test_run_command_on_cuda(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--device", DEVICE, "--out", str(out), "--methods", "dm", "--ipc", "1", *RUN_TINY]) == 0
    assert (out / "table.md").is_file()
