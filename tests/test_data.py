"""Loaders reproduce known values of the official file formats, and refuse what they should."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import (
    CIFAR10_CLASSES,
    TINY_COLOURS,
    write_cifar10,
    write_cifar100,
    write_cifar_n,
    write_fashion_mnist,
    write_jpeg,
    write_pickle,
    write_tiny_imagenet,
)
from PIL import Image

import ddlnl.data as data
from ddlnl.data import (
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR_N_VARIANTS,
    DATASETS,
    Dataset,
    load_cifar_n,
    load_dataset,
)
from ddlnl.errors import DataError, UserError

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user DDLNL_DATA, no default roots, caches under tmp_path."""
    monkeypatch.delenv("DDLNL_DATA", raising=False)
    monkeypatch.setenv("DDLNL_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setattr(data.common, "DEFAULT_DATA_ROOTS", {})


def raises_data_error(match: str):
    """DataError whose message matches and is one line (the CLI prints it as is)."""

    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(DataError, match=match)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            result = self._ctx.__exit__(*exc)
            assert "\n" not in str(self.info.value), str(self.info.value)
            return result

    return _Check()


def check_dataset(ds: Dataset, n_train: int, n_test: int, shape: tuple[int, int, int]) -> None:
    """Invariants every loader promises."""
    for split, n in ((ds.train, n_train), (ds.test, n_test)):
        assert tuple(split.images.shape) == (n, *shape)
        assert split.images.dtype == torch.float32 and split.images.is_contiguous()
        assert split.labels.dtype == torch.int64 and tuple(split.labels.shape) == (n,)
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < ds.num_classes
    assert len(ds.mean) == len(ds.std) == shape[0]
    assert ds.meta["source"]


def raw_train_pixels(ds: Dataset) -> torch.Tensor:
    return ds.denormalize(ds.train.images)


def assert_train_statistics(ds: Dataset) -> None:
    """mean/std are the training split's per-channel statistics at pixel scale."""
    raw = raw_train_pixels(ds)
    np.testing.assert_allclose(ds.mean, raw.mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(ds.std, raw.std(dim=(0, 2, 3)).numpy(), rtol=1e-4)


# ---------------------------------------------------------------------------------- registry


def test_registry_lists_every_loader() -> None:
    assert sorted(DATASETS) == sorted(
        ["digits", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse", "tiny-imagenet", "npz", "imagefolder"]
    )


def test_unknown_dataset_lists_the_choices() -> None:
    with raises_data_error("unknown dataset 'cifar-10'.*did you mean 'cifar10'") as info:
        load_dataset("cifar-10")
    assert ", ".join(sorted(DATASETS)) in str(info.value)
    assert isinstance(info.value, UserError)


# ------------------------------------------------------------------------------------ digits


def test_digits_fixed_stratified_split() -> None:
    ds = load_dataset("digits")
    check_dataset(ds, 1257, 540, (1, 8, 8))
    assert ds.classes == tuple(str(i) for i in range(10))
    # Stratified: each class's share of the test split is 30% of its total, to within one image.
    total = torch.bincount(torch.cat([ds.train.labels, ds.test.labels]), minlength=10)
    test_counts = torch.bincount(ds.test.labels, minlength=10)
    assert torch.all((test_counts - 0.3 * total).abs() <= 1)
    again = load_dataset("digits", root="/ignored")
    assert torch.equal(ds.train.images, again.train.images)
    assert torch.equal(ds.test.labels, again.test.labels)
    raw = raw_train_pixels(ds)
    assert float(raw.min()) > -1e-5 and float(raw.max()) < 1 + 1e-5  # 0..16 scaled by 1/16
    assert_train_statistics(ds)
    assert "random_state=0" in ds.meta["split"]


# ------------------------------------------------------------------------------------ CIFAR-10


def test_cifar10_reads_official_batches(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=written["folder"])
    check_dataset(ds, 10, 3, (3, 32, 32))
    assert ds.classes == CIFAR10_CLASSES
    assert torch.equal(ds.train.labels, torch.as_tensor(written["train_labels"]))
    assert torch.equal(ds.test.labels, torch.as_tensor(written["test_labels"]))
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32.
    row = written["train_rows"][7]
    raw = raw_train_pixels(ds)
    for c, h, w in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):
        assert float(raw[7, c, h, w]) == pytest.approx(row[c * 1024 + h * 32 + w] / 255, abs=1e-5)
    assert_train_statistics(ds)
    # Test pixels (128..255) are brighter than training ones (0..127): test must not be zero-mean.
    assert float(ds.test.images.mean()) > 1.0
    assert len(ds.meta["source"]) == 7


def test_cifar10_root_may_be_the_parent_or_the_env(tmp_path: Path, monkeypatch) -> None:
    write_cifar10(tmp_path)
    direct = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py")
    assert torch.equal(load_dataset("cifar10", root=tmp_path).train.images, direct.train.images)
    monkeypatch.setenv("DDLNL_DATA", str(tmp_path))
    assert torch.equal(load_dataset("cifar10").train.labels, direct.train.labels)


def test_cifar10_missing_everywhere_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    with raises_data_error("cifar10: no data folder given.*cifar-10-python.tar.gz"):
        load_dataset("cifar10")
    monkeypatch.setenv("DDLNL_DATA", str(tmp_path))
    with raises_data_error(f"not found in {tmp_path}.*cifar-10-python.tar.gz.*DDLNL_DATA"):
        load_dataset("cifar10")


def test_cifar10_missing_or_truncated_batch_names_the_file(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)["folder"]
    batch = folder / "data_batch_3"
    content = batch.read_bytes()
    batch.write_bytes(content[: len(content) // 2])
    with raises_data_error("data_batch_3.*truncated"):
        load_dataset("cifar10", root=folder)
    batch.unlink()
    with raises_data_error("missing file .*data_batch_3"):
        load_dataset("cifar10", root=folder)


def test_cifar_batches_are_not_unpickled_as_code(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)["folder"]
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2)
    )
    with raises_data_error("test_batch.*not an official CIFAR python batch"):
        load_dataset("cifar10", root=folder)
    assert not marker.exists()


# ----------------------------------------------------------------------------------- CIFAR-100


def test_cifar100_fine_to_coarse_is_the_official_mapping() -> None:
    # The list used across the noisy-label literature; the loader checks it against real files.
    literature = [
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13,
        15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4,
        17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13,
        15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
    ]  # fmt: skip
    assert list(CIFAR100_FINE_TO_COARSE) == literature
    assert len(CIFAR100_FINE_CLASSES) == 100 and CIFAR100_FINE_CLASSES == tuple(
        sorted(CIFAR100_FINE_CLASSES)
    )
    assert len(CIFAR100_COARSE_CLASSES) == 20
    assert sorted(collections.Counter(CIFAR100_FINE_TO_COARSE).items()) == [
        (k, 5) for k in range(20)
    ]

    def coarse_of(fine: str) -> str:
        return CIFAR100_COARSE_CLASSES[CIFAR100_FINE_TO_COARSE[CIFAR100_FINE_CLASSES.index(fine)]]

    assert coarse_of("apple") == "fruit_and_vegetables"
    assert coarse_of("beaver") == "aquatic_mammals"
    assert coarse_of("bee") == "insects"
    assert coarse_of("lawn_mower") == "vehicles_2"
    assert coarse_of("whale") == "aquatic_mammals"


def test_cifar100_keeps_coarse_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", root=tmp_path)
    check_dataset(ds, 6, 4, (3, 32, 32))
    assert ds.classes == CIFAR100_FINE_CLASSES
    assert ds.meta["coarse_classes"] == CIFAR100_COARSE_CLASSES
    assert torch.equal(ds.train.labels, torch.as_tensor(written["train_fine"]))
    assert ds.meta["coarse_labels"].dtype == torch.int64
    assert torch.equal(ds.meta["coarse_labels"], torch.as_tensor(written["train_coarse"]))
    assert torch.equal(ds.meta["test_coarse_labels"], torch.as_tensor(written["test_coarse"]))
    raw = raw_train_pixels(ds)
    assert float(raw[2, 1, 3, 4]) == pytest.approx(
        written["train_rows"][2][1024 + 3 * 32 + 4] / 255, abs=1e-5
    )
    assert_train_statistics(ds)


def test_cifar100_with_foreign_coarse_labels_is_refused(tmp_path: Path) -> None:
    write_cifar100(tmp_path, corrupt_coarse=True)
    with raises_data_error("official superclass.*not the official CIFAR-100"):
        load_dataset("cifar100", root=tmp_path)


# ------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_gz_and_raw(tmp_path: Path, gz: bool) -> None:
    written = write_fashion_mnist(tmp_path / "fashion-mnist", gz=gz)
    ds = load_dataset("fashion-mnist", root=tmp_path)  # the parent works too
    check_dataset(ds, 6, 4, (1, 28, 28))
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.train.labels.tolist() == written["train-labels-idx1-ubyte"].tolist()
    assert ds.test.labels.tolist() == written["t10k-labels-idx1-ubyte"].tolist()
    raw = raw_train_pixels(ds)
    assert float(raw[3, 0, 10, 20]) == pytest.approx(
        written["train-images-idx3-ubyte"][3, 10, 20] / 255, abs=1e-5
    )
    assert_train_statistics(ds)


def test_fashion_mnist_truncated_idx_names_the_file(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with raises_data_error("train-images-idx3-ubyte is truncated: header 6x28x28"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with raises_data_error("t10k-images-idx3-ubyte.gz.*truncated or corrupt"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_wrong_magic_is_refused(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    (tmp_path / "train-images-idx3-ubyte").write_bytes(labels.read_bytes())
    with raises_data_error("magic number 2049 \\(expected 2051\\)"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_missing_says_apt_get(tmp_path: Path) -> None:
    with raises_data_error("apt-get install dataset-fashion-mnist.*DDLNL_DATA"):
        load_dataset("fashion-mnist", root=tmp_path)
    write_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with raises_data_error("missing t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_real_fashion_mnist(monkeypatch) -> None:
    if not REAL_FASHION_MNIST.is_dir():
        pytest.skip(f"{REAL_FASHION_MNIST} absent (apt-get install dataset-fashion-mnist)")
    # Found through the default root, as a user without configuration would.
    monkeypatch.setattr(data.common, "DEFAULT_DATA_ROOTS", {"fashion-mnist": (REAL_FASHION_MNIST,)})
    ds = load_dataset("fashion-mnist")
    check_dataset(ds, 60000, 10000, (1, 28, 28))
    assert int(ds.train.labels[0]) == 9  # the first training image is an ankle boot
    assert torch.equal(torch.bincount(ds.train.labels), torch.full((10,), 6000))
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3)  # the well-known Fashion-MNIST mean


# ------------------------------------------------------------------------------- Tiny ImageNet


def test_tiny_imagenet_reads_folder_and_caches(tmp_path: Path, monkeypatch) -> None:
    written = write_tiny_imagenet(tmp_path)
    ds = load_dataset("tiny-imagenet", root=tmp_path)
    check_dataset(ds, 9, 6, (3, 64, 64))
    assert ds.classes == ("bullfrog", "goldfish", "European fire salamander")  # wnids.txt order
    assert ds.meta["wnids"] == tuple(written["wnids"])
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Validation files sorted by name; val_i has class (2 i) mod 3.
    assert ds.test.labels.tolist() == [0, 2, 1, 0, 2, 1]
    raw = raw_train_pixels(ds)
    # JPEG is lossy, flat colours nearly exact; image 0 is greyscale, so all channels equal.
    expected = np.array(TINY_COLOURS[1]) / 255
    np.testing.assert_allclose(raw[4, :, 30, 30].numpy(), expected, atol=0.03)
    assert torch.allclose(raw[0, 0], raw[0, 1], atol=1e-5)
    assert_train_statistics(ds)
    cache = Path(ds.meta["cache"])
    assert cache.parent == written["folder"] and cache.is_file()

    # Second load: straight from the cache, no JPEG decoded.
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a JPEG although the cache is valid")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = load_dataset("tiny-imagenet", root=written["folder"])
    assert torch.equal(again.train.images, ds.train.images)
    assert torch.equal(again.test.labels, ds.test.labels)
    monkeypatch.undo()

    # Adding an image changes the fingerprint: decoded again, the stale cache removed.
    wnid = written["wnids"][1]
    write_jpeg(written["folder"] / "train" / wnid / "images" / f"{wnid}_9.JPEG", TINY_COLOURS[1])
    grown = load_dataset("tiny-imagenet", root=tmp_path)
    assert len(grown.train) == 10 and grown.train.labels.tolist().count(1) == 4
    assert not cache.exists() and Path(grown.meta["cache"]).is_file()


def test_tiny_imagenet_cache_falls_back_when_folder_read_only(tmp_path: Path, monkeypatch) -> None:
    written = write_tiny_imagenet(tmp_path)
    real_save = data.tiny_imagenet._atomic_save_npz

    def read_only_data_folder(path: Path, **arrays):
        if path.parent == written["folder"]:
            raise PermissionError(13, "Permission denied", str(path))
        real_save(path, **arrays)

    monkeypatch.setattr(data.tiny_imagenet, "_atomic_save_npz", read_only_data_folder)
    ds = load_dataset("tiny-imagenet", root=tmp_path)
    assert Path(ds.meta["cache"]).parent == tmp_path / "user-cache"
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("cache not reused"))
    assert torch.equal(load_dataset("tiny-imagenet", root=tmp_path).train.images, ds.train.images)


def test_tiny_imagenet_incomplete_folder(tmp_path: Path) -> None:
    written = write_tiny_imagenet(tmp_path)
    victim = written["folder"] / "val" / "images" / "val_1.JPEG"
    victim.unlink()
    with raises_data_error("val_1.JPEG is listed in .*val_annotations.txt but missing"):
        load_dataset("tiny-imagenet", root=tmp_path)
    write_jpeg(victim, (1, 2, 3), size=32)
    with raises_data_error("val_1.JPEG is 32x32, expected 64x64"):
        load_dataset("tiny-imagenet", root=tmp_path)


# ----------------------------------------------------------------------------------------- npz


def test_npz_channels_last_uint8_with_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (8, 5, 6, 3), dtype=np.uint8)  # N x H x W x C
    x_test = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(8) % 3, x_test=x_test,
             y_test=np.arange(4) % 3, classes=np.array(["a", "b", "c"]))  # fmt: skip
    ds = load_dataset("npz", root=path)
    check_dataset(ds, 8, 4, (3, 5, 6))
    assert ds.classes == ("a", "b", "c")
    pixel = float(raw_train_pixels(ds)[2, 1, 4, 5])  # channel 1 at (4, 5) of image 2
    assert pixel == pytest.approx(x_train[2, 4, 5, 1] / 255, abs=1e-5)
    assert_train_statistics(ds)
    assert ds.meta["source"] == (str(path),)


def test_npz_x_y_only_is_split_stratified(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((50, 1, 4, 4)).astype(np.float32)  # N x C x H x W float
    y = np.repeat(np.arange(5), 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset("npz", root=tmp_path / "d.npz")
    check_dataset(ds, 40, 10, (1, 4, 4))
    assert torch.equal(torch.bincount(ds.test.labels), torch.full((5,), 2))
    assert "test_size=0.2" in ds.meta["split"] and "random_state=0" in ds.meta["split"]
    assert ds.classes == ("0", "1", "2", "3", "4")
    again = load_dataset("npz", root=tmp_path / "d.npz")
    assert torch.equal(again.test.images, ds.test.images)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((4, 3, 3)), "y": np.array([0.0, 1.0, 0.0, 1.0])}, "integer class indices"),
        ({"x_train": np.full((2, 4, 4), 2.0), "y_train": np.array([0, 1]),
          "x_test": np.zeros((2, 4, 4)), "y_test": np.array([0, 1])}, "not within \\[0, 1\\]"),
        ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": np.array([0, 3]),
          "x_test": np.zeros((2, 4, 4), np.uint8), "y_test": np.array([0, 1]),
          "classes": np.array(["a", "b"])}, "span 0..3, expected 0..1"),
        ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": np.array([-1, 0]),
          "x_test": np.zeros((2, 4, 4), np.uint8), "y_test": np.array([0, 1])}, "span -1..0"),
        ({"images": np.zeros((2, 4, 4))}, "expected x_train, y_train, x_test, y_test"),
        ({"x_train": np.zeros((2, 5, 6, 7, 8), np.uint8), "y_train": np.array([0, 1]),
          "x_test": np.zeros((2, 4, 4), np.uint8), "y_test": np.array([0, 1])}, "has shape"),
    ],
)  # fmt: skip
def test_npz_bad_content_is_refused(tmp_path: Path, arrays, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with raises_data_error(message):
        load_dataset("npz", root=tmp_path / "bad.npz")


def test_npz_missing_or_truncated_file(tmp_path: Path) -> None:
    with raises_data_error("is not a file.*root='data.npz'"):
        load_dataset("npz", root=tmp_path / "nope.npz")
    path = tmp_path / "cut.npz"
    np.savez(path, x=np.zeros((10, 4, 4)), y=np.zeros(10, int))
    path.write_bytes(path.read_bytes()[:100])
    with raises_data_error("cannot read .*cut.npz"):
        load_dataset("npz", root=path)


# -------------------------------------------------------------------------------- imagefolder


def test_imagefolder(tmp_path: Path) -> None:
    for split, n in (("train", 2), ("test", 1)):
        for k, name in enumerate(["cat", "dog"]):
            (tmp_path / split / name).mkdir(parents=True)
            for j in range(n):
                Image.new("L", (6, 4), 40 + 100 * k).save(tmp_path / split / name / f"{j}.png")
    ds = load_dataset("imagefolder", root=tmp_path)
    check_dataset(ds, 4, 2, (1, 4, 6))  # greyscale PNGs -> one channel; H x W = 4 x 6
    assert ds.classes == ("cat", "dog") and ds.train.labels.tolist() == [0, 0, 1, 1]
    assert float(raw_train_pixels(ds)[2, 0, 1, 1]) == pytest.approx(140 / 255, abs=1e-5)


# ------------------------------------------------------------------------------------ CIFAR-N


class NotALabel:
    """A custom class: a CIFAR-N file that holds one must be refused, not unpickled."""


@pytest.fixture
def cifar10(tmp_path: Path) -> Dataset:
    write_cifar10(tmp_path / "c10")
    return load_dataset("cifar10", root=tmp_path / "c10")


def cifar10_n_arrays(ds: Dataset) -> dict[str, np.ndarray]:
    clean = ds.train.labels.numpy().astype(np.int64)
    rng = np.random.default_rng(1)
    out = {"clean_label": clean}
    for key in ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"):
        out[key] = rng.integers(0, 10, len(clean)).astype(np.int64)
    return out


@pytest.mark.parametrize("numpy1_names", [True, False])
def test_cifar10_n_labels(tmp_path: Path, cifar10: Dataset, numpy1_names: bool) -> None:
    arrays = cifar10_n_arrays(cifar10)
    write_cifar_n(tmp_path / "CIFAR-10_human.pt", arrays, numpy1_names=numpy1_names)
    labels = load_cifar_n(tmp_path / "CIFAR-10_human.pt", cifar10)
    assert set(labels) == set(CIFAR_N_VARIANTS["cifar10"]) == {
        "aggre", "random1", "random2", "random3", "worst"
    }  # fmt: skip
    assert labels["worst"].dtype == np.int64
    np.testing.assert_array_equal(labels["worst"], arrays["worse_label"])
    np.testing.assert_array_equal(labels["random2"], arrays["random_label2"])


def test_cifar100_n_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path / "c100")
    ds = load_dataset("cifar100", root=tmp_path / "c100")
    arrays = {
        "clean_label": written["train_fine"].astype(np.int64),
        "noisy_label": np.roll(written["train_fine"], 1).astype(np.int64),
        "clean_coarse_label": written["train_coarse"].astype(np.int64),
        "noisy_coarse_label": np.roll(written["train_coarse"], 1).astype(np.int64),
    }
    write_cifar_n(tmp_path / "CIFAR-100_noisy_label.pt", arrays)
    labels = load_cifar_n(tmp_path / "CIFAR-100_noisy_label.pt", ds)
    assert set(labels) == {"noisy", "noisy-coarse"}
    np.testing.assert_array_equal(labels["noisy-coarse"], arrays["noisy_coarse_label"])
    # The CIFAR-10 file is not the CIFAR-100 one.
    write_cifar_n(tmp_path / "c10.pt", {"clean_label": arrays["clean_label"],
                                         "aggre_label": arrays["noisy_label"]})  # fmt: skip
    with raises_data_error("key 'noisy_label' missing.*cifar10 or cifar100"):
        load_cifar_n(tmp_path / "c10.pt", ds)


