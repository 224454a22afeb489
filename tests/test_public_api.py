"""The Python API: the README's example runs as printed; each call gives what the command line gives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ddlnl
from ddlnl.cli import main
from ddlnl.pipeline import evaluate_file

README = Path(__file__).resolve().parents[1] / "README.md"
# Tiny settings (seconds): the shapes of the calls, not their accuracy, are under test here.
TINY = ["train.epochs=2", "train.width=8", "dm.iterations=2", "dm.width=8", "dm.batch_real=8"]


def readme_example() -> str:
    """The first Python block of the README's "Python" section."""
    text = README.read_text()
    section = text[text.index("\n## Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_as_printed(capsys):
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "realized noise rate" in printed and "DM, 10 images per class" in printed
    assert namespace["result"].mean > namespace["noisy"].realized_rate * 0 + 0.5  # far above chance (10%)
    assert len(namespace["issues"]) == len(namespace["data"].train)


def test_the_readme_example_uses_only_the_public_api():
    code = readme_example()
    assert "import ddlnl\n" in code
    called = set(re.findall(r"ddlnl\.(\w+)\(", code))
    assert called <= set(ddlnl.__all__) and {"load_dataset", "make_noise", "distill", "evaluate"} <= called


@pytest.fixture(scope="module")
def digits():
    return ddlnl.load_dataset("digits")


def test_api_calls_give_the_command_lines_sets_and_numbers(digits, tmp_path, capsys):
    noisy = ddlnl.make_noise(digits, "symmetric:0.6", seed=0)
    assert abs(noisy.realized_rate - 0.598) < 1e-3  # the demo's realized rate
    syn = ddlnl.distill(digits, "dm", ipc=2, labels=noisy, settings=TINY, preset="cpu", device="cpu")
    path = tmp_path / "dm.safetensors"
    assert main(["distill", "--method", "dm", "--ipc", "2", "--out", str(path), "--preset", "cpu", "--quiet",
                 *[a for s in TINY if s.startswith("dm.") for a in ("--set", s)]]) == 0
    from_cli = ddlnl.load_synthetic(path)
    assert torch.equal(syn.images, from_cli.images) and torch.equal(syn.labels, from_cli.labels)
    result = ddlnl.evaluate(syn, digits, n_runs=2, settings=TINY, preset="cpu", device="cpu")
    res_file, _, _ = evaluate_file(path, overrides=TINY, n_runs=2, preset="cpu")
    assert result.accs == res_file.accs and len(result.accs) == 2
    model, acc = ddlnl.train_model(syn, digits, settings=TINY, preset="cpu", device="cpu")
    assert acc == result.accs[0]  # the first evaluation run, as one model
    assert model(digits.test.images[:3]).shape == (3, 10)


class TinyMLP(nn.Module):
    """A user model: no ConvNet parameters, one of its own."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size[0] * image_size[1], hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_user_models_through_the_registry_from_the_api_and_the_cli(digits, tmp_path, capsys):
    ddlnl.register_model("tiny-mlp-test", replace=True)(TinyMLP)
    assert ddlnl.create_model("tiny-mlp-test", channels=1, num_classes=10, image_size=(8, 8), width=64,
                              depth=3).net[1].out_features == 16  # ConvNet parameters are not its own
    with pytest.raises(Exception, match="unexpected keyword"):
        ddlnl.create_model("tiny-mlp-test", channels=1, num_classes=10, image_size=(8, 8), colour="red")
    data = ddlnl.LabeledTensors(digits.train.images[:50], digits.train.labels[:50])
    model, acc = ddlnl.train_model(data, digits, settings=["train.model=tiny-mlp-test", "train.epochs=2"],
                                   preset="cpu", device="cpu")
    assert isinstance(model, TinyMLP) and 0 <= acc <= 1
    # From the command line, by import path (no registration needed).
    syn = ddlnl.distill(digits, "random", ipc=2, preset="cpu", device="cpu")
    syn.save(tmp_path / "r.safetensors")
    assert main(["evaluate", str(tmp_path / "r.safetensors"), "--n-runs", "1", "--quiet",
                 "--set", "train.model=test_public_api:TinyMLP", "--set", "train.epochs=2"]) == 0
    assert "random IPC 2 on digits" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "r.safetensors"), "--set", "train.model=nowhere:Net", "--quiet"]) == 2
    assert "cannot import" in capsys.readouterr().err


def test_label_issues_scores_every_training_label(digits):
    noisy = ddlnl.make_noise(digits, "symmetric:0.4", seed=0)
    syn = ddlnl.distill(digits, "random", ipc=5, labels=noisy, preset="cpu", device="cpu")
    issues = ddlnl.label_issues(syn, digits, labels=noisy, preset="cpu", device="cpu",
                                settings=["train.epochs=2", "train.width=8", "issues.n_models=1"])
    assert len(issues) == len(digits.train) and issues.pred_probs.shape == (len(digits.train), 10)
    assert (issues.given == noisy.noisy.numpy()).all()


def test_import_is_light_and_the_package_runs_as_a_module(tmp_path):
    import ddlnl.label_issues  # noqa: F401  (the submodule of the same name must not hide the function)

    assert callable(ddlnl.label_issues) and ddlnl.label_issues.__module__ == "ddlnl.api"
    code = "import sys, ddlnl; assert 'torch' not in sys.modules, 'import ddlnl pulled in torch'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    version = subprocess.run([sys.executable, "-m", "ddlnl", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"ddlnl {ddlnl.__version__}"
