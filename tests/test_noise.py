"""Tests for ddlnl.noise: matrices, sampling, realized statistics, dispatch, persistence.

Convention checked throughout: ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import ddlnl.data as data_module
from ddlnl import noise
from ddlnl.data import Dataset, LabeledTensors
from ddlnl.errors import DataError, UserError
from ddlnl.noise import (
    NoiseSpec,
    NoisyLabels,
    apply_transition,
    asymmetric_map,
    asymmetric_matrix,
    instance_dependent_labels,
    load_noisy_labels,
    make_noise,
    pairflip_matrix,
    parse_noise_spec,
    realized_noise_rate,
    realized_transition,
    summary_text,
    symmetric_matrix,
    truncated_normal_mean,
)

MAP_DATASETS = ("cifar10", "fashion-mnist", "mnist", "digits")


def _fine_to_coarse() -> tuple[int, ...]:
    """The official CIFAR-100 table from ddlnl.data, or skip while it does not exist yet."""
    table = getattr(data_module, "CIFAR100_FINE_TO_COARSE", None)
    if table is None:
        pytest.skip("ddlnl.data.CIFAR100_FINE_TO_COARSE is not defined yet")
    return tuple(table)


def make_dataset(
    name: str = "toy", num_classes: int = 10, size: int = 20000, seed: int = 0,
    shape: tuple[int, int, int] = (1, 4, 4),
) -> Dataset:
    """A hand-built dataset with balanced random labels and random images."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(size, dtype=torch.int64) % num_classes
    labels = labels[torch.randperm(size, generator=gen)]
    images = torch.randn(size, *shape, generator=gen)
    split = LabeledTensors(images, labels)
    test = LabeledTensors(images[:10], labels[:10])
    return Dataset(
        name=name,
        train=split,
        test=test,
        classes=tuple(f"class{i}" for i in range(num_classes)),
        mean=(0.0,) * shape[0],
        std=(1.0,) * shape[0],
    )


def binomial_tolerance(p: float, n: int, sigmas: float = 4.0) -> float:
    """``sigmas`` standard deviations of a mean of ``n`` Bernoulli(p) draws (floored for p ~ 0)."""
    return sigmas * math.sqrt(max(p * (1 - p), 1e-4) / n)


def assert_one_line_user_error(excinfo: pytest.ExceptionInfo[UserError]) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message


# ---------------------------------------------------------------------------- matrices


def all_matrices() -> list[tuple[str, np.ndarray]]:
    out = []
    for rate in (0.0, 0.2, 0.45):
        out.append((f"sym-{rate}", symmetric_matrix(10, rate)))
        out.append((f"incl-{rate}", symmetric_matrix(10, rate, inclusive=True)))
        out.append((f"pair-{rate}", pairflip_matrix(10, rate)))
        for name in MAP_DATASETS:
            out.append((f"asym-{name}-{rate}", asymmetric_matrix(name, 10, rate)))
    out.append(("sym-0.85", symmetric_matrix(10, 0.85)))
    out.append(("incl-0.95", symmetric_matrix(10, 0.95, inclusive=True)))
    out.append(("sym-k2", symmetric_matrix(2, 0.49)))
    return out