def test_cifar_n_wrong_length_or_clean_labels(tmp_path: Path, cifar10: Dataset) -> None:
    arrays = cifar10_n_arrays(cifar10)
    short = {k: v[:-1] for k, v in arrays.items()}
    write_cifar_n(tmp_path / "short.pt", short)
    with raises_data_error("expected 10 integer labels"):
        load_cifar_n(tmp_path / "short.pt", cifar10)
    arrays["clean_label"] = (arrays["clean_label"] + 1) % 10
    write_cifar_n(tmp_path / "other.pt", arrays)
    with raises_data_error("clean_label does not match cifar10 training labels: is this the file"):
        load_cifar_n(tmp_path / "other.pt", cifar10)


@pytest.mark.parametrize(
    "content, culprit",
    [
        ({"clean_label": NotALabel()}, "test_data.NotALabel"),
        (collections.OrderedDict(clean_label=np.zeros(10, dtype=np.float64)), "Float64DType"),
        ({"clean_label": np.zeros(10, dtype=object)}, "ObjectDType"),
    ],
    ids=["custom-class", "ordereddict-float64", "object-array"],
)
def test_cifar_n_refuses_non_allowlisted_objects(
    tmp_path: Path, cifar10: Dataset, content, culprit: str
) -> None:
    torch.save(content, tmp_path / "evil.pt")
    with raises_data_error(f"refusing .*evil.pt: not a CIFAR-N label file .*{culprit}"):
        load_cifar_n(tmp_path / "evil.pt", cifar10)


