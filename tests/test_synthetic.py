import pytest
import torch

from ddlnl.errors import DataError
from ddlnl.synthetic import SyntheticSet, load_synthetic


def _syn(soft: bool = False) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 8, 8, generator=g)
    labels = torch.softmax(torch.randn(6, 3, generator=g), 1) if soft else torch.tensor([0, 0, 1, 1, 2, 2])
    return SyntheticSet(images, labels, lr=0.0123 if soft else None,
                        meta={"method": "x", "ipc": 2, "num_classes": 3, "config": {"a": [1, 2]}})


@pytest.mark.parametrize("soft", [False, True])
def test_round_trip_is_bit_exact(tmp_path, soft):
    syn = _syn(soft)
    path = syn.save(tmp_path / "s.safetensors")
    back = load_synthetic(path)
    assert torch.equal(back.images, syn.images) and torch.equal(back.labels, syn.labels)
    assert back.labels.dtype == syn.labels.dtype and back.lr == syn.lr and back.meta == syn.meta


def test_tampered_file_is_refused(tmp_path):
    path = _syn().save(tmp_path / "s.safetensors")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the tensor payload
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        load_synthetic(path)


def test_truncated_file_is_refused(tmp_path):
    path = _syn().save(tmp_path / "s.safetensors")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_synthetic(path)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_synthetic(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="not a ddlnl synthetic set"):
        load_synthetic(tmp_path / "other.safetensors")


def test_shapes_and_dtypes_are_checked():
    with pytest.raises(DataError, match="int64"):
        SyntheticSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1], dtype=torch.int32))
    with pytest.raises(DataError, match="labels"):
        SyntheticSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(DataError, match="columns"):
        SyntheticSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, 5), meta={"num_classes": 3})
    with pytest.raises(DataError, match="NaN"):
        SyntheticSet(torch.full((1, 1, 4, 4), float("nan")), torch.tensor([0]))


def test_save_is_atomic_and_leaves_no_temporary(tmp_path):
    _syn().save(tmp_path / "s.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]
