"""Long work shows progress where the output goes: bars on a terminal, log lines in a pipe or log."""

from __future__ import annotations

import re

import pytest

from ddlnl.cli import main
from ddlnl.progress import LogProgress, fmt_duration, mode, position, progress
from ddlnl.train import TrainConfig, build_model, train

LINE = re.compile(r"^\[ddlnl \d\d:\d\d:\d\d\] ")


@pytest.fixture
def every_step(monkeypatch):
    monkeypatch.setenv("DDLNL_PROGRESS_SECONDS", "0")
    monkeypatch.delenv("DDLNL_PROGRESS", raising=False)


def test_without_a_terminal_training_writes_log_lines_with_rate_and_eta(every_step, capsys, tiny_dataset):
    assert mode() == "log"  # pytest's stderr is not a terminal
    cfg = TrainConfig(epochs=3, width=8, depth=2, augment="none", batch_size=64)
    model = build_model(cfg, channels=1, num_classes=4, image_size=(8, 8), seed=0)
    with position("step 2/5 dm-ipc1"):
        train(model, tiny_dataset.train, cfg, seed=0, show_progress=True, desc="evaluate dm run 1/1")
    lines = [line for line in capsys.readouterr().err.splitlines() if LINE.match(line)]
    assert len(lines) == 3, lines  # one per epoch at DDLNL_PROGRESS_SECONDS=0
    assert "step 2/5 dm-ipc1 | evaluate dm run 1/1: 1/3 epoch (33%)" in lines[0]
    assert "epoch/s" in lines[0] and "ETA" in lines[0] and "loss=" in lines[0]
    assert "3/3 epoch (100%)" in lines[-1] and "ETA 0s" in lines[-1]


def test_nested_loops_show_the_whole_job_in_one_line(every_step, capsys):
    for _ in progress(range(2), desc="sweep", unit="cell"):
        for _ in progress(range(1), desc="train", unit="epoch"):
            pass
    lines = [line for line in capsys.readouterr().err.splitlines() if LINE.match(line)]
    assert any("sweep: 0/2 cell" in line and "| train: 1/1 epoch" in line for line in lines), lines


def test_lines_are_spaced_by_the_documented_interval(monkeypatch, capsys):
    monkeypatch.setenv("DDLNL_PROGRESS", "log")
    monkeypatch.setenv("DDLNL_PROGRESS_SECONDS", "3600")
    for _ in progress(range(50), desc="quick"):
        pass
    lines = [line for line in capsys.readouterr().err.splitlines() if LINE.match(line)]
    assert len(lines) <= 1


def test_modes_from_the_environment(monkeypatch):
    for value, expected in (("off", "off"), ("0", "off"), ("log", "log"), ("bar", "bar"), ("1", "bar")):
        monkeypatch.setenv("DDLNL_PROGRESS", value)
        assert mode() == expected
    assert mode(enabled=False) == "off"
    monkeypatch.setenv("DDLNL_PROGRESS", "log")
    assert isinstance(progress(range(2)), LogProgress)
    assert fmt_duration(75) == "1m15s" and fmt_duration(4000) == "1h06m"


def test_the_cli_writes_progress_lines_through_a_pipe(every_step, tmp_path, capsys):
    assert main(["distill", "--method", "dm", "--ipc", "1", "--out", str(tmp_path / "s.safetensors"),
                 "--set", "dm.iterations=2", "--set", "dm.width=8", "--set", "dm.batch_real=8"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if LINE.match(line)]
    assert any("dm ipc=1" in line and "it/s" in line for line in lines), lines
    assert main(["distill", "--method", "dm", "--ipc", "1", "--out", str(tmp_path / "s.safetensors"),
                 "--set", "dm.iterations=2", "--set", "dm.width=8", "--set", "dm.batch_real=8", "--quiet"]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if LINE.match(line)]