def test_cifar_n_refuses_code_and_non_zip_files(tmp_path: Path, cifar10: Dataset) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"clean_label": Payload()}, tmp_path / "code.pt")
    with raises_data_error("refusing .*code.pt: not a CIFAR-N label file"):
        load_cifar_n(tmp_path / "code.pt", cifar10)
    assert not marker.exists()
    write_pickle(tmp_path / "plain.pt", cifar10_n_arrays(cifar10))  # legacy / plain pickle
    with raises_data_error("refusing .*plain.pt: not a CIFAR-N label file \\(not a torch zip"):
        load_cifar_n(tmp_path / "plain.pt", cifar10)
    with raises_data_error("CIFAR-N label file .*missing.pt not found.*UCSC-REAL"):
        load_cifar_n(tmp_path / "missing.pt", cifar10)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "code.pt").read_bytes()[:200])
    with raises_data_error("refusing .*cut.pt: not a CIFAR-N label file"):
        load_cifar_n(tmp_path / "cut.pt", cifar10)


def test_cifar_n_only_for_cifar() -> None:
    with raises_data_error("CIFAR-N labels exist for"):
        load_cifar_n("whatever.pt", load_dataset("digits"))


def test_cifar100_coarse_has_the_20_superclasses_as_classes(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path / "c100", n_train=40, n_test=10)
    fine = load_dataset("cifar100", root=tmp_path / "c100")
    ds = load_dataset("cifar100-coarse", root=tmp_path / "c100")
    assert ds.name == "cifar100-coarse" and ds.num_classes == 20
    assert ds.classes == CIFAR100_COARSE_CLASSES
    np.testing.assert_array_equal(ds.train.labels.numpy(), written["train_coarse"])
    np.testing.assert_array_equal(ds.test.labels.numpy(), written["test_coarse"])
    np.testing.assert_array_equal(np.asarray(ds.meta["fine_labels"]), written["train_fine"])
    assert torch.equal(ds.train.images, fine.train.images) and ds.mean == fine.mean


