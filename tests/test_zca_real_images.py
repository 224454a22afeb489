"""A set distilled in a ZCA space (DATM, RCIG) trains models on whitened images: every real image
such a model scores (test split, training labels, noise estimate, denoise teachers) must be whitened
the same way first, and figures show the set un-whitened."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import importlib

from ddlnl.augment import fit_zca_space
from ddlnl.cli import main
from ddlnl.data import LabeledTensors, load_digits
from ddlnl.errors import DataError
from ddlnl.synthetic import SyntheticSet, display_images, to_set_space
from ddlnl.train import TrainConfig

li = importlib.import_module("ddlnl.label_issues")  # the package's `label_issues` is the API function
denoise_mod = importlib.import_module("ddlnl.denoise")
TINY_TRAIN = TrainConfig(depth=2, width=8, epochs=2, batch_size=64, augment="none")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _zca_set(images: torch.Tensor, labels: torch.Tensor, convention: str = "kornia") -> SyntheticSet:
    """A set of real images (10 per class) taken to the ZCA space fitted on ``images``, recorded
    as DATM and RCIG record theirs."""
    space = fit_zca_space(images, convention, 0.1)
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:10] for c in range(10)])
    return SyntheticSet(space.transform(images[idx]), labels[idx],
                        meta={"image_space": "zca", "zca": space.describe(), "num_classes": 10, "dataset": "digits",
                              "method": "datm", "ipc": 10})


class _Spy:
    """Records the images given to ``teacher_outputs``."""

    def __init__(self, real):
        self.real, self.seen = real, []

    def __call__(self, models, images, **kw):
        self.seen.append(images.clone())
        return self.real(models, images, **kw)


@pytest.mark.parametrize("convention", ["kornia", "rcig"])
def test_to_set_space_whitens_for_a_zca_set_only(digits, convention):
    x = digits.train.images
    syn = _zca_set(x, digits.train.labels, convention)
    white = to_set_space(syn, x[:50], x)
    torch.testing.assert_close(white, fit_zca_space(x, convention, 0.1).transform(x[:50]))
    assert not torch.allclose(white, x[:50], atol=0.1)
    plain = SyntheticSet(syn.images, syn.labels, meta={"image_space": "normalised", "num_classes": 10})
    assert torch.equal(to_set_space(plain, x[:50]), x[:50])
    assert torch.equal(to_set_space(LabeledTensors(syn.images, syn.labels), x[:5]), x[:5])
    with pytest.raises(DataError, match="fitted on other training images"):
        to_set_space(syn, x[:50], x[:600])  # not the images the whitening was fitted on


@pytest.mark.parametrize("convention", ["kornia", "rcig"])
def test_display_images_un_whitens_a_zca_set(digits, convention):
    x, y = digits.train.images, digits.train.labels
    syn = _zca_set(x, y, convention)
    idx = torch.cat([torch.nonzero(y == c).flatten()[:10] for c in range(10)])
    shown, note = display_images(syn, x)
    torch.testing.assert_close(shown, x[idx], atol=1e-4, rtol=0)  # the real images it was made of
    assert "un-whitened" in note
    kept, note = display_images(syn, None)
    assert torch.equal(kept, syn.images) and "ZCA" in note
    plain = SyntheticSet(x[idx], y[idx], meta={"num_classes": 10})
    assert display_images(plain, x) == (plain.images, "")


def test_label_scores_use_whitened_training_images(digits, monkeypatch):
    x, y = digits.train.images, digits.train.labels
    syn = _zca_set(x, y)
    spy = _Spy(li.teachers.teacher_outputs)
    monkeypatch.setattr(li.teachers, "teacher_outputs", spy)  # where it is defined
    cfg = li.IssuesConfig(n_models=1, neighbours=0)
    issues = li.score_labels(syn, LabeledTensors(x, y), cfg, TINY_TRAIN, seed=0)
    white = fit_zca_space(x, "kornia", 0.1).transform(x)
    torch.testing.assert_close(spy.seen[0], white)
    # the scores are those of the teachers asked about the whitened images (independent computation)
    models = li.train_teachers(syn, TINY_TRAIN, 1, seed=0)
    probs = li.teachers.teacher_outputs.real(models, white, keep_features=False).probs
    expected = li.find_issues(probs, y.numpy(), 10, cfg)
    np.testing.assert_allclose(issues.quality, expected.quality)


def test_denoise_teachers_see_whitened_images(digits, monkeypatch):
    x, y = digits.train.images, digits.train.labels
    syn = _zca_set(x, y)
    spy = _Spy(denoise_mod.teacher_outputs)
    monkeypatch.setattr(denoise_mod, "teacher_outputs", spy)
    denoise_mod.score_with_teachers(LabeledTensors(x, y), syn, TINY_TRAIN, li.IssuesConfig(n_models=1, neighbours=0),
                                    seed=0)
    torch.testing.assert_close(spy.seen[0], fit_zca_space(x, "kornia", 0.1).transform(x))


def test_estimate_and_issues_commands_whiten_for_a_zca_set(digits, tmp_path, monkeypatch, capsys):
    x, y = digits.train.images, digits.train.labels
    path = _zca_set(x, y).save(tmp_path / "datm-zca.safetensors")
    spy = _Spy(li.teachers.teacher_outputs)
    monkeypatch.setattr(li.teachers, "teacher_outputs", spy)  # where it is defined
    tiny = ["--set", "train.epochs=1", "--set", "train.width=8", "--set", "baseline.epochs=1", "--set",
            "baseline.width=8", "--set", "issues.n_models=1", "--quiet"]
    assert main(["estimate", "--noise", "symmetric:0.4", "--synthetic", str(path), "--out", str(tmp_path / "e"),
                 *tiny]) == 0
    assert main(["issues", "--noise", "symmetric:0.4", "--synthetic", str(path), "--out", str(tmp_path / "i"),
                 *tiny]) == 0
    capsys.readouterr()
    white = fit_zca_space(x, "kornia", 0.1).transform(x)
    assert len(spy.seen) == 2
    for seen in spy.seen:
        torch.testing.assert_close(seen, white)


def test_report_grids_show_a_zca_set_un_whitened(digits, tmp_path, monkeypatch):
    import ddlnl.report as report
    from ddlnl.results import load_records
    from ddlnl.sweep import grid_from_dict, run_local
    from ddlnl.synthetic import load_synthetic

    grid = grid_from_dict({"name": "z", "datasets": ["digits"], "noises": ["symmetric:0.4"], "methods": ["dm"],
                           "ipcs": [1], "baselines": ["converged"], "n_runs": 1, "preset": "cpu",
                           "set": ["train.epochs=1", "train.width=4", "baseline.epochs=1", "baseline.width=4"],
                           "method_set": {"dm": ["iterations=1", "width=4", "batch_real=4"]}})
    run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)
    rec = next(r for r in load_records(tmp_path, grid) if r["cell"]["method"] == "dm")
    path = tmp_path / rec["artifacts"]["synthetic"]
    syn = load_synthetic(path)
    space = fit_zca_space(digits.train.images, "kornia", 0.1)  # the cell's training split: all of digits
    SyntheticSet(space.transform(syn.images), syn.labels, syn.lr,
                 {**syn.meta, "image_space": "zca", "zca": space.describe()}).save(path)
    drawn = {}
    real = report.image_grid_png

    def spy(images, *a, **k):
        if k["title"].startswith("dm,"):
            drawn["images"], drawn["note"] = images, k.get("space_note", "")
        return real(images, *a, **k)

    monkeypatch.setattr(report, "image_grid_png", spy)
    report.write_report(tmp_path, grid=grid)
    assert "un-whitened" in drawn["note"]
    torch.testing.assert_close(drawn["images"], syn.images, atol=1e-4, rtol=0)


def test_train_model_measures_a_zca_set_on_whitened_test_images(digits):
    from ddlnl.api import train_model
    from ddlnl.train import accuracy

    syn = _zca_set(digits.train.images, digits.train.labels)
    model, acc = train_model(syn, digits, settings=["train.epochs=2", "train.width=8"], preset="cpu", device="cpu")
    white = LabeledTensors(fit_zca_space(digits.train.images, "kornia", 0.1).transform(digits.test.images),
                           digits.test.labels)
    assert acc == accuracy(model, white)
