"""Expert trajectories: what is stored, the cache key, reuse, repair of damaged caches, resumption."""

import json

import pytest
import torch

from ddlnl import experts as ex
from ddlnl.errors import ConfigError, DataError
from ddlnl.experts import ExpertConfig, ParamLayout, expert_key, expert_status, functional_forward, get_experts
from ddlnl.train import build_model
from ddlnl.utils import derive_seed

# Two experts of two epochs at width 4 on the 120-image blobs: ~0.1 s each.
ORIGINAL_TRAIN_EXPERT = ex.train_expert
TINY = ExpertConfig(num_experts=2, epochs=2, lr=0.05, batch_size=32, width=4, depth=2, augment="none")


@pytest.fixture
def blobs(tiny_dataset):
    return tiny_dataset.train


def _count_training(monkeypatch):
    calls = []
    real = ORIGINAL_TRAIN_EXPERT

    def counting(*args, **kwargs):
        calls.append(kwargs["index"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ex.cache, "train_expert", counting)
    return calls


def _forbid_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("an expert was retrained although the cache was complete")

    monkeypatch.setattr(ex.cache, "train_expert", boom)


def test_trajectory_rows_are_initial_then_per_epoch_parameters(blobs):
    tr = get_experts(blobs, TINY, seed=3, num_classes=4, cache=False)
    assert (tr.num_experts, tr.num_epochs) == (2, 2)
    init = build_model(TINY.train_config(), channels=1, num_classes=4, image_size=(8, 8),
                       seed=derive_seed(3, "expert", 1))
    assert torch.equal(tr.params(1, 0), ParamLayout.of(init).flatten(init))
    assert tr.trajectory(1).shape == (3, tr.num_params) == (3, ParamLayout.of(init).numel)
    assert not torch.equal(tr.params(1, 1), tr.params(1, 2))  # training moved the weights
    assert torch.equal(tr.params(1, -1), tr.params(1, 2))
    assert not torch.equal(tr.params(0, 0), tr.params(1, 0))  # experts start from different weights


def test_functional_forward_equals_the_loaded_module(blobs):
    tr = get_experts(blobs, TINY, seed=0, num_classes=4, cache=False)
    model = tr.load_into(tr.build_model(), 0, 2)
    x = blobs.images[:16]
    assert torch.allclose(functional_forward(tr.build_model(), tr.layout, tr.params(0, 2), x), model(x), atol=1e-6)


def test_second_call_reuses_the_cache(blobs, tmp_path, monkeypatch):
    first = get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    manifest = json.loads((first.directory / "manifest.json").read_text())
    assert manifest["key"] == first.key and manifest["experts"] == [0, 1]
    assert manifest["data_fingerprint"] and manifest["config"]["lr"] == 0.05
    _forbid_training(monkeypatch)
    again = get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert again.key == first.key
    for e in range(2):
        assert torch.equal(again.trajectory(e), first.trajectory(e))


def test_other_labels_or_seed_or_config_give_another_key(blobs, tmp_path, monkeypatch):
    get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    noisy = blobs.labels.clone()
    noisy[:3] = (noisy[:3] + 1) % 4
    other = blobs.with_labels(noisy)
    key = expert_key(blobs, TINY, seed=0, num_classes=4)
    assert expert_key(other, TINY, seed=0, num_classes=4) != key
    assert expert_key(blobs, TINY, seed=1, num_classes=4) != key
    assert expert_key(blobs, ExpertConfig(**{**TINY.__dict__, "lr": 0.01}), seed=0, num_classes=4) != key
    # The number of experts is not part of the key: more experts extend the same cache.
    assert expert_key(blobs, ExpertConfig(**{**TINY.__dict__, "num_experts": 5}), seed=0, num_classes=4) == key
    calls = _count_training(monkeypatch)
    tr = get_experts(other, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert calls == [0, 1] and tr.key != key


def test_damaged_expert_is_retrained_and_the_others_kept(blobs, tmp_path, monkeypatch):
    tr = get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    good = tr.trajectory(1)
    path = tr.directory / "expert_0001.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit pattern in the tensor bytes: the header still parses
    path.write_bytes(bytes(data))
    (tr.directory / "expert_0000.safetensors").write_bytes(b"truncated")
    status = expert_status(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert status.invalid == [0, 1] and status.missing == [0, 1]
    with pytest.raises(DataError, match="incomplete"):
        get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path, allow_training=False)
    calls = _count_training(monkeypatch)
    repaired = get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert calls == [0, 1]
    assert torch.equal(repaired.trajectory(1), good)  # retraining is deterministic


class Interrupted(Exception):
    """Stands for a kill while expert 1 trains."""


def test_interrupted_training_resumes_with_the_missing_experts(blobs, tmp_path, monkeypatch):
    real = ex.train_expert

    def dies_on_second(*args, **kwargs):
        if kwargs["index"] == 1:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(ex.cache, "train_expert", dies_on_second)
    with pytest.raises(Interrupted):
        get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    status = expert_status(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert status.complete == [0] and status.missing == [1] and not status.invalid
    assert not [p for p in status.directory.iterdir() if p.name.endswith(".tmp")]  # atomic writes
    calls = _count_training(monkeypatch)
    get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert calls == [1]
    # Asking for a third expert later trains only that one.
    calls.clear()
    more = get_experts(blobs, ExpertConfig(**{**TINY.__dict__, "num_experts": 3}), seed=0, num_classes=4,
                       cache_dir=tmp_path)
    assert calls == [2] and more.num_experts == 3


def test_foreign_manifest_is_not_trusted(blobs, tmp_path, monkeypatch):
    tr = get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    manifest = json.loads((tr.directory / "manifest.json").read_text())
    manifest["key"] = "somethingelse"
    (tr.directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="manifest"):
        get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path, allow_training=False)
    calls = _count_training(monkeypatch)
    get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert calls == [0, 1]


def test_float16_storage_round_trips(blobs, tmp_path):
    cfg = ExpertConfig(**{**TINY.__dict__, "storage_dtype": "float16", "num_experts": 1})
    tr = get_experts(blobs, cfg, seed=0, num_classes=4, cache_dir=tmp_path)
    ref = get_experts(blobs, ExpertConfig(**{**cfg.__dict__, "storage_dtype": "float32"}), seed=0,
                      num_classes=4, cache=False)
    assert tr.key != ref.key and tr.params(0, 1).dtype == torch.float32
    assert torch.allclose(tr.params(0, 1), ref.params(0, 1), rtol=1e-3, atol=1e-3)


def test_batch_norm_is_refused():
    with pytest.raises(ConfigError, match="norm=batch"):
        ExpertConfig(norm="batch").check()


def test_experts_for_job_uses_the_job_data_and_the_key_distill_uses(tmp_path):
    from ddlnl.jobs import experts_for_job
    from ddlnl.pipeline import JobConfig, fit_to_images, prepare_data, resolve_job

    over = ["datm.num_experts=1", "datm.expert_train_epochs=1", "datm.max_start_epoch=1",
            "datm.current_max_start_epoch=1", "datm.width=4"]
    resolved = resolve_job(JobConfig(dataset="digits", methods=("datm",)), over)
    status = experts_for_job(resolved, train_missing=False, show_progress=False, cache_dir=tmp_path)
    assert status.missing == [0] and not status.complete
    status = experts_for_job(resolved, show_progress=False, cache_dir=tmp_path)
    assert status.ready and status.complete == [0]
    prepared = prepare_data(resolved.job)
    cfg = fit_to_images(resolved, prepared.dataset.image_size).methods["datm"]
    assert status.key == expert_key(prepared.noisy_train, cfg.expert_config(), seed=cfg.expert_seed, num_classes=10)


def _fixed_data():
    g = torch.Generator().manual_seed(0)
    from ddlnl.data import LabeledTensors

    return LabeledTensors(torch.rand(12, 1, 8, 8, generator=g), torch.arange(12) % 3)


def test_keys_of_plain_sgd_experts_never_change():
    # Pinned before the FTD option existed: experts cached by earlier versions stay valid.
    data = _fixed_data()
    assert expert_key(data, ExpertConfig(), seed=0, num_classes=3) == "4995be343c7225cfad84c1ca"
    assert expert_key(data, ExpertConfig(width=8, epochs=2, num_experts=1), seed=3,
                      num_classes=3) == "a46ee883bb33b30370c32b36"
    # With rho 0 the other sharpness-aware fields are unused and stay out of the key.
    assert expert_key(data, ExpertConfig(sam_alpha=0.3, sam_adaptive=True), seed=0,
                      num_classes=3) == "4995be343c7225cfad84c1ca"


def test_ftd_experts_are_trained_with_gsam_under_their_own_key(blobs, tmp_path):
    ftd = ExpertConfig(**{**TINY.__dict__, **ex.FTD})
    assert ftd.train_config().sam_rho == 0.01 and ftd.train_config().sam_alpha == 0.3 and ftd.train_config().sam_adaptive
    assert expert_key(blobs, ftd, seed=0, num_classes=4) != expert_key(blobs, TINY, seed=0, num_classes=4)
    # rho large enough to matter at width 4 and 2 epochs; same seed, so only the steps differ.
    sharp = ExpertConfig(**{**TINY.__dict__, "sam_rho": 0.5, "sam_alpha": 0.3, "sam_adaptive": True})
    flat_tr = get_experts(blobs, sharp, seed=0, num_classes=4, cache_dir=tmp_path)
    plain_tr = get_experts(blobs, TINY, seed=0, num_classes=4, cache=False)
    assert torch.equal(flat_tr.params(0, 0), plain_tr.params(0, 0))
    assert torch.isfinite(flat_tr.trajectory(0)).all()
    assert not torch.allclose(flat_tr.params(0, -1), plain_tr.params(0, -1), atol=1e-4)
    manifest = json.loads((flat_tr.directory / "manifest.json").read_text())
    assert manifest["config"]["sam_rho"] == 0.5


def test_each_expert_file_is_hashed_once_per_process_until_it_changes(blobs, tmp_path, monkeypatch):
    tr = get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    monkeypatch.setattr(ex.cache, "_VERIFIED", set())  # as a fresh process
    digests = []
    real = ex._digest
    monkeypatch.setattr(ex.cache, "_digest", lambda t, meta: digests.append(1) or real(t, meta))
    _forbid_training(monkeypatch)
    get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert len(digests) == 2
    get_experts(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    expert_status(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert len(digests) == 2  # unchanged files: header checks only
    path = tr.directory / "expert_0001.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, new content: read and hashed again, and refused
    path.write_bytes(bytes(data))
    status = expert_status(blobs, TINY, seed=0, num_classes=4, cache_dir=tmp_path)
    assert len(digests) == 3 and status.invalid == [1]
