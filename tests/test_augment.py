"""Invariants of DSA and ZCA (ddlnl.augment): differentiability, siamese sharing, reproducibility,
exact geometry of the ops, and the whitening algebra."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from ddlnl.augment import (
    DSA,
    OP_PARAM_KEYS,
    STRATEGY_TOKENS,
    AugmentationDraw,
    DSAParams,
    ZCA,
    fit_zca,
)
from ddlnl.errors import ConfigError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(
    n: int = 4, c: int = 3, size: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard-normal images ``n x c x size x size``."""
    return torch.randn(n, c, size, size, generator=gen(seed), dtype=dtype)


def draw(ops: tuple[str, ...], batch_size: int | None = None, **values) -> AugmentationDraw:
    """A hand-made draw; each value is broadcast to the draw's parameter length."""
    length = 1 if batch_size is None else batch_size
    params = {k: torch.as_tensor(v).reshape(-1).expand(length).clone() for k, v in values.items()}
    return AugmentationDraw(ops, params, batch_size)


# ---------------------------------------------------------------- configuration


def test_published_defaults() -> None:
    p = DSAParams()
    assert (p.prob_flip, p.ratio_scale, p.ratio_rotate, p.ratio_crop_pad) == (0.5, 1.2, 15.0, 0.125)
    assert (p.ratio_cutout, p.brightness, p.saturation, p.contrast) == (0.5, 1.0, 2.0, 0.5)
    dsa = DSA()
    assert dsa.strategy == DEFAULT_STRATEGY and dsa.mode == "single"