def test_cifar100_n_noisy_coarse_goes_with_cifar100_coarse(tmp_path: Path) -> None:
    from ddlnl.noise import NoiseSpec, make_noise

    written = write_cifar100(tmp_path / "c100", n_train=40, n_test=10)
    noisy_coarse = np.roll(written["train_coarse"], 1).astype(np.int64)
    arrays = {
        "clean_label": written["train_fine"].astype(np.int64),
        "noisy_label": np.roll(written["train_fine"], 1).astype(np.int64),
        "clean_coarse_label": written["train_coarse"].astype(np.int64),
        "noisy_coarse_label": noisy_coarse,
    }
    path = tmp_path / "CIFAR-100_noisy_label.pt"
    write_cifar_n(path, arrays)
    ds = load_dataset("cifar100-coarse", root=tmp_path / "c100")
    assert set(load_cifar_n(path, ds)) == {"noisy-coarse"}
    result = make_noise(NoiseSpec("natural", variant="noisy-coarse", path=str(path)), ds, seed=0)
    np.testing.assert_array_equal(result.noisy.numpy(), noisy_coarse)
    assert result.realized_T.shape == (20, 20)
    assert result.realized_rate == pytest.approx(float((noisy_coarse != written["train_coarse"]).mean()))
    # On the 100-class dataset the superclass labels are refused, pointing at cifar100-coarse.
    with pytest.raises(UserError, match="cifar100-coarse"):
        make_noise(NoiseSpec("natural", variant="noisy-coarse", path=str(path)),
                   load_dataset("cifar100", root=tmp_path / "c100"), seed=0)
    # A file whose fine clean labels are another dataset's is still refused.
    write_cifar_n(tmp_path / "other.pt", {**arrays, "clean_label": np.roll(arrays["clean_label"], 1)})
    with raises_data_error("clean_label does not match"):
        load_cifar_n(tmp_path / "other.pt", ds)
