"""The command line: one clear line and exit status 2 for a user's mistake; runs resume."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ddlnl.cli import main
from fixtures_data import write_cifar10, write_cifar_n, write_fashion_mnist
from test_run_dir import run_record, run_records

# A tiny but complete job on the bundled digits data (seconds, not minutes).
TINY = ["--set", "train.epochs=2", "--set", "baseline.epochs=2", "--set", "dm.iterations=2",
        "--set", "dm.batch_real=8", "--set", "train.width=8", "--set", "baseline.width=8",
        "--set", "dm.width=8", "--n-runs", "1", "--ipc", "1,2", "--quiet"]


def _error_line(capsys) -> str:
    """The error line; everything before it is progress logging, and there is no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    assert "error:" in err[-1] and all("error:" not in line for line in err[:-1]), err
    return err[-1]


@pytest.mark.parametrize("argv,needle", [
    (["noise", "--dataset", "mnist-3d"], "unknown dataset"),
    (["noise", "--noise", "gaussian:0.3"], "unknown noise kind"),
    (["noise", "--noise", "symmetric:0.95"], "not identifiable"),
    (["noise", "--noise", "symmetric:60"], "0.6 not 60"),
    (["noise", "--noise", "pairflip:0.7"], "0.5"),  # asymmetric >= 0.5 is accepted with a warning
    (["run", "--methods", "dm,mtt"], "unknown method 'mtt'"),
    (["run", "--set", "train.epoch=3"], "unknown key 'epoch'"),
    (["run", "--set", "train.epochs=many"], "epochs"),
    (["run", "--set", "nope.x=1"], "unknown --set prefix"),
    (["run", "--ipc", "500"], "ipc=500 exceeds"),
    (["evaluate", "missing.safetensors"], "not found"),
    (["run", "--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["run", "--device", "tpu"], "device"),
])
def test_user_mistakes_get_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + TINY[-1:]) == 2
    assert needle in _error_line(capsys)


def test_asymmetric_noise_without_a_map_is_refused(tmp_path, capsys):
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert main(["noise", "--dataset", "npz", "--data-root", str(tmp_path / "mine.npz"), "--noise", "asym:0.3"]) == 2
    assert "no asymmetric map" in _error_line(capsys)


def test_missing_and_truncated_data_files(tmp_path, capsys):
    assert main(["noise", "--dataset", "fashion-mnist", "--data-root", str(tmp_path)]) == 2
    assert "dataset-fashion-mnist" in _error_line(capsys)
    write_fashion_mnist(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    assert main(["noise", "--dataset", "fashion-mnist", "--data-root", str(tmp_path)]) == 2
    assert "train-images-idx3-ubyte" in _error_line(capsys)


def test_cifar_n_file_for_the_wrong_dataset_is_refused(tmp_path, capsys):
    info = write_cifar10(tmp_path)
    n = len(info["train_labels"])
    wrong = (np.asarray(info["train_labels"]) + 1) % 10
    write_cifar_n(tmp_path / "CIFAR-10_human.pt", {"clean_label": wrong.astype(np.int64),
                                                   "aggre_label": wrong.astype(np.int64)})
    assert main(["noise", "--dataset", "cifar10", "--data-root", str(tmp_path), "--noise", "natural:aggre",
                 "--noise-file", str(tmp_path / "CIFAR-10_human.pt")]) == 2
    assert "clean_label" in _error_line(capsys)
    assert n > 0


def test_noise_prints_requested_and_realized_and_saves(tmp_path, capsys):
    assert main(["noise", "--noise", "symmetric:0.4", "--save", str(tmp_path / "n.npz")]) == 0
    out = capsys.readouterr().out
    assert "realized rate" in out and "requested rate 0.4" in out and (tmp_path / "n.npz").exists()


def test_run_writes_table_figures_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr()
    assert "| dm | 2 |" in printed.out and "| random | 1 |" in printed.out and "full noisy set" in printed.out
    results = json.loads((out / "results.json").read_text())
    assert {(c["cell"]["method"], c["cell"]["ipc"]) for c in results["cells"]} == {("random", 1), ("random", 2), ("dm", 1), ("dm", 2)}
    assert all(len(c["accs"]) == 1 for c in results["cells"])
    assert (out / "figures" / "dm-ipc2.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "synthetic" / "dm-ipc1.safetensors").exists() and (out / "noise.npz").exists()
    [cell] = run_records(out, "dm-ipc1")
    before = cell.read_text()
    assert main(["run", "--out", str(out), *TINY]) == 0
    assert "done before" in capsys.readouterr().err
    assert cell.read_text() == before
    # Another configuration never overwrites this run's records: it is added beside them ...
    assert main(["run", "--out", str(out), *TINY, "--set", "dm.lr_img=2"]) == 0
    printed = capsys.readouterr().out
    assert "| dm (dm.lr_img=2.0) | 1 |" in printed and "| dm (dm.lr_img=1.0) | 1 |" in printed
    assert cell.read_text() == before
    # ... nor does other data; but more IPCs can be added to the same run.
    assert main(["run", "--out", str(out), *TINY, "--noise", "symmetric:0.3"]) == 2
    assert "other data" in _error_line(capsys)
    assert main(["run", "--out", str(out), *[a if a != "1,2" else "1,2,3" for a in TINY]]) == 0
    assert "| dm | 3 |" in capsys.readouterr().out


def test_distill_then_evaluate(tmp_path, capsys):
    syn = tmp_path / "dm.safetensors"
    assert main(["distill", "--method", "dm", "--ipc", "2", "--out", str(syn), "--set", "dm.iterations=2",
                 "--set", "dm.width=8", "--quiet"]) == 0
    assert main(["evaluate", str(syn), "--n-runs", "2", "--set", "train.epochs=3", "--set", "train.width=8",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "dm IPC 2 on digits" in out and "runs:" in out


def test_baseline_command_and_label_file_round_trip(tmp_path, capsys):
    labels = tmp_path / "n.npz"
    assert main(["noise", "--noise", "symmetric:0.2", "--save", str(labels)]) == 0
    assert main(["baseline", "--noise", "file:" + str(labels), "--set", "baseline.epochs=2",
                 "--set", "baseline.width=8", "--n-runs", "1", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "baseline:" in capsys.readouterr().out
    rec = run_record(tmp_path / "b", "baseline")
    assert len(rec["accs"]) == 1 and rec["histories"][0][-1]["epoch"] == 2


def test_entry_point_has_no_traceback_for_user_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ddlnl.cli", "noise", "--noise", "bogus:1"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
