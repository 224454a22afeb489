"""A table of bad inputs, one per row: every one is answered with one line on stderr and its exit
status, before any work starts, and never with a traceback.

Each row is ``(command line, expected exit status, words the line must contain)``. ``{name}`` in a
command line is a file or folder built on first use by :class:`Setup` (a truncated label file, a
synthetic set with a negative learning rate, a grid YAML, ...). Rows run in-process through
``ddlnl.cli.main`` with training switched off: an optimiser that is created fails the row, so a
row passes only if its input is refused before any training or distillation starts (which is also
what keeps each row well under a second).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ddlnl.cli import main
from ddlnl.synthetic import SyntheticSet

# A grid that is valid (it passes --dry-run); each grid row changes one thing in it.
GRID = {"name": "g", "datasets": ["digits"], "noises": ["symmetric:0.4"], "methods": ["dm"], "ipcs": [1],
        "baselines": ["converged"], "n_runs": 1, "preset": "cpu", "set": ["train.epochs=1"],
        "method_set": {"dm": ["iterations=1"]}}
DELETE = object()


def _syn(path: Path, *, n: int = 10, lr: float | None = 0.01, meta: dict | None = None, images=None, labels=None) -> Path:
    images = torch.randn(n, 1, 8, 8) if images is None else images
    labels = torch.arange(n) % 10 if labels is None else labels
    meta = {"dataset": "digits", "num_classes": 10, "method": "dm", "ipc": 1} if meta is None else meta
    # Bypass the constructor's checks: these files imitate a buggy or foreign writer.
    syn = object.__new__(SyntheticSet)
    object.__setattr__(syn, "images", images)
    object.__setattr__(syn, "labels", labels)
    object.__setattr__(syn, "lr", lr)
    object.__setattr__(syn, "meta", meta)
    return syn.save(path)


def _labels_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _record(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder.parent


class Setup(dict):
    """Builds the named file or folder under ``tmp`` the first time a row names it."""

    def __init__(self, tmp: Path):
        super().__init__()
        self.tmp = tmp

    def __missing__(self, key: str) -> str:
        t = self.tmp
        if key.startswith("grid/"):
            value = self._grid(key[5:])
        else:
            value = getattr(self, "_" + key)(t)
        self[key] = str(value)
        return str(value)

    # grids: "grid/<row name>" uses GRID_PATCHES[row name]
    def _grid(self, name: str) -> Path:
        patch = GRID_PATCHES[name]
        path = self.tmp / f"grid-{abs(hash(name))}.yaml"
        if isinstance(patch, str):  # raw YAML text
            path.write_text(patch)
            return path
        data = dict(GRID)
        for k, v in patch.items():
            if v is DELETE:
                data.pop(k, None)
            else:
                data[k] = v
        path.write_text(yaml.safe_dump(data))
        return path

    @staticmethod
    def _t(t):
        return t

    @staticmethod
    def _afile(t):
        (t / "afile").write_text("not a folder\n")
        return t / "afile"

    @staticmethod
    def _emptydir(t):
        (t / "emptydir").mkdir(exist_ok=True)
        return t / "emptydir"

    @staticmethod
    def _unwritable(t):
        # /sys refuses new files even to root (os.access would say yes to root).
        probe = Path("/sys/ddlnl-probe")
        try:
            probe.mkdir()
            probe.rmdir()
            pytest.skip("/sys is writable here")
        except OSError:
            pass
        return Path("/sys")

    @staticmethod
    def _syn(t):
        return _syn(t / "ok.safetensors")

    @staticmethod
    def _syn_neg_lr(t):
        return _syn(t / "neg-lr.safetensors", lr=-0.1)

    @staticmethod
    def _syn_nan_lr(t):
        return _syn(t / "nan-lr.safetensors", lr=float("nan"))

    @staticmethod
    def _syn_str_lr(t):
        return _syn(t / "str-lr.safetensors", lr="fast")

    @staticmethod
    def _syn_zero(t):
        return _syn(t / "zero.safetensors", n=0, images=torch.zeros(0, 1, 8, 8), labels=torch.zeros(0, dtype=torch.int64))

    @staticmethod
    def _syn_bad_labels(t):
        return _syn(t / "bad-labels.safetensors", labels=torch.full((10,), 12, dtype=torch.int64))

    @staticmethod
    def _syn_nan_images(t):
        images = torch.randn(10, 1, 8, 8)
        images[0, 0, 0, 0] = float("nan")
        return _syn(t / "nan.safetensors", images=images)

    @staticmethod
    def _syn_no_dataset(t):
        return _syn(t / "nods.safetensors", meta={"num_classes": 10})

    @staticmethod
    def _syn_meta_list(t):
        return _syn(t / "metalist.safetensors", meta=[1, 2])

    @staticmethod
    def _syn_bad_classes(t):
        return _syn(t / "badk.safetensors", meta={"dataset": "digits", "num_classes": 0})

    @staticmethod
    def _syn_trunc(t):
        p = _syn(t / "trunc.safetensors")
        p.write_bytes(p.read_bytes()[:-100])
        return p

    @staticmethod
    def _syn_empty(t):
        (t / "empty.safetensors").write_bytes(b"")
        return t / "empty.safetensors"

    @staticmethod
    def _syn_tampered(t):
        p = _syn(t / "tampered.safetensors")
        data = bytearray(p.read_bytes())
        data[-5] ^= 0xFF
        p.write_bytes(bytes(data))
        return p

    @staticmethod
    def _syn_foreign(t):
        from safetensors.torch import save_file

        save_file({"weights": torch.zeros(3)}, str(t / "foreign.safetensors"))
        return t / "foreign.safetensors"

    @staticmethod
    def _syn_text(t):
        (t / "text.safetensors").write_text("hello")
        return t / "text.safetensors"

    @staticmethod
    def _lab_trunc(t):
        p = _labels_npz(t / "lab-trunc.npz", noisy=np.zeros(1257, dtype=np.int64))
        p.write_bytes(p.read_bytes()[:200])
        return p

    @staticmethod
    def _lab_empty(t):
        (t / "lab-empty.npz").write_bytes(b"")
        return t / "lab-empty.npz"

    @staticmethod
    def _lab_short(t):
        return _labels_npz(t / "lab-short.npz", noisy=np.zeros(7, dtype=np.int64))

    @staticmethod
    def _lab_range(t):
        return _labels_npz(t / "lab-range.npz", noisy=np.full(1257, 11, dtype=np.int64))

    @staticmethod
    def _lab_float(t):
        return _labels_npz(t / "lab-float.npz", noisy=np.full(1257, 0.5))

    @staticmethod
    def _lab_two(t):
        return _labels_npz(t / "lab-two.npz", a=np.zeros(3), b=np.zeros(3))

    @staticmethod
    def _lab_pickle(t):
        np.save(t / "lab-pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return t / "lab-pickle.npy"

    @staticmethod
    def _lab_csv_text(t):
        (t / "lab.csv").write_text("label\n1\nseven\n")
        return t / "lab.csv"

    @staticmethod
    def _lab_suffix(t):
        (t / "lab.xyz").write_text("1\n")
        return t / "lab.xyz"

    @staticmethod
    def _lab_wrong_dataset(t):
        summary = json.dumps({"dataset": "fashion-mnist", "train_size": 1257})
        return _labels_npz(t / "lab-fm.npz", noisy=np.zeros(1257, dtype=np.int64), clean=np.zeros(1257, dtype=np.int64),
                           summary=np.array(summary))

    @staticmethod
    def _lab_bad_summary(t):
        return _labels_npz(t / "lab-bads.npz", noisy=np.zeros(1257, dtype=np.int64), summary=np.array("{"))

    @staticmethod
    def _pt_pickle(t):
        import pickle

        (t / "labels.pt").write_bytes(pickle.dumps({"x": 1}))
        return t / "labels.pt"

    @staticmethod
    def _npz_data_empty(t):
        # a dataset whose training split holds no images
        x = np.zeros((0, 8, 8), np.float32)
        y = np.zeros(0, np.int64)
        np.savez(t / "empty-data.npz", x_train=x, y_train=y, x_test=np.zeros((4, 8, 8), np.float32), y_test=np.arange(4))
        return t / "empty-data.npz"

    @staticmethod
    def _npz_data_trunc(t):
        x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
        y = np.repeat(np.arange(4), 10)
        np.savez(t / "trunc-data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
        p = t / "trunc-data.npz"
        p.write_bytes(p.read_bytes()[:300])
        return p

    @staticmethod
    def _npz_data_missing_key(t):
        np.savez(t / "nokey-data.npz", x_train=np.zeros((4, 8, 8), np.float32))
        return t / "nokey-data.npz"

    @staticmethod
    def _root_damaged(t):
        root = t / "root-damaged"
        _record(root / "records", "digits__symmetric-0.4__seed0__dm-ipc1__0123456789.json", '{"cell": {"dataset": "di')
        return root

    @staticmethod
    def _root_foreign(t):
        root = t / "root-foreign"
        _record(root / "records", "notes.json", json.dumps({"hello": "world"}))
        return root

    @staticmethod
    def _root_list(t):
        root = t / "root-list"
        _record(root / "records", "list.json", "[1, 2, 3]")
        return root

    @staticmethod
    def _root_badacc(t):
        root = t / "root-badacc"
        rec = {"cell": {"dataset": "digits", "noise": "symmetric:0.4", "seed": 0, "method": "dm", "ipc": 1},
               "name": "x", "key": "0123456789abcdef", "mean": 1.5, "std": 0.0, "accs": [1.5]}
        _record(root / "records", "x__0123456789.json", json.dumps(rec))
        return root

    @staticmethod
    def _root_tampered(t):
        root = t / "root-tampered"
        rec = {"cell": {"dataset": "digits", "noise": "symmetric:0.4", "seed": 0, "method": "dm", "ipc": 1},
               "name": "x", "key": "0123456789abcdef", "mean": 0.5, "std": 0.0, "accs": [0.5], "sha256": "0" * 64}
        _record(root / "records", "x__0123456789.json", json.dumps(rec))
        return root

    @staticmethod
    def _root_badgrid(t):
        root = t / "root-badgrid"
        (root / "records").mkdir(parents=True)
        (root / "grids").mkdir()
        (root / "grids" / "g.yaml").write_text(yaml.safe_dump({**GRID, "ipcs": [1.5]}))
        return root

    @staticmethod
    def _sound_run(t, name):
        """A run directory of the current layout with one sound record."""
        run = t / name
        rec = {"cell": {"dataset": "digits", "noise": "symmetric:0.4", "seed": 0, "method": "random", "ipc": 1},
               "name": "digits__symmetric-0.4__seed0__random-ipc1", "key": "0123456789abcdef", "mean": 0.5, "std": 0.0,
               "accs": [0.5], "noise": {"train_size": 100, "num_classes": 10}}
        _record(run / "records", f"{rec['name']}__0123456789.json", json.dumps(rec))
        return run

    @staticmethod
    def _run_badconfig(t):
        run = Setup._sound_run(t, "run-badconfig")
        (run / "config.json").write_text("{")
        return run

    @staticmethod
    def _run_allbad(t):
        run = t / "run-allbad"
        _record(run / "records", "digits__symmetric-0.4__seed0__random-ipc1__0123456789.json", '{"cell": {"da')
        (run / "config.json").write_text(json.dumps({"data": {}, "runs": [{"job": {"dataset": "digits"}}]}))
        return run

    @staticmethod
    def _run_norun(t):
        run = t / "run-empty"
        run.mkdir()
        return run

    @staticmethod
    def _run_listconfig(t):
        run = Setup._sound_run(t, "run-list")
        (run / "config.json").write_text("[]")
        return run

    @staticmethod
    def _run_old(t):
        """A run directory of the layout before records/: cells/*.json and baseline.json."""
        run = t / "run-old"
        _record(run / "cells", "dm-ipc1.json", json.dumps({"key": "k", "method": "dm", "ipc": 1, "mean": 0.5}))
        (run / "baseline.json").write_text(json.dumps({"key": "b", "mean": 0.5, "std": 0.0, "accs": [0.5]}))
        (run / "config.json").write_text(json.dumps({"layout": 2, "data": {}, "runs": []}))
        return run


# Grid rows: name -> the change to GRID (a dict; DELETE removes a key) or raw YAML text.
GRID_PATCHES = {
    "unknown-key": {"epochs": 3}, "missing-datasets": {"datasets": DELETE}, "missing-noises": {"noises": DELETE},
    "missing-methods": {"methods": DELETE}, "missing-ipcs": {"ipcs": DELETE},
    "ipc-float": {"ipcs": [1.5]}, "ipc-bool": {"ipcs": [True]}, "ipc-zero": {"ipcs": [0]}, "ipc-negative": {"ipcs": [-1]},
    "ipc-empty": {"ipcs": []}, "ipc-string": {"ipcs": ["ten"]}, "ipc-repeat": {"ipcs": [1, 1]}, "ipc-null": {"ipcs": None},
    "ipc-mapping": {"ipcs": {"a": 1}}, "ipc-too-many": {"ipcs": [500]},
    "seeds-empty": {"seeds": []}, "seeds-negative": {"seeds": [-1]}, "seeds-float": {"seeds": [0.5]},
    "seeds-bool": {"seeds": [False]}, "seeds-null": {"seeds": None},
    "name-escape": {"name": "../../../escape"}, "name-list": {"name": ["a", "b"]}, "name-slash": {"name": "a/b"},
    "name-hidden": {"name": ".hidden"}, "name-int": {"name": 5}, "name-empty": {"name": ""}, "name-abs": {"name": "/tmp/x"},
    "dataset-unknown": {"datasets": ["mnist-3d"]}, "dataset-options-int": {"datasets": {"digits": 5}},
    "dataset-option-unknown": {"datasets": {"digits": {"root": "/data"}}}, "dataset-nested-list": {"datasets": [["digits"]]},
    "dataset-empty": {"datasets": []}, "dataset-escape": {"datasets": ["../digits"]}, "dataset-repeat": {"datasets": ["digits", "digits"]},
    "dataset-root-int": {"datasets": {"digits": {"data_root": 5}}},
    "dataset-missing-files": {"datasets": {"fashion-mnist": {"data_root": "/nonexistent/fm"}}},
    "noise-unknown": {"noises": ["gauss:0.1"]}, "noise-rate": {"noises": ["symmetric:0.95"]}, "noise-empty": {"noises": []},
    "noise-int": {"noises": [5]}, "noise-escape": {"noises": ["natural:../../../x"]}, "noise-percent": {"noises": ["symmetric:40"]}, "noise-repeat": {"noises": ["symmetric:0.4", "symmetric:0.4"]},
    "method-unknown": {"methods": ["mtt"]}, "method-list": {"methods": [["dm"]]}, "method-repeat": {"methods": ["dm", "dm"]},
    "baseline-unknown": {"baselines": ["best-test"]}, "baseline-int": {"baselines": [1]},
    "n-runs-zero": {"n_runs": 0}, "n-runs-float": {"n_runs": 1.5}, "n-runs-string": {"n_runs": "3"}, "n-runs-list": {"n_runs": [3]},
    "n-runs-bool": {"n_runs": True}, "baseline-runs-negative": {"baseline_runs": -1},
    "subset-negative": {"train_subset": -1}, "subset-float": {"train_subset": 1.5}, "subset-too-small": {"train_subset": 5},
    "subset-too-big": {"train_subset": 100000},
    "preset-unknown": {"preset": "gpu"}, "preset-list": {"preset": ["cpu"]}, "protocol-unknown": {"protocol": "weird"},
    "set-unknown-key": {"set": ["train.epoch=1"]}, "set-no-value": {"set": ["train.epochs"]},
    "set-unknown-prefix": {"set": ["trian.epochs=1"]}, "set-mapping": {"set": {"train.epochs": 1}},
    "set-depth-zero": {"set": ["train.depth=0"]}, "set-bad-type": {"set": ["train.epochs=many"]},
    "set-job-key": {"set": ["n_runs=0"]}, "set-int": {"set": [5]},
    "method-set-list": {"method_set": ["dm"]}, "method-set-unknown-method": {"method_set": {"rcig2": ["x=1"]}},
    "method-set-unknown-key": {"method_set": {"dm": ["nope=1"]}}, "method-set-bad-type": {"method_set": {"dm": ["iterations=x"]}},
    "variants-list": {"variants": ["a"]}, "variant-named-method": {"methods": ["dm"], "variants": {"dm": {"method": "dm"}}},
    "variant-unknown-method": {"methods": ["dm", "x"], "variants": {"x": {"method": "mtt"}}},
    "variant-no-method": {"methods": ["dm", "x"], "variants": {"x": {"set": ["iterations=2"]}}},
    "variant-of-random": {"methods": ["dm", "x"], "variants": {"x": {"method": "random"}}},
    "variant-unlisted": {"variants": {"x": {"method": "dm"}}},
    "variant-escape": {"methods": ["dm", "../x"], "variants": {"../x": {"method": "dm"}}},
    "variant-bad-key": {"methods": ["dm", "x"], "variants": {"x": {"method": "dm", "set": ["nope=1"]}}},
    "resources-unknown": {"resources": {"gpu": 1}}, "resources-list": {"resources": [1]},
    "resources-negative": {"resources": {"cpus": -1}}, "resources-float": {"resources": {"cpus": 1.5}},
    "resources-string": {"resources": {"mem_gb": "lots"}},
    "yaml-syntax": "name: g\nipcs: [1, 2\n", "yaml-list": "- digits\n- dm\n", "yaml-empty": "",
    "yaml-scalar": "just text\n",
}

GRID_WORDS = {
    "unknown-key": "unknown grid key(s) epochs", "missing-datasets": "missing 'datasets'", "missing-noises": "missing 'noises'",
    "missing-methods": "missing 'methods'", "missing-ipcs": "missing 'ipcs'",
    "ipc-float": "'ipcs': expected integers, got float 1.5", "ipc-bool": "'ipcs': expected integers, got bool True",
    "ipc-zero": "'ipcs': values must be >= 1", "ipc-negative": "'ipcs': values must be >= 1",
    "ipc-empty": "'ipcs': give at least one value", "ipc-string": "'ipcs': expected integers, got str",
    "ipc-repeat": "repeats a value", "ipc-null": "'ipcs': give at least one value", "ipc-mapping": "expected a list, got dict",
    "ipc-too-many": "ipc=500 exceeds",
    "seeds-empty": "'seeds': give at least one value", "seeds-negative": "'seeds': values must be >= 0",
    "seeds-float": "'seeds': expected integers, got float", "seeds-bool": "'seeds': expected integers, got bool",
    "seeds-null": "'seeds': give at least one value",
    "name-escape": "is not a plain name", "name-list": "'name': expected a name (a string), got list",
    "name-slash": "is not a plain name", "name-hidden": "is not a plain name", "name-int": "expected a name (a string), got int",
    "name-empty": "is not a plain name", "name-abs": "is not a plain name",
    "dataset-unknown": "unknown dataset 'mnist-3d'", "dataset-options-int": "expected {data_root: PATH",
    "dataset-option-unknown": "unknown option(s) root", "dataset-nested-list": "expected names (strings), got list",
    "dataset-empty": "'datasets': give at least one value", "dataset-escape": "is not a plain name",
    "dataset-repeat": "repeats a value", "dataset-root-int": "data_root must be a path",
    "dataset-missing-files": "fashion-mnist",
    "noise-unknown": "unknown noise kind", "noise-rate": "not identifiable", "noise-empty": "'noises': give at least one value",
    "noise-int": "'noises': expected names (strings), got int", "noise-escape": "use a CIFAR-N label set name", "noise-percent": "rate is a fraction in [0, 1)", "noise-repeat": "repeats a value",
    "method-unknown": "unknown method 'mtt'", "method-list": "'methods': expected names (strings), got list",
    "method-repeat": "repeats a value",
    "baseline-unknown": "baseline 'best-test'", "baseline-int": "'baselines': expected names (strings), got int",
    "n-runs-zero": "'n_runs': must be >= 1", "n-runs-float": "'n_runs': expected an integer, got float",
    "n-runs-string": "'n_runs': expected an integer, got str", "n-runs-list": "'n_runs': expected an integer, got list",
    "n-runs-bool": "'n_runs': expected an integer, got bool", "baseline-runs-negative": "'baseline_runs': must be >= 0",
    "subset-negative": "'train_subset': must be >= 0", "subset-float": "'train_subset': expected an integer, got float",
    "subset-too-small": "leaves a class without images", "subset-too-big": "is not smaller than",
    "preset-unknown": "preset 'gpu'", "preset-list": "'preset': expected a string, got list",
    "protocol-unknown": "eval_recipe 'weird'",
    "set-unknown-key": "unknown key 'epoch'", "set-no-value": "'set': expected key=value strings",
    "set-unknown-prefix": "names 'trian', which is no method of the grid", "set-mapping": "'set': expected a list, got dict",
    "set-depth-zero": "depth must be >= 1", "set-bad-type": "epochs: expected an integer", "set-job-key": "n_runs must be >= 1",
    "set-int": "'set': expected key=value strings",
    "method-set-list": "'method_set' must map a method name", "method-set-unknown-method": "method_set names methods not in the grid",
    "method-set-unknown-key": "unknown key 'nope' for DMConfig", "method-set-bad-type": "iterations: expected an integer",
    "variants-list": "'variants' must map a name", "variant-named-method": "has the name of a method",
    "variant-unknown-method": "unknown method 'mtt'", "variant-no-method": "expected {method: NAME",
    "variant-of-random": "based on a distiller", "variant-unlisted": "defined but not listed in methods",
    "variant-escape": "is not a plain name", "variant-bad-key": "unknown key 'nope'",
    "resources-unknown": "'resources': unknown gpu", "resources-list": "'resources' must be a mapping",
    "resources-negative": "'resources.cpus': expected a number >= 0", "resources-float": "(an integer), got 1.5",
    "resources-string": "'resources.mem_gb': expected a number",
    "yaml-syntax": "not valid YAML (line", "yaml-list": "expected a mapping", "yaml-empty": "missing 'datasets'",
    "yaml-scalar": "expected a mapping",
}

TINY = "--n-runs 1 --quiet"

ROWS = [
    # --- the command line itself (argparse): one line, no usage block
    ("", 2, "no command given"),
    ("frobnicate", 2, "invalid choice: 'frobnicate'"),
    ("run --nope", 2, "unrecognized arguments: --nope"),
    ("run --ipc x", 2, "argument --ipc: expected comma-separated integers"),
    ("run --ipc 0", 2, "images per class must be >= 1"),
    ("run --ipc 1,-2", 2, "images per class must be >= 1"),
    ("run --ipc ,", 2, "expected at least one integer"),
    ("run --n-runs 0", 2, "argument --n-runs: must be >= 1"),
    ("run --n-runs x", 2, "expected a positive integer, got 'x'"),
    ("run --seed -1", 2, "argument --seed: must be >= 0"),
    ("run --seed 1.5", 2, "expected an integer >= 0"),
    ("run --train-subset -3", 2, "argument --train-subset: must be >= 0"),
    ("run --preset gpu", 2, "argument --preset: invalid choice"),
    ("run --methods ,", 2, "expected comma-separated names"),
    ("run --set", 2, "argument --set: expected one argument"),
    ("noise --device", 2, "argument --device: expected one argument"),
    ("distill", 2, "the following arguments are required: --method, --ipc, --out"),
    ("distill --method dm --ipc 0 --out {t}/x.safetensors", 2, "argument --ipc: must be >= 1"),
    ("evaluate", 2, "the following arguments are required: synthetic"),
    ("sweep", 2, "the following arguments are required: grid"),
    ("sweep {grid/ipc-float} --executor pbs", 2, "argument --executor: invalid choice: 'pbs'"),
    ("sweep {grid/ipc-float} --cells-per-job 0", 2, "argument --cells-per-job: must be >= 1"),
    ("results", 2, "the following arguments are required: root"),
    ("issues --n-runs 0", 2, "argument --n-runs: must be >= 1"),
    ("estimate --ipc 0", 2, "argument --ipc: must be >= 1"),
    ("report", 2, "the following arguments are required: root"),
    # --- names and values
    ("noise --dataset mnist-3d", 2, "unknown dataset"),
    ("noise --noise gaussian:0.3", 2, "unknown noise kind"),
    ("noise --noise symmetric:0.95", 2, "not identifiable"),
    ("noise --noise symmetric:60", 2, "0.6 not 60"),
    ("noise --noise pairflip:0.7", 2, "0.5"),  # asymmetric >= 0.5 is accepted with a warning (issue 12)
    ("noise --noise symmetric:-0.1", 2, "symmetric"),
    ("noise --noise symmetric:abc", 2, "symmetric"),
    ("noise --noise natural:aggre", 2, "natural"),
    ("noise --noise natural:../../x", 2, "use a CIFAR-N label set name"),
    ("run --noise natural:a/b", 2, "use a CIFAR-N label set name"),
    ("noise --train-subset 5", 2, "leaves a class without images in digits: use at least"),
    ("noise --train-subset 1", 2, "leaves no training images"),
    ("noise --train-subset 5000", 2, "is not smaller than the"),
    ("noise --set train.epochs=1", 2, "only draws labels"),
    ("noise --set dm.iterations=1", 2, "only draws labels"),
    ("noise --set n_runs=0", 2, "n_runs must be >= 1"),
    ("noise --set seeed=1", 2, "unknown key 'seeed' for JobConfig"),
    ("run --methods dm,mtt", 2, "unknown method 'mtt'"),
    ("run --device tpu", 2, "device"),
    ("run --device cuda:7" if not torch.cuda.is_available() else "run --device cuda:99", 2, "device"),
    ("run --set train.epoch=3", 2, "unknown key 'epoch'"),
    ("run --set train.epochs=many", 2, "epochs: expected an integer, got 'many'"),
    ("run --set train.epochs=0", 2, "epochs and batch_size must be >= 1"),
    ("run --set train.epochs=1.5", 2, "epochs: expected an integer"),
    ("run --set train.epochs=true", 2, "epochs: expected an integer"),
    ("run --set train.lr=-1", 2, "lr must be > 0"),
    ("run --set train.depth=0", 2, "train: depth must be >= 1, got 0"),
    ("run --set train.width=0", 2, "train: width must be >= 1, got 0"),
    ("run --set baseline.depth=-1", 2, "baseline: depth must be >= 1"),
    ("run --set dm.depth=0", 2, "dm: depth must be >= 1"),
    ("run --set train.schedule=linear", 2, "schedule 'linear'"),
    ("run --set train.augment=yes", 2, "augment 'yes'"),
    ("run --set train.use_learned_lr=maybe", 2, "expected true or false, got 'maybe'"),
    ("run --set nope.x=1", 2, "unknown --set prefix"),
    ("run --set novalue", 2, "expected key=value"),
    ("run --set dm.iterations=x", 2, "iterations: expected an integer"),
    ("run --set dm.nope=1", 2, "unknown key 'nope' for DMConfig"),
    ("run --set datm.iterations=1", 2, "unknown --set prefix 'datm'"),
    ("run --set baseline.epochs=0", 2, "epochs and batch_size must be >= 1"),
    ("run --set baseline_protocol.val_fraction=0.7", 2, "val_fraction must be in (0, 0.5)"),
    ("run --set baseline_protocol.protocol=best", 2, "baseline stopping 'best'"),  # the former name of stopping
    ("run --set baseline_protocol.stopping=best", 2, "baseline stopping 'best'"),
    ("run --set n_runs=0", 2, "n_runs must be >= 1"),
    ("run --set preset=gpu", 2, "preset 'gpu'"),
    ("run --set protocol=weird", 2, "eval_recipe 'weird'"),  # protocol: the former name of eval_recipe
    ("run --set eval_recipe=weird", 2, "eval_recipe 'weird'"),
    ("run --ipc 500 " + TINY, 2, "ipc=500 exceeds"),
    ("run --train-subset 5 " + TINY, 2, "leaves a class without images"),
    ("baseline --set train.epochs=3", 2, "does not use train.* keys"),
    ("baseline --set random.x=1", 2, "does not use random.* keys"),
    ("baseline --set dm.iterations=1", 2, "unknown --set prefix 'dm'"),
    ("baseline --set baseline.epoch=1", 2, "unknown key 'epoch'"),
    ("distill --method zz --ipc 1 --out {t}/x.safetensors", 2, "unknown method 'zz'"),
    ("distill --method dm --ipc 1 --out {t}/x.safetensors --set train.epochs=1", 2, "does not use train.* keys"),
    ("distill --method dm --ipc 1 --out {t}/x.safetensors --set baseline.epochs=1", 2, "does not use baseline.* keys"),
    ("distill --method dm --ipc 1 --out {t}/x.safetensors --set random.x=1", 2, "does not use random.* keys"),
    ("distill --method dm --ipc 1 --out {t}/x.safetensors --set dm.width=0", 2, "dm: width must be >= 1"),
    ("distill --method dm --ipc 500 --out {t}/x.safetensors", 2, "ipc=500 exceeds"),
    ("evaluate {syn} --set dm.iterations=1", 2, "takes only train.KEY=VALUE overrides"),
    ("evaluate {syn} --set baseline.epochs=1", 2, "takes only train.KEY=VALUE overrides"),
    ("evaluate {syn} --set train.epoch=1", 2, "unknown key 'epoch'"),
    ("evaluate {syn} --set train.depth=0", 2, "depth must be >= 1"),
    ("evaluate {syn} --set train.epochs=x", 2, "epochs: expected an integer"),
    ("evaluate {syn} --set novalue", 2, "expected key=value"),
    ("evaluate {syn} --dataset mnist-3d", 2, "unknown dataset"),
    ("evaluate {syn} --dataset fashion-mnist --data-root {emptydir}", 2, "fashion-mnist"),
    ("evaluate {syn} --device tpu", 2, "device"),
    ("experts --method dm --status", 2, "uses no expert trajectories"),
    ("experts --method zz --status", 2, "unknown method 'zz'"),
    ("issues --set issues.nope=1", 2, "unknown key 'nope'"),
    ("estimate --set issues.nope=1", 2, "unknown key 'nope'"),
    ("estimate --run {run_norun}", 2, "has no records/ folder: give a run directory"),
    ("estimate --run {run_norun} --dataset digits", 2, "drop --dataset"),
    ("issues --set train.epoch=1", 2, "unknown key 'epoch'"),
    ("denoise --ipc 0", 2, "argument --ipc: must be >= 1"),
    ("denoise --out {afile}", 2, "is a file, not a folder"),
    ("denoise --synthetic {t}/missing.safetensors", 2, "--synthetic"),
    ("denoise --synthetic {syn_neg_lr}", 2, "learned learning rate -0.1"),
    ("denoise --set denoise.nope=1", 2, "unknown key 'nope'"),
    ("denoise --set train.depth=0", 2, "depth must be >= 1"),
    ("CACHE={afile} denoise", 2, "$DDLNL_CACHE"),
    # --- output paths, checked before any work
    ("run --out {afile}", 2, "is a file, not a folder"),
    ("run --out {afile}/sub", 2, "is a file, not a folder"),
    ("run --out {unwritable}/ddlnl-run", 2, "cannot write in /sys"),
    ("baseline --out {afile}", 2, "is a file, not a folder"),
    ("baseline --out {unwritable}/b", 2, "cannot write in /sys"),
    ("noise --save {t}", 2, "is a folder; name a file ending in .npz"),
    ("noise --save {t}/labels.txt", 2, "use a file name ending in .npz"),
    ("noise --save {afile}/x.npz", 2, "is a file, not a folder"),
    ("noise --save {unwritable}/x.npz", 2, "cannot write in /sys"),
    ("distill --method dm --ipc 1 --out {t}", 2, "is a folder"),
    ("distill --method dm --ipc 1 --out {afile}/x.safetensors", 2, "is a file, not a folder"),
    ("distill --method dm --ipc 1 --out {unwritable}/x.safetensors", 2, "cannot write in /sys"),
    ("results {root_damaged} --csv {t}", 2, "is a folder"),
    ("results {root_damaged} --csv {afile}/x.csv", 2, "is a file, not a folder"),
    ("results {root_damaged} --csv {t}/rows.txt", 2, "ending in .csv"),
    ("results {root_damaged} --filter colour=red", 2, "unknown field 'colour'"),
    ("results {root_damaged} --filter method", 2, "expected field=value"),
    ("report {root_damaged} --out {afile}", 2, "is a file, not a folder"),
    ("report {root_damaged} --out {unwritable}/r", 2, "cannot write in /sys"),
    ("estimate --out {afile}", 2, "is a file, not a folder"),
    ("issues --out {afile}", 2, "is a file, not a folder"),
    ("issues --out {unwritable}/i", 2, "cannot write in /sys"),
    ("sweep {grid/ok} --root {afile}", 2, "is a file, not a folder"),
    ("sweep {grid/ok} --root {unwritable}/s", 2, "cannot write in /sys"),
    ("run --out {t}/r --cache {afile}", 2, "unrecognized arguments: --cache"),
    ("CACHE={afile} run --out {t}/r", 2, "$DDLNL_CACHE"),
    ("CACHE={afile}/sub distill --method dm --ipc 1 --out {t}/x.safetensors", 2, "$DDLNL_CACHE"),
    ("CACHE={unwritable}/cache experts --method datm --status", 2, "$DDLNL_CACHE"),
    # --- input files: missing, damaged, not ddlnl's, meaningless
    ("noise --noise file:{lab_trunc}", 2, "lab-trunc.npz"),
    ("noise --noise file:{lab_empty}", 2, "lab-empty.npz"),
    ("noise --noise file:{lab_short}", 2, "lab-short.npz"),
    ("noise --noise file:{lab_range}", 2, "lab-range.npz"),
    ("noise --noise file:{lab_float}", 2, "lab-float.npz"),
    ("noise --noise file:{lab_two}", 2, "expected one array"),
    ("noise --noise file:{lab_pickle}", 2, "lab-pickle.npy"),
    ("noise --noise file:{lab_csv_text}", 2, "lab.csv"),
    ("noise --noise file:{lab_suffix}", 2, "use .npz"),
    ("noise --noise file:{afile}", 2, "use .npz"),
    ("run --set seed=-3", 2, "seed must be >= 0"),
    ("run --set baseline_runs=-1", 2, "baseline_runs must be >= 0"),
    ("noise --noise file:{lab_wrong_dataset}", 2, "was made for fashion-mnist"),
    ("noise --noise file:{lab_bad_summary}", 2, "'summary' entry is not valid JSON"),
    ("noise --noise file:{t}/missing.npz", 2, "missing.npz not found"),
    ("noise --noise file:{t}", 2, "is a folder, not a file"),
    ("noise --noise-file {t}/missing.pt", 2, "--noise-file"),
    ("noise --dataset cifar10 --data-root {emptydir} --noise natural:aggre --noise-file {pt_pickle}", 2, "cifar"),
    ("noise --data-root {t}/missing-data", 2, "--data-root"),
    ("noise --dataset fashion-mnist --data-root {emptydir}", 2, "fashion-mnist"),
    ("noise --dataset npz --data-root {npz_data_empty}", 2, "has no training images"),
    ("noise --dataset npz --data-root {npz_data_trunc}", 2, "trunc-data.npz"),
    ("noise --dataset npz --data-root {npz_data_missing_key}", 2, "nokey-data.npz"),
    ("evaluate {t}/missing.safetensors", 2, "not found"),
    ("evaluate {t}", 2, "is a folder, not a file"),
    ("evaluate {afile}", 2, "afile is damaged (not a readable safetensors file"),
    ("evaluate {syn_trunc}", 2, "trunc.safetensors is damaged (not a readable safetensors file"),
    ("evaluate {syn_empty}", 2, "empty.safetensors is damaged"),
    ("evaluate {syn_text}", 2, "text.safetensors is damaged"),
    ("evaluate {syn_tampered}", 2, "fails its checksum"),
    ("evaluate {syn_foreign}", 2, "not a ddlnl synthetic set"),
    ("evaluate {syn_neg_lr}", 2, "learned learning rate -0.1 is not a positive number"),
    ("evaluate {syn_nan_lr}", 2, "learned learning rate nan is not a positive number"),
    ("evaluate {syn_str_lr}", 2, "learned learning rate 'fast' is not a positive number"),
    ("evaluate {syn_zero}", 2, "holds no images"),
    ("evaluate {syn_bad_labels}", 2, "labels out of range"),
    ("evaluate {syn_nan_images}", 2, "NaN or inf"),
    ("evaluate {syn_meta_list}", 2, "metadata is a list"),
    ("evaluate {syn_bad_classes}", 2, "num_classes 0 is not a positive integer"),
    ("evaluate {syn_no_dataset}", 2, "does not name its dataset: pass --dataset"),
    ("issues --synthetic {t}/missing.safetensors", 2, "--synthetic"),
    ("estimate --synthetic {t}/missing.safetensors", 2, "--synthetic"),
    ("issues --synthetic {syn_trunc} --no-train", 2, "is damaged"),
    ("estimate --run {run_badconfig}", 2, "config.json is damaged (not valid JSON"),
    ("estimate --run {run_listconfig}", 2, "config.json is damaged (holds a JSON list"),
    ("estimate --run {run_allbad}", 2, "has no sound records (1 damaged: "),
    ("estimate --run {afile}", 2, "is not a folder"),
    # --- a run directory of the layout before records/: one line saying what to do, for every reader
    ("estimate --run {run_old}", 2, "is a run directory of an earlier ddlnl"),
    ("results {run_old}", 2, "run its job again with `ddlnl run --out NEW_DIR`"),
    ("report {run_old}", 2, "is a run directory of an earlier ddlnl"),
    ("run --out {run_old} --quiet", 2, "is a run directory of an earlier ddlnl"),
    ("sweep {t}/missing.yaml", 2, "missing.yaml not found"),
    ("sweep {t}", 2, "is a folder, not a file"),
    ("results {t}/missing", 2, "is not a folder"),
    ("results {afile}", 2, "is not a folder"),
    ("results {emptydir}", 2, "has no records/ folder"),
    ("report {t}/missing", 2, "is not a folder"),
    ("results {root_badgrid}", 2, "g.yaml: grid key 'ipcs': expected integers, got float 1.5; fix or delete it"),
    # --- damaged records: left out with one line (never silently), the table still printed
    ("results {root_damaged}", 0, "1 damaged or foreign record(s) left out"),
    ("results {root_foreign}", 0, "not a ddlnl file of this kind"),
    ("results {root_list}", 0, "holds a JSON list"),
    ("results {root_badacc}", 0, "accuracies are missing or outside [0, 1]"),
    ("results {root_tampered}", 0, "fails its checksum"),
    ("results {root_damaged} --all", 0, "damaged or foreign record"),
    # --- the sweep: options and cluster
    ("sweep {grid/ok} --only colour=red --dry-run", 2, "FIELD one of"),
    ("sweep {grid/ok} --only method=nothing --dry-run", 2, "matches no cell"),
    ("sweep {grid/ok} --only ipc", 2, "expected FIELD=V1,V2"),
    ("sweep {grid/ok} --executor slurm" if __import__("shutil").which("sbatch") is None else "sweep {grid/ipc-float} --executor slurm",
     2, "sbatch is not on PATH" if __import__("shutil").which("sbatch") is None else "ipcs"),
    ("sweep {grid/ok} --executor submitit-local --cells-per-job -1", 2, "must be >= 1"),
]
ROWS += [(f"sweep {{grid/{name}}} --dry-run", 2, GRID_WORDS[name]) for name in GRID_PATCHES]
GRID_PATCHES["ok"] = {}


@pytest.fixture(autouse=True)
def _no_work(monkeypatch, tmp_path):
    """A row passes only if its input is refused before any training or distillation: creating an
    optimiser fails it. Runs in a scratch folder with a scratch cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was refused")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", refuse)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DDLNL_CACHE", str(tmp_path / "cache"))


def test_the_table_has_at_least_150_rows_and_covers_every_command():
    assert len(ROWS) >= 150
    commands = {shlex.split(r[0].split(" ", 1)[1] if r[0].startswith("CACHE=") else r[0] or "none")[0] for r in ROWS}
    assert {"run", "noise", "baseline", "distill", "evaluate", "experts", "estimate", "issues", "sweep", "results",
            "report", "denoise"} <= commands


@pytest.mark.parametrize("line,code,words", ROWS, ids=[f"{i:03d}:{r[0][:60]}" for i, r in enumerate(ROWS)])
def test_bad_input_is_one_line(line, code, words, tmp_path, capsys, monkeypatch):
    setup = Setup(tmp_path)
    if line.startswith("CACHE="):
        env, line = line.split(" ", 1)
        monkeypatch.setenv("DDLNL_CACHE", env[len("CACHE="):].format_map(setup))
    argv = [a.format_map(setup) for a in shlex.split(line)]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert words in lines[0], lines[0]
    # the reason, never a library's advice to load the file unsafely
    assert not any(w in lines[0] for w in ("allow_pickle=True", "weights_only=False", "unsafe")), lines[0]
    if code == 2:
        assert ": error: " in lines[0]