@pytest.mark.parametrize(
    "name,matrix", all_matrices(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_matrix_rows_sum_to_one(name: str, matrix: np.ndarray) -> None:
    assert matrix.dtype == np.float64
    assert matrix.shape == (10, 10) or name == "sym-k2"
    assert np.all(matrix >= 0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    # the clean class stays the most likely label in every row (identifiability)
    assert np.all(np.argmax(matrix, axis=1) == np.arange(matrix.shape[0]))


def test_cifar100_matrix_rows_sum_to_one() -> None:
    _fine_to_coarse()
    matrix = asymmetric_matrix("cifar100", 100, 0.4)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    assert np.allclose(np.diag(matrix), 0.6)


def test_symmetric_matrix_values() -> None:
    excl = symmetric_matrix(5, 0.4)
    assert np.allclose(np.diag(excl), 0.6)
    assert np.allclose(excl[~np.eye(5, dtype=bool)], 0.1)
    incl = symmetric_matrix(5, 0.4, inclusive=True)
    assert np.allclose(np.diag(incl), 0.6 + 0.08)
    assert np.allclose(incl[~np.eye(5, dtype=bool)], 0.08)


def test_pairflip_matrix_values() -> None:
    matrix = pairflip_matrix(4, 0.3)
    for i in range(4):
        assert matrix[i, i] == pytest.approx(0.7)
        assert matrix[i, (i + 1) % 4] == pytest.approx(0.3)


def test_asymmetric_maps_are_the_published_ones() -> None:
    assert asymmetric_map("cifar10", 10) == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    assert asymmetric_map("fashion-mnist", 10) == {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}
    assert asymmetric_map("mnist", 10) == asymmetric_map("digits", 10) == {
        7: 1, 2: 7, 5: 6, 6: 5, 3: 8
    }


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("k", [2, 10, 100])
def test_symmetric_refuses_non_identifiable_rate(k: int) -> None:
    limit = (k - 1) / k
    with pytest.raises(UserError, match="identifiable") as excinfo:
        symmetric_matrix(k, limit)
    assert_one_line_user_error(excinfo)
    assert f"{limit:.6g}" in str(excinfo.value)
    with pytest.raises(UserError):
        symmetric_matrix(k, min(limit + 0.05, 0.999))
    symmetric_matrix(k, limit - 1e-3)  # just below is fine
    symmetric_matrix(k, limit, inclusive=True)  # the inclusive range goes up to 1


@pytest.mark.parametrize(
    "build",
    [
        lambda: symmetric_matrix(10, -0.1),
        lambda: symmetric_matrix(10, -0.1, inclusive=True),
        lambda: symmetric_matrix(10, 1.0, inclusive=True),
        lambda: pairflip_matrix(10, -0.01),
        lambda: pairflip_matrix(10, 0.5),
        lambda: asymmetric_matrix("cifar10", 10, 1.0),
        lambda: asymmetric_matrix("cifar10", 10, -0.2),
        lambda: asymmetric_matrix("svhn", 10, 0.2),
        lambda: asymmetric_matrix("cifar10", 100, 0.2),
        lambda: NoiseSpec("symmetric", -0.2),
        lambda: NoiseSpec("gaussian", 0.2),
        lambda: NoiseSpec("none", 0.2),
        lambda: NoiseSpec("natural"),
        lambda: NoiseSpec("file"),
        lambda: instance_dependent_labels(torch.zeros(4, 2), np.zeros(4, np.int64), 1.0, 0, 2),
        lambda: parse_noise_spec("gaussian:0.2"),
        lambda: parse_noise_spec("symmetric:abc"),
        lambda: parse_noise_spec("symmetric:60"),
        lambda: parse_noise_spec("symmetric"),
        lambda: parse_noise_spec("natural"),
        lambda: parse_noise_spec(""),
    ],
)
def test_refusals_are_one_line_user_errors(build) -> None:
    with pytest.raises(UserError) as excinfo:
        build()
    assert_one_line_user_error(excinfo)


def test_refusal_messages_name_the_problem() -> None:
    with pytest.raises(UserError, match="no asymmetric map for svhn; use symmetric or pairflip"):
        asymmetric_matrix("svhn", 10, 0.2)
    with pytest.raises(UserError, match="rate must be < 1"):
        asymmetric_matrix("cifar10", 10, 1.0)
    with pytest.raises(UserError, match="unknown noise kind"):
        parse_noise_spec("gaussian:0.2")
    with pytest.raises(UserError, match=">= 0"):
        NoiseSpec("symmetric", -0.2)
    with pytest.raises(UserError, match="no asymmetric map for toy"):
        make_noise(NoiseSpec("asymmetric", 0.2), make_dataset(size=100), seed=0)
    with pytest.raises(UserError, match="identifiable"):
        make_noise(NoiseSpec("symmetric", 0.5), make_dataset(num_classes=2, size=100), seed=0)


def test_apply_transition_validates_matrix() -> None:
    labels = np.array([0, 1, 2], dtype=np.int64)
    bad = {
        "not square": np.ones((3, 2)) / 2,
        "negative": np.array([[1.5, -0.5, 0], [0, 1, 0], [0, 0, 1]]),
        "row sum": np.array([[0.9, 0, 0], [0, 1, 0], [0, 0, 1]]),
        "too small": np.eye(2),
    }
    for what, matrix in bad.items():
        with pytest.raises(UserError) as excinfo:
            apply_transition(labels, matrix, seed=0)
        assert_one_line_user_error(excinfo)
    # within tolerance is accepted
    apply_transition(labels, np.eye(3) * (1 + 1e-8), seed=0)


# ---------------------------------------------------------------------------- sampling


def test_apply_transition_matches_matrix_empirically() -> None:
    k, n = 5, 200_000
    rng = np.random.default_rng(1)
    matrix = rng.dirichlet(np.ones(k), size=k)
    matrix[2] = [0.0, 0.0, 1.0, 0.0, 0.0]  # degenerate row: exact
    matrix[3] = [0.0, 0.5, 0.0, 0.5, 0.0]  # zero mass on both ends
    clean = rng.integers(0, k, n)
    noisy = apply_transition(torch.from_numpy(clean), matrix, seed=3)
    assert noisy.dtype == np.int64 and noisy.shape == (n,)
    empirical = realized_transition(clean, noisy, k)
    counts = np.bincount(clean, minlength=k)[:, None]
    tolerance = 4 * np.sqrt(matrix * (1 - matrix) / counts) + 1e-12
    assert np.all(np.abs(empirical - matrix) <= tolerance)
    assert np.all(empirical[matrix == 0] == 0)  # impossible flips never happen


@pytest.mark.parametrize(
    "spec",
    [
        NoiseSpec("symmetric", 0.6),
        NoiseSpec("symmetric", 0.2),
        NoiseSpec("symmetric-inclusive", 0.6),
        NoiseSpec("pairflip", 0.45),
        NoiseSpec("asymmetric", 0.4),
    ],
    ids=lambda s: s.label(),
)
def test_realized_rate_within_binomial_tolerance(spec: NoiseSpec) -> None:
    dataset = make_dataset("cifar10", 10, 20000)
    result = make_noise(spec, dataset, seed=5)
    expected = result.expected_rate
    assert expected is not None
    if spec.kind == "symmetric":
        assert expected == pytest.approx(spec.rate)
    elif spec.kind == "symmetric-inclusive":
        assert expected == pytest.approx(spec.rate * 9 / 10)
    elif spec.kind == "asymmetric":
        assert expected == pytest.approx(spec.rate / 2, rel=0.02)  # 5 of 10 classes mapped
    n = len(dataset.train)
    assert abs(result.realized_rate - expected) <= binomial_tolerance(expected, n)
    assert result.realized_rate == pytest.approx(float(result.is_noisy.float().mean()))
    assert result.transition_true is not None
    np.testing.assert_allclose(result.transition_true.sum(axis=1), 1.0)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_instance_noise_rate(rate: float) -> None:
    dataset = make_dataset("toy", 10, 20000, shape=(3, 4, 4))
    result = make_noise(NoiseSpec("instance", rate), dataset, seed=2)
    expected = truncated_normal_mean(rate, 0.1)
    assert expected == pytest.approx(rate, abs=1e-2)  # truncation at 0 shifts it a little
    assert result.transition_true is None and result.expected_rate is None
    assert abs(result.realized_rate - expected) <= binomial_tolerance(expected, len(dataset.train))


def test_instance_noise_depends_on_the_image() -> None:
    # every sample shows one of two fixed images, whatever its class: within a class the flip
    # targets must follow softmax(x @ W_y), which differs between the two images
    size, k = 20000, 10
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.randn(2, 3, 4, 4, generator=gen)
    which = torch.arange(size) % 2
    labels = (torch.arange(size) // 2) % k
    images = prototypes[which]
    noisy = instance_dependent_labels(images, labels, 0.4, seed=1, num_classes=k)
    distances = []
    for cls in range(k):
        targets = []
        for image in (0, 1):
            mask = ((labels == cls) & (which == image)).numpy() & (noisy != labels.numpy())
            targets.append(np.bincount(noisy[mask], minlength=k) / mask.sum())
        distances.append(0.5 * np.abs(targets[0] - targets[1]).sum())
    # sampling noise alone gives a total variation of about 0.05 here
    assert np.mean(distances) > 0.2


def test_truncated_normal_mean_accounts_for_truncation() -> None:
    assert truncated_normal_mean(0.0, 0.1) == pytest.approx(0.1 * math.sqrt(2 / math.pi))
    assert truncated_normal_mean(0.05, 0.1) == pytest.approx(0.1009, abs=1e-4)
    assert truncated_normal_mean(0.5, 0.1) == pytest.approx(0.5)
    draws = np.random.default_rng(0).normal(0.05, 0.1, 400_000)
    draws = draws[(draws >= 0) & (draws <= 1)]
    assert truncated_normal_mean(0.05, 0.1) == pytest.approx(draws.mean(), abs=1e-3)


ALL_SPECS = [
    NoiseSpec("symmetric", 0.4),
    NoiseSpec("symmetric-inclusive", 0.4),
    NoiseSpec("pairflip", 0.3),
    NoiseSpec("asymmetric", 0.4),
    NoiseSpec("instance", 0.4),
]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.label())
def test_same_seed_same_labels_different_seed_different(spec: NoiseSpec) -> None:
    dataset = make_dataset("cifar10", 10, 3000)
    first = make_noise(spec, dataset, seed=11)
    again = make_noise(spec, dataset, seed=11)
    other = make_noise(spec, dataset, seed=12)
    assert torch.equal(first.noisy, again.noisy)
    assert np.array_equal(first.realized_T, again.realized_T)
    assert not torch.equal(first.noisy, other.noisy)
    assert torch.equal(first.clean, dataset.train.labels)  # the dataset is not modified


@pytest.mark.parametrize(
    "spec",
    [NoiseSpec("none")] + [NoiseSpec(s.kind, 0.0) for s in ALL_SPECS],
    ids=lambda s: s.kind,
)
def test_rate_zero_changes_nothing(spec: NoiseSpec) -> None:
    dataset = make_dataset("cifar10", 10, 2000)
    result = make_noise(spec, dataset, seed=4)
    assert torch.equal(result.noisy, dataset.train.labels)
    assert result.realized_rate == 0.0
    assert not result.is_noisy.any()
    assert np.array_equal(result.realized_T, np.eye(10))
    assert result.flips() == []
    if result.expected_rate is not None:
        assert result.expected_rate == 0.0


@pytest.mark.parametrize("name", MAP_DATASETS)
def test_asymmetric_flips_only_mapped_pairs(name: str) -> None:
    dataset = make_dataset(name, 10, 20000)
    rate = 0.3
    result = make_noise(NoiseSpec("asymmetric", rate), dataset, seed=9)
    mapping = asymmetric_map(name, 10)
    clean, noisy = result.clean.numpy(), result.noisy.numpy()
    changed = clean != noisy
    assert changed.any()
    for true, new in zip(clean[changed], noisy[changed]):
        assert mapping[int(true)] == int(new)
    # every source flips at about `rate`, every other class never
    for cls in range(10):
        in_class = clean == cls
        fraction = float(changed[in_class].mean())
        if cls in mapping:
            assert abs(fraction - rate) <= binomial_tolerance(rate, int(in_class.sum()))
        else:
            assert fraction == 0.0


def test_cifar100_asymmetric_stays_in_superclass_as_one_cycle() -> None:
    fine_to_coarse = _fine_to_coarse()
    assert len(fine_to_coarse) == 100 and sorted(set(fine_to_coarse)) == list(range(20))
    mapping = asymmetric_map("cifar100", 100)
    assert sorted(mapping) == list(range(100))
    for source, target in mapping.items():
        assert source != target and fine_to_coarse[source] == fine_to_coarse[target]
    for coarse in range(20):
        members = [f for f in range(100) if fine_to_coarse[f] == coarse]
        cycle, current = [], members[0]
        for _ in members:
            cycle.append(current)
            current = mapping[current]
        assert current == members[0] and sorted(cycle) == members  # one cycle through all
    dataset = make_dataset("cifar100", 100, 20000)
    result = make_noise(NoiseSpec("asymmetric", 0.4), dataset, seed=1)
    clean, noisy = result.clean.numpy(), result.noisy.numpy()
    changed = clean != noisy
    coarse = np.asarray(fine_to_coarse)
    assert np.array_equal(coarse[clean], coarse[noisy])
    assert all(mapping[int(a)] == int(b) for a, b in zip(clean[changed], noisy[changed]))
    assert abs(result.realized_rate - 0.4) <= binomial_tolerance(0.4, len(clean))


def test_next_within_group_is_cyclic_in_ascending_order() -> None:
    # groups {0, 2, 5}, {1, 3}, {4}: 0->2->5->0, 1->3->1, 4 unmapped
    assert noise._next_within_group([0, 1, 0, 1, 2, 0]) == {0: 2, 2: 5, 5: 0, 1: 3, 3: 1}


# ---------------------------------------------------------------------------- statistics


def test_realized_transition_rows_are_empirical_conditionals() -> None:
    rng = np.random.default_rng(0)
    k = 6
    clean = rng.integers(0, k - 1, 5000)  # class k-1 never occurs
    noisy = rng.integers(0, k, 5000)
    matrix = realized_transition(clean, noisy, k)
    for i in range(k - 1):
        expected = np.bincount(noisy[clean == i], minlength=k) / np.sum(clean == i)
        np.testing.assert_allclose(matrix[i], expected)
    np.testing.assert_allclose(matrix[: k - 1].sum(axis=1), 1.0)
    assert np.all(matrix[k - 1] == 0)  # documented: absent classes have zero rows
    assert realized_noise_rate(clean, noisy) == pytest.approx(np.mean(clean != noisy))
    with pytest.raises(DataError):
        realized_noise_rate(clean, noisy[:-1])


def test_flips_and_summary_text() -> None:
    clean = np.array([0] * 10 + [1] * 10 + [2] * 10, dtype=np.int64)
    noisy = clean.copy()
    noisy[:4] = 1  # 0 -> 1 four times
    noisy[10:12] = 2  # 1 -> 2 twice
    noisy[20] = 0  # 2 -> 0 once
    result = NoisyLabels(
        noisy=torch.from_numpy(noisy),
        clean=torch.from_numpy(clean),
        spec=NoiseSpec("symmetric", 0.2),
        seed=0,
        transition_true=symmetric_matrix(3, 0.2),
        realized_rate=realized_noise_rate(clean, noisy),
        realized_T=realized_transition(clean, noisy, 3),
        dataset="toy",
    )
    assert result.flips() == [(0, 1, 4), (1, 2, 2), (2, 0, 1)]
    assert result.flips(top=1) == [(0, 1, 4)]
    assert result.expected_rate == pytest.approx(0.2)
    text = summary_text(result, ["cat", "dog", "frog"])
    assert "symmetric-0.2" in text and "0.2333" in text and "0.2000" in text
    assert "cat -> dog: 4" in text and "frog -> cat: 1" in text
    assert len(text.splitlines()) <= 8


# ---------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "text,expected,label",
    [
        ("symmetric:0.6", NoiseSpec("symmetric", 0.6), "symmetric-0.6"),
        ("sym:0.2", NoiseSpec("symmetric", 0.2), "symmetric-0.2"),
        ("symmetric-inclusive:0.2", NoiseSpec("symmetric-inclusive", 0.2),
         "symmetric-inclusive-0.2"),
        ("asym:0.4", NoiseSpec("asymmetric", 0.4), "asymmetric-0.4"),
        ("pairflip:0.2", NoiseSpec("pairflip", 0.2), "pairflip-0.2"),
        ("instance:0.4", NoiseSpec("instance", 0.4), "instance-0.4"),
        ("none", NoiseSpec("none"), "none"),
        ("natural:aggre", NoiseSpec("natural", variant="aggre"), "natural-aggre"),
        ("natural:worst:/d/CIFAR-10_human.pt",
         NoiseSpec("natural", variant="worst", path="/d/CIFAR-10_human.pt"), "natural-worst"),
        ("file:/tmp/labels.npz", NoiseSpec("file", path="/tmp/labels.npz"), "file-labels"),
    ],
)
def test_parse_and_label(text: str, expected: NoiseSpec, label: str) -> None:
    spec = parse_noise_spec(text)
    assert spec == expected
    assert spec.label() == label
    assert NoiseSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_spec_from_dict_refuses_unknown_key() -> None:
    with pytest.raises(UserError, match="ratio"):
        NoiseSpec.from_dict({"kind": "symmetric", "ratio": 0.2})


# ---------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path: Path) -> None:
    dataset = make_dataset("cifar10", 10, 1000)
    result = make_noise(NoiseSpec("asymmetric", 0.4), dataset, seed=3)
    path = result.save(tmp_path / "sub" / "labels.npz")
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["labels.npz"]  # no temp file left
    loaded = load_noisy_labels(path)
    assert torch.equal(loaded.noisy, result.noisy) and torch.equal(loaded.clean, result.clean)
    assert loaded.noisy.dtype == torch.int64
    assert loaded.spec == result.spec and loaded.seed == result.seed
    assert loaded.dataset == "cifar10"
    assert loaded.realized_rate == result.realized_rate
    assert np.array_equal(loaded.realized_T, result.realized_T)
    assert np.array_equal(loaded.transition_true, result.transition_true)
    assert loaded.expected_rate == pytest.approx(result.expected_rate)
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["dataset"] == "cifar10" and summary["train_size"] == 1000
    assert summary["expected_rate"] == pytest.approx(result.expected_rate)
    # overwriting in place works too
    result.save(path)
    assert torch.equal(load_noisy_labels(path).noisy, result.noisy)


def test_file_kind_reads_saved_and_plain_files(tmp_path: Path) -> None:
    dataset = make_dataset("cifar10", 10, 500)
    made = make_noise(NoiseSpec("symmetric", 0.4), dataset, seed=1)
    saved = made.save(tmp_path / "made.npz")
    noisy = made.noisy.numpy()
    np.save(tmp_path / "plain.npy", noisy)
    np.savez(tmp_path / "plain.npz", labels=noisy)
    (tmp_path / "plain.csv").write_text("label\n" + "\n".join(map(str, noisy)) + "\n")
    for path in (saved, tmp_path / "plain.npy", tmp_path / "plain.npz", tmp_path / "plain.csv"):
        result = make_noise(NoiseSpec("file", path=str(path)), dataset, seed=0)
        assert torch.equal(result.noisy, made.noisy), path
        assert result.realized_rate == made.realized_rate
        assert result.transition_true is None


def test_file_kind_refusals(tmp_path: Path) -> None:
    dataset = make_dataset("cifar10", 10, 500)
    made = make_noise(NoiseSpec("symmetric", 0.4), dataset, seed=1)
    np.save(tmp_path / "short.npy", made.noisy.numpy()[:-1])
    np.save(tmp_path / "range.npy", made.noisy.numpy() + 5)
    other = make_dataset("fashion-mnist", 10, 500)
    make_noise(NoiseSpec("symmetric", 0.4), other, seed=1).save(tmp_path / "other.npz")
    shuffled = make_dataset("cifar10", 10, 500, seed=7)
    make_noise(NoiseSpec("symmetric", 0.4), shuffled, seed=1).save(tmp_path / "order.npz")
    cases = {
        "short.npy": "499 labels",
        "range.npy": r"\[0, 9\]",
        "other.npz": "made for fashion-mnist",
        "order.npz": "clean labels differ",
        "missing.npy": "does not exist",
    }
    for name, pattern in cases.items():
        with pytest.raises(UserError, match=pattern) as excinfo:
            make_noise(NoiseSpec("file", path=str(tmp_path / name)), dataset, seed=0)
        assert_one_line_user_error(excinfo)


# ---------------------------------------------------------------------------- natural


def test_natural_labels_via_load_cifar_n(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = make_dataset("cifar10", 10, 200)
    clean = dataset.train.labels.numpy()
    aggre = (clean + 1) % 10
    aggre[::2] = clean[::2]
    calls = []

    def fake_load_cifar_n(path: str, ds: Dataset) -> dict[str, np.ndarray]:
        calls.append((path, ds.name))
        return {"aggre": aggre, "worst": (clean + 3) % 10, "noisy-coarse": clean % 2}

    monkeypatch.setattr(data_module, "load_cifar_n", fake_load_cifar_n, raising=False)
    result = make_noise(parse_noise_spec("natural:aggre:c10n.pt"), dataset, seed=0)
    assert calls == [("c10n.pt", "cifar10")]
    assert np.array_equal(result.noisy.numpy(), aggre)
    assert result.realized_rate == pytest.approx(0.5)
    assert result.transition_true is None and result.spec.label() == "natural-aggre"
    with pytest.raises(UserError, match="available: aggre, noisy-coarse, worst") as excinfo:
        make_noise(parse_noise_spec("natural:random1:c10n.pt"), dataset, seed=0)
    assert_one_line_user_error(excinfo)
    with pytest.raises(UserError, match="superclass labels"):
        make_noise(parse_noise_spec("natural:noisy-coarse:c10n.pt"), dataset, seed=0)
    with pytest.raises(UserError, match="CIFAR-N"):
        make_noise(parse_noise_spec("natural:aggre"), dataset, seed=0)


def test_natural_labels_with_real_loader(tmp_path: Path) -> None:
    """End to end through ddlnl.data.load_cifar_n with a small file in the CIFAR-N format."""
    dataset = make_dataset("cifar10", 10, 300)
    clean = dataset.train.labels.numpy()
    content = {"clean_label": clean, "aggre_label": (clean + 1) % 10,
               "worse_label": (clean + 2) % 10}
    content.update({f"random_label{i}": clean.copy() for i in (1, 2, 3)})
    torch.save(content, tmp_path / "CIFAR-10_human.pt")
    spec = parse_noise_spec(f"natural:worst:{tmp_path / 'CIFAR-10_human.pt'}")
    result = make_noise(spec, dataset, seed=0)
    assert np.array_equal(result.noisy.numpy(), (clean + 2) % 10)
    assert result.realized_rate == 1.0


@pytest.mark.parametrize("rate", [0.5, 0.6, 0.8])
def test_asymmetric_rates_from_half_are_accepted_with_a_one_line_warning(rate, caplog) -> None:
    # The study's configurations use asymmetric rates >= 0.5: they are built, with a warning that
    # the mapped classes' clean label is no longer their majority label.
    with caplog.at_level("WARNING", logger="ddlnl.noise"):
        matrix = asymmetric_matrix("cifar10", 10, rate)
    assert matrix[9, 1] == pytest.approx(rate) and matrix[9, 9] == pytest.approx(1 - rate)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "no longer the majority" in messages[0] and "5 mapped classes" in messages[0]
    result = make_noise(NoiseSpec("asymmetric", rate), make_dataset("cifar10", 10, 20000), seed=3)
    assert abs(result.realized_rate - rate / 2) <= binomial_tolerance(rate / 2, 20000)


def test_asymmetric_rates_below_half_do_not_warn(caplog) -> None:
    with caplog.at_level("WARNING", logger="ddlnl.noise"):
        asymmetric_matrix("cifar10", 10, 0.4)
    assert not caplog.records


def _pixel_dataset(size: int = 400, k: int = 10, shape=(3, 8, 8)) -> tuple[Dataset, torch.Tensor]:
    """Random 0..255 pixel images, stored normalised as a loader would (train mean/std per channel)."""
    gen = torch.Generator().manual_seed(5)
    pixels = torch.randint(0, 256, (size, *shape), generator=gen).float()
    labels = torch.arange(size) % k
    mean = (pixels / 255).mean(dim=(0, 2, 3))
    std = (pixels / 255).std(dim=(0, 2, 3))
    normalised = (pixels / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    split = LabeledTensors(normalised, labels)
    ds = Dataset(name="toy", train=split, test=split, classes=tuple(str(i) for i in range(k)),
                 mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    return ds, pixels


def test_instance_noise_scores_raw_pixels_so_one_wrong_class_takes_the_flip_mass() -> None:
    # Xia et al. (tools.get_instance_noisy_label) multiply the raw 0..255 pixels by a standard-
    # normal W: the scores are far apart and the softmax over the wrong classes is nearly one-hot.
    from ddlnl.noise import instance_flip_probabilities

    ds, pixels = _pixel_dataset()
    labels = ds.train.labels
    probs = instance_flip_probabilities(pixels, labels, 0.4, seed=1, num_classes=10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    flip = 1.0 - probs[np.arange(len(labels)), labels.numpy()]
    wrong = probs.copy()
    wrong[np.arange(len(labels)), labels.numpy()] = 0.0
    share = wrong.max(axis=1) / flip
    assert np.median(share) > 0.99 and share.mean() > 0.95
    # make_noise de-normalises the stored images back to those pixels: same labels.
    noisy = make_noise(NoiseSpec("instance", 0.4), ds, seed=1).noisy.numpy()
    direct = instance_dependent_labels(pixels, labels, 0.4, seed=1, num_classes=10)
    np.testing.assert_array_equal(noisy, direct)
    assert 0.25 < float((noisy != labels.numpy()).mean()) < 0.55


def test_instance_noise_on_unit_length_images_would_spread_the_flip_mass() -> None:
    # The property above is the pixel scale's: the same images scaled to unit length (what ddlnl
    # did before) give a flat softmax where the top wrong class gets well under half of the mass.
    from ddlnl.noise import instance_flip_probabilities

    ds, pixels = _pixel_dataset()
    labels = ds.train.labels
    flat = pixels.reshape(len(pixels), -1)
    unit = (flat / flat.norm(dim=1, keepdim=True)).reshape(pixels.shape)
    probs = instance_flip_probabilities(unit, labels, 0.4, seed=1, num_classes=10)
    wrong = probs.copy()
    wrong[np.arange(len(labels)), labels.numpy()] = 0.0
    share = wrong.max(axis=1) / wrong.sum(axis=1)
    assert share.mean() < 0.6