@pytest.mark.parametrize(
    "bad", [dict(prob_flip=1.5), dict(ratio_scale=0.9), dict(ratio_cutout=-0.1)]
)
def test_invalid_params_raise(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        DSAParams(**bad)


def test_invalid_strategy_and_mode_raise() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        DSA("color_bogus")
    with pytest.raises(ConfigError, match="mode"):
        DSA(mode="S")


def test_none_strategy_is_identity() -> None:
    x = images()
    assert torch.equal(DSA("none")(x, gen(0)), x)


# ---------------------------------------------------------------- differentiability


@pytest.mark.parametrize("strategy", sorted(STRATEGY_TOKENS) + [DEFAULT_STRATEGY])
@pytest.mark.parametrize("siamese", [False, True])
def test_differentiable(strategy: str, siamese: bool) -> None:
    dsa = DSA(strategy, mode="all")
    x = images(seed=1).requires_grad_()
    out = dsa(x, gen(3), siamese=siamese)
    (out * torch.randn(out.shape, generator=gen(4))).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_single_mode_differentiable_for_every_choice() -> None:
    dsa = DSA()  # single mode: a different token per seed
    for seed in range(20):
        x = images(seed=seed).requires_grad_()
        dsa(x, gen(seed)).square().sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- siamese / randomness


@pytest.mark.parametrize("strategy", sorted(STRATEGY_TOKENS) + [DEFAULT_STRATEGY])
def test_siamese_draw_identical_for_identical_images(strategy: str) -> None:
    dsa = DSA(strategy, mode="all")
    real = images(n=9, seed=5)
    syn = images(n=3, seed=6)
    syn[2] = real[0]
    shared = dsa.sample(999, gen(7), siamese=True)  # n is irrelevant for a siamese draw
    out_real, out_syn = dsa.apply(real, shared), dsa.apply(syn, shared)
    torch.testing.assert_close(out_real[0], out_syn[2], rtol=0, atol=1e-6)


def test_siamese_draw_is_one_parameter_set() -> None:
    d = DSA(mode="all").sample(5, gen(0), siamese=True)
    assert d.siamese and d.batch_size is None
    assert all(v.shape == (1,) for v in d.params.values())


def test_same_seed_same_output_different_seed_differs() -> None:
    x = images(n=6)
    for mode in ("single", "all"):
        dsa = DSA(mode=mode)
        assert torch.equal(dsa(x, gen(11)), dsa(x, gen(11)))
    dsa = DSA(mode="all")  # every op applied, so two seeds cannot coincide
    assert not torch.allclose(dsa(x, gen(11)), dsa(x, gen(12)))


def test_per_sample_draw_on_wrong_batch_size_raises() -> None:
    dsa = DSA(mode="all")
    d = dsa.sample(4, gen(0))
    assert d.batch_size == 4 and all(v.shape == (4,) for v in d.params.values())
    with pytest.raises(ValueError, match="batch"):
        dsa.apply(images(n=5), d)
    dsa.apply(images(n=4), d)  # the right size is fine


def test_per_sample_draw_varies_across_samples() -> None:
    d = DSA("rotate").sample(8, gen(0))
    assert d.params["rotate_degrees"].unique().numel() == 8


def test_single_mode_picks_one_token_per_call() -> None:
    dsa = DSA()
    seen = set()
    for seed in range(60):
        ops = dsa.sample(4, gen(seed)).ops
        seen.update(t for t in dsa.tokens if STRATEGY_TOKENS[t] == ops)
    assert seen == set(DEFAULT_STRATEGY.split("_"))


def test_draw_validation() -> None:
    with pytest.raises(ValueError, match="missing"):
        AugmentationDraw(("scale",), {"scale_x": torch.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        AugmentationDraw(("rotate",), {"rotate_degrees": torch.zeros(3)}, batch_size=2)


def test_sample_requires_cpu_generator() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA to build a non-CPU generator")
    with pytest.raises(ValueError, match="CPU"):
        DSA().sample(2, torch.Generator(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_draw_on_cpu_and_cuda() -> None:
    dsa = DSA(mode="all")
    x = images(n=5, seed=2)
    cpu = dsa(x, gen(9))
    cuda = dsa(x.cuda(), gen(9))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- exact geometry of the ops


def test_flip_is_exact() -> None:
    x = images(n=3)
    dsa = DSA("flip")
    out = dsa.apply(x, draw(("flip",), batch_size=None, flip=True))
    assert torch.equal(out, torch.flip(x, dims=[3]))
    mixed = AugmentationDraw(("flip",), {"flip": torch.tensor([True, False, True])}, 3)
    out = dsa.apply(x, mixed)
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[2], x[2].flip(2))
    assert torch.equal(out[1], x[1])


def test_flip_probability_close_to_half() -> None:
    flips = DSA("flip").sample(4000, gen(0)).params["flip"].float().mean().item()
    assert abs(flips - 0.5) < 0.05


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("channels", [1, 3])
def test_neutral_parameters_are_identity(size: int, channels: int) -> None:
    x = images(n=2, c=channels, size=size)
    dsa = DSA()
    neutral = [
        draw(("scale",), scale_x=1.0, scale_y=1.0),
        draw(("rotate",), rotate_degrees=0.0),
        draw(("crop",), crop_quantile_h=0.5, crop_quantile_w=0.5),  # u=0.5 -> shift 0
        draw(("flip",), flip=False),
        draw(("brightness",), brightness_shift=0.0),
        draw(("saturation",), saturation_factor=1.0),
        draw(("contrast",), contrast_factor=1.0),
    ]
    for d in neutral:
        torch.testing.assert_close(dsa.apply(x, d), x, rtol=0, atol=1e-5, msg=str(d.ops))


def test_translation_is_an_integer_shift_with_zero_fill() -> None:
    x = images(n=1, size=8)
    dsa = DSA("crop")  # ratio_crop_pad 0.125 on side 8 -> shifts in {-1, 0, 1}
    out = dsa.apply(x, draw(("crop",), crop_quantile_h=0.0, crop_quantile_w=0.99))  # shift -1, +1
    expected = torch.zeros_like(x)
    expected[:, :, 1:, :-1] = x[:, :, :-1, 1:]
    assert torch.equal(out, expected)


def test_crop_shift_distribution_covers_reference_range() -> None:
    # side 32, ratio 0.125 -> reference shifts are uniform integers in [-4, 4]
    x = torch.zeros(2000, 1, 32, 32)
    x[:, :, 16, 16] = 1.0
    out = DSA("crop").apply(x, DSA("crop").sample(2000, gen(1)))
    rows = out[:, 0].sum(dim=2).argmax(dim=1) - 16
    assert set(rows.tolist()) == set(range(-4, 5))


def test_cutout_zeroes_a_square_of_half_the_side() -> None:
    x = torch.ones(1, 3, 8, 8)
    dsa = DSA("cutout")  # side 8, ratio 0.5 -> 4 x 4; u=0.5 -> centre 4 -> rows/cols 2..5
    out = dsa.apply(x, draw(("cutout",), cutout_quantile_h=0.5, cutout_quantile_w=0.5))
    expected = torch.ones_like(x)
    expected[:, :, 2:6, 2:6] = 0
    assert torch.equal(out, expected)
    # At the border the square is clipped, never wrapped.
    out = dsa.apply(x, draw(("cutout",), cutout_quantile_h=0.0, cutout_quantile_w=0.0))
    expected = torch.ones_like(x)
    expected[:, :, 0:2, 0:2] = 0
    assert torch.equal(out, expected)


def test_rotate_90_degrees_matches_rot90() -> None:
    x = images(n=2, size=8)
    out = DSA("rotate").apply(x, draw(("rotate",), rotate_degrees=90.0))
    # Either orientation of rot90 is a valid convention check; the reference's matrix gives one.
    candidates = [torch.rot90(x, k, dims=(2, 3)) for k in (1, -1)]
    assert any(torch.allclose(out, c, atol=1e-5) for c in candidates)


def test_sampled_ranges_follow_reference() -> None:
    d = DSA(mode="all").sample(5000, gen(2))
    p = d.params
    assert p["scale_x"].min() >= 1 / 1.2 and p["scale_x"].max() <= 1.2
    assert p["rotate_degrees"].abs().max() <= 15.0
    assert p["brightness_shift"].abs().max() <= 0.5
    assert p["saturation_factor"].min() >= 0 and p["saturation_factor"].max() <= 2.0
    assert p["contrast_factor"].min() >= 0.5 and p["contrast_factor"].max() <= 1.5
    assert set(p) == {k for keys in OP_PARAM_KEYS.values() for k in keys}


def test_saturation_on_one_channel_is_noop() -> None:
    x = images(n=3, c=1)
    d = DSA("saturation").sample(3, gen(0))
    torch.testing.assert_close(DSA("saturation").apply(x, d), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [8, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_preserved(size: int, channels: int, dtype: torch.dtype) -> None:
    x = images(n=3, c=channels, size=size, dtype=dtype)
    for mode in ("single", "all"):
        out = DSA(mode=mode)(x, gen(size))
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert torch.isfinite(out).all()


# ---------------------------------------------------------------- ZCA


def correlated_data(n: int = 4000, shape=(2, 3, 3), seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    dim = math.prod(shape)
    noise = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    mixing = torch.eye(dim, dtype=torch.float64) + 0.3 * noise  # well conditioned
    flat = torch.randn(n, dim, generator=g, dtype=torch.float64) @ mixing + 2.0
    return flat.reshape(n, *shape)


def covariance(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1).double()
    return torch.cov(flat.T)


def test_zca_round_trip() -> None:
    data = correlated_data().float()
    zca = fit_zca(data)
    assert zca.mean.shape == (18,) and zca.matrix.shape == (18, 18) and zca.image_shape == (2, 3, 3)
    whitened = zca.transform(data[:50])
    assert whitened.shape == (50, 2, 3, 3) and whitened.dtype == torch.float32
    torch.testing.assert_close(zca.inverse_transform(whitened), data[:50], rtol=1e-4, atol=1e-4)


def test_zca_whitens_with_tiny_reg() -> None:
    data = correlated_data()
    zca = fit_zca(data, reg=1e-6, dtype=torch.float64)
    cov = covariance(zca.transform(data))
    torch.testing.assert_close(cov, torch.eye(18, dtype=torch.float64), rtol=0, atol=1e-4)
    # ZCA (unlike PCA whitening) is the symmetric whitening matrix.
    torch.testing.assert_close(zca.matrix, zca.matrix.T)


def test_zca_larger_reg_shrinks_more() -> None:
    data = correlated_data()
    traces = [
        covariance(fit_zca(data, reg=r, dtype=torch.float64).transform(data)).trace()
        for r in (1e-6, 0.1, 1.0)
    ]
    assert traces[0] > traces[1] > traces[2]
    assert traces[0] == pytest.approx(18, rel=1e-3)


def test_zca_is_differentiable_and_checks_shape() -> None:
    data = correlated_data().float()
    zca = fit_zca(data)
    x = data[:4].clone().requires_grad_()
    zca.transform(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fitted"):
        zca.transform(torch.zeros(2, 3, 3, 3))


def test_zca_dict_round_trip() -> None:
    data = correlated_data().float()
    zca = fit_zca(data)
    restored = ZCA.from_dict(zca.to_dict())
    assert restored.reg == 0.1 and restored.image_shape == zca.image_shape
    torch.testing.assert_close(restored.transform(data[:5]), zca.transform(data[:5]))


def test_zca_rejects_bad_reg() -> None:
    with pytest.raises(ConfigError, match="reg"):
        fit_zca(correlated_data(n=10), reg=0.0)


def test_idc_mode_applies_flip_and_colour_every_batch_plus_one_geometric_op() -> None:
    # IDC/DANCE DiffAug(single=False): flip and colour always, then ONE of the remaining ops
    # (crop / scale / rotate), then cutout where the strategy lists it.
    dsa = DSA("color_crop_cutout_flip_scale_rotate", mode="idc")
    chosen = set()
    for seed in range(40):
        ops = dsa.sample(3, gen(seed)).ops
        assert ops[:4] == ("flip", "brightness", "saturation", "contrast") and ops[-1] == "cutout"
        middle = ops[4:-1]
        assert len(middle) == 1 and middle[0] in {"crop", "scale", "rotate"}
        chosen.add(middle[0])
    assert chosen == {"crop", "scale", "rotate"}
    # DANCE's evaluation strategy has no cutout; its pre-training strategy is colour + crop, both applied.
    assert DSA("color_crop_flip_scale_rotate", mode="idc").sample(2, gen(1)).ops[-1] in {"crop", "scale", "rotate"}
    assert DSA("color_crop", mode="idc").sample(2, gen(0)).ops == ("brightness", "saturation", "contrast", "crop")
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    dsa(x, gen(3)).sum().backward()
    assert x.grad is not None


def _numpy_zca(flat: np.ndarray, reg: float, convention: str) -> np.ndarray:
    """Reference whitening matrices, written from kornia ZCAWhitening and RCIG get_whitening_transform."""
    centred = flat - flat.mean(0)
    n, d = flat.shape
    if convention == "kornia":  # unbiased covariance, eps added to the singular values
        cov = centred.T @ centred / (n - 1)
        u, s, _ = np.linalg.svd(cov)
        return u @ np.diag(1 / np.sqrt(s + reg)) @ u.T
    cov = centred.T @ centred / n  # RCIG: biased, reg relative to the mean eigenvalue, rank control
    u, s, _ = np.linalg.svd(cov + reg * np.trace(cov) / d * np.eye(d))
    inv = s ** -0.5
    if n < d:
        inv[n:] = 1.0
    return u @ np.diag(inv) @ u.T


@pytest.mark.parametrize("convention,n", [("kornia", 300), ("rcig", 300)])
def test_zca_conventions_match_the_references(convention: str, n: int) -> None:
    g = gen(2)
    data = torch.rand(n, 2, 3, 3, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, 18).view(1, 2, 3, 3)
    zca = fit_zca(data, reg=0.1, dtype=torch.float64, convention=convention)
    expected = _numpy_zca(data.reshape(n, -1).numpy(), 0.1, convention)
    np.testing.assert_allclose(zca.matrix.numpy(), expected, atol=1e-8)
    with pytest.raises(ConfigError, match="convention"):
        fit_zca(data, convention="frepo")


def test_rcig_zca_leaves_directions_beyond_the_sample_count_unscaled() -> None:
    # RCIG's rank control: with N < D the D - N smallest eigen-directions get factor 1 (which of
    # the equal ones is a basis choice, in the reference too, so only the count is pinned).
    data = torch.rand(12, 2, 3, 3, generator=gen(4), dtype=torch.float64)
    zca = fit_zca(data, reg=0.1, dtype=torch.float64, convention="rcig")
    eig = torch.linalg.eigvalsh(zca.matrix)
    assert int((eig - 1.0).abs().lt(1e-9).sum()) >= 18 - 12


def test_zca_space_whitens_the_pixels_as_kornia_does_on_totensor_images() -> None:
    # DATM/MTT whiten un-normalised [0, 1] pixels with an absolute eps, so a set distilled from
    # ddlnl's normalised images must be whitened as if from the pixels they came from.
    from ddlnl.augment import fit_zca_space, zca_space_for

    g = gen(3)
    pixels = torch.rand(400, 3, 4, 4, generator=g, dtype=torch.float64)
    pixels[0], pixels[1] = 0.0, 1.0  # the split holds a black and a white pixel in every channel
    mean, std = pixels.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), pixels.std(dim=(0, 2, 3)).view(1, -1, 1, 1) * 0.3
    normalised = ((pixels - mean) / std).float()
    space = fit_zca_space(normalised, "kornia", 0.1)
    flat = pixels.reshape(400, -1).numpy()
    expected = (flat - flat.mean(0)) @ _numpy_zca(flat, 0.1, "kornia")
    np.testing.assert_allclose(space.transform(normalised).reshape(400, -1).numpy(), expected, atol=2e-4)
    # Whitening the normalised images directly (another eps relative to the data) is not the same.
    direct = fit_zca(normalised, 0.1).transform(normalised).reshape(400, -1).double().numpy()
    assert np.abs(direct - expected).max() > 0.05
    meta = {"image_space": "zca", "zca": space.describe()}
    assert zca_space_for(meta, normalised) is not None and zca_space_for({"image_space": "normalised"}, normalised) is None
    from ddlnl.errors import DataError

    with pytest.raises(DataError, match="ZCA space fitted on other training images"):
        zca_space_for(meta, normalised[:200])
