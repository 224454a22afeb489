"""DSA's defining steps against an independent re-implementation of the reference ops.

The reference is VICO-UoE/DatasetCondensation ``utils.py`` (``ParamDiffAug``, ``DiffAugment``,
``rand_scale``, ``rand_rotate``, ``rand_flip``, ``rand_brightness``, ``rand_saturation``,
``rand_contrast``, ``rand_crop``, ``rand_cutout``). The functions below are written from the
reference's definitions, not from :mod:`ddlnl.augment`: each op's parameter is a uniform draw
``u = torch.rand(n)`` mapped as the reference maps it, the geometric ops build the reference's
2 x 3 matrices for ``affine_grid``/``grid_sample`` (torch's default ``align_corners=False``), and
crop/cutout index a padded image / a mask with a meshgrid as the reference does. ddlnl draws its
uniforms from the same generator in the same order, so on a tiny tensor the outputs must agree.

Crop and cutout draw *integers* in the reference (``torch.randint``); ddlnl stores a quantile
``u`` instead (the admissible range depends on the image side, known only at apply time). The
tests check both halves: for every integer the reference can draw, the quantile at the centre of
its bin gives the reference's output; and the integers ddlnl's draws map to are uniform on the
reference's range.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddlnl.augment import DSA, AugmentationDraw, DSAParams

# ParamDiffAug() of the reference, read from its __init__.
REF = dict(prob_flip=0.5, ratio_scale=1.2, ratio_rotate=15.0, ratio_crop_pad=0.125, ratio_cutout=0.5,
           brightness=1.0, saturation=2.0, contrast=0.5)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(n: int = 3, c: int = 3, h: int = 7, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=gen(seed), dtype=torch.float64)


# ----------------------------------------------------------------- the reference ops, re-written


def ref_grid(x: torch.Tensor, theta: list) -> torch.Tensor:
    theta_t = torch.tensor(theta, dtype=x.dtype)
    grid = F.affine_grid(theta_t, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def ref_scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    ratio = REF["ratio_scale"]
    sx = torch.rand(x.shape[0], generator=g) * (ratio - 1.0 / ratio) + 1.0 / ratio
    sy = torch.rand(x.shape[0], generator=g) * (ratio - 1.0 / ratio) + 1.0 / ratio
    return ref_grid(x, [[[float(sx[i]), 0, 0], [0, float(sy[i]), 0]] for i in range(x.shape[0])])


def ref_rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    t = (torch.rand(x.shape[0], generator=g) - 0.5) * 2 * REF["ratio_rotate"] / 180 * math.pi
    return ref_grid(x, [[[math.cos(t[i]), math.sin(-t[i]), 0], [math.sin(t[i]), math.cos(t[i]), 0]]
                        for i in range(x.shape[0])])


def ref_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    randf = torch.rand(x.shape[0], generator=g).view(-1, 1, 1, 1)
    return torch.where(randf < REF["prob_flip"], x.flip(3), x)


def ref_brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    randb = torch.rand(x.shape[0], generator=g).view(-1, 1, 1, 1).to(x.dtype)
    return x + (randb - 0.5) * REF["brightness"]


def ref_saturation(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x_mean = x.mean(dim=1, keepdim=True)
    rands = torch.rand(x.shape[0], generator=g).view(-1, 1, 1, 1).to(x.dtype)
    return (x - x_mean) * (rands * REF["saturation"]) + x_mean


def ref_contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    randc = torch.rand(x.shape[0], generator=g).view(-1, 1, 1, 1).to(x.dtype)
    return (x - x_mean) * (randc + REF["contrast"]) + x_mean


def ref_crop_with(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """rand_crop given its integer translations (``N`` each; x along H, y along W)."""
    n, _, h, w = x.shape
    gb, gx, gy = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    gx = torch.clamp(gx + tx.view(-1, 1, 1) + 1, 0, h + 1)
    gy = torch.clamp(gy + ty.view(-1, 1, 1) + 1, 0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def ref_cutout_with(x: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor) -> torch.Tensor:
    """rand_cutout given its integer offsets (``N`` each)."""
    n, _, h, w = x.shape
    size = int(h * REF["ratio_cutout"] + 0.5), int(w * REF["ratio_cutout"] + 0.5)
    gb, gx, gy = torch.meshgrid(torch.arange(n), torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    gx = torch.clamp(gx + ox.view(-1, 1, 1) - size[0] // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy.view(-1, 1, 1) - size[1] // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


REF_OPS = {"scale": [ref_scale], "rotate": [ref_rotate], "flip": [ref_flip],
           "color": [ref_brightness, ref_saturation, ref_contrast]}


# ----------------------------------------------------------------- tests


def test_published_parameters_are_the_reference_ones() -> None:
    p = DSAParams()
    assert {k: getattr(p, k) for k in REF} == REF


@pytest.mark.parametrize("token", ["scale", "rotate", "flip", "color"])
def test_each_op_equals_the_reference_on_a_tiny_tensor(token: str) -> None:
    x = tiny()
    ours = DSA(token, mode="all")(x, gen(5))
    g = gen(5)
    expected = x
    for f in REF_OPS[token]:
        expected = f(expected, g)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(ours, x, atol=1e-3)  # the draw did transform something


def test_single_mode_picks_one_strategy_token_uniformly_then_applies_its_ops() -> None:
    # Reference aug_mode 'S': p = tokens[randint(0, len(tokens))], then AUGMENT_FNS[p] in order.
    x = tiny()
    tokens = ["color", "scale", "rotate", "flip"]
    for seed in range(6):
        g = gen(seed)
        choice = int(torch.randint(0, len(tokens), size=(1,), generator=g))
        expected = x
        for f in REF_OPS[tokens[choice]]:
            expected = f(expected, g)
        ours = DSA("_".join(tokens), mode="single")(x, gen(seed))
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    picks = [DSA("_".join(tokens)).sample(2, gen(s)).ops for s in range(400)]
    freq = [sum(p == tuple(("brightness", "saturation", "contrast") if t == "color" else (t,)) for p in picks) / 400
            for t in tokens]
    assert all(abs(f - 0.25) < 0.07 for f in freq), freq


def test_siamese_draw_is_the_reference_batch_mode() -> None:
    # Reference batchmode: every sample gets the first sample's parameters (theta[:] = theta[0]).
    x = tiny(n=4)
    d = DSA("rotate", mode="all").sample(4, gen(1), siamese=True)
    ours = DSA("rotate").apply(x, d)
    t = float(d.params["rotate_degrees"][0]) / 180 * math.pi
    expected = ref_grid(x, [[[math.cos(t), math.sin(-t), 0], [math.sin(t), math.cos(t), 0]]] * 4)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def _centre_quantile(k: int, count: int) -> float:
    return (k + 0.5) / count


@pytest.mark.parametrize("h,w", [(7, 8), (8, 8), (32, 32), (12, 20)])  # (12, 20): shifts of 2 and 3
def test_crop_equals_reference_for_every_translation_it_can_draw(h: int, w: int) -> None:
    x = tiny(n=1, h=h, w=w)
    dsa = DSA("crop")
    sh, sw = int(h * REF["ratio_crop_pad"] + 0.5), int(w * REF["ratio_crop_pad"] + 0.5)
    for tx in range(-sh, sh + 1):
        for ty in (-sw, 0, sw):
            d = AugmentationDraw(("crop",), {"crop_quantile_h": torch.tensor([_centre_quantile(tx + sh, 2 * sh + 1)]),
                                             "crop_quantile_w": torch.tensor([_centre_quantile(ty + sw, 2 * sw + 1)])})
            expected = ref_crop_with(x, torch.tensor([tx]), torch.tensor([ty]))
            assert torch.equal(dsa.apply(x, d), expected), (tx, ty)


@pytest.mark.parametrize("h,w", [(7, 8), (8, 8), (9, 6)])
def test_cutout_equals_reference_for_every_offset_it_can_draw(h: int, w: int) -> None:
    x = tiny(n=1, h=h, w=w)
    dsa = DSA("cutout")
    kh, kw = int(h * REF["ratio_cutout"] + 0.5), int(w * REF["ratio_cutout"] + 0.5)
    nh, nw = h + (1 - kh % 2), w + (1 - kw % 2)  # randint(0, side + (1 - k % 2))
    for ox in range(nh):
        for oy in range(nw):
            d = AugmentationDraw(("cutout",), {"cutout_quantile_h": torch.tensor([_centre_quantile(ox, nh)]),
                                               "cutout_quantile_w": torch.tensor([_centre_quantile(oy, nw)])})
            expected = ref_cutout_with(x, torch.tensor([ox]), torch.tensor([oy]))
            assert torch.equal(dsa.apply(x, d), expected), (ox, oy)


@pytest.mark.parametrize("op", ["crop", "cutout"])
def test_crop_and_cutout_integers_are_uniform_on_the_reference_range(op: str) -> None:
    # Read the integer back from the output of a tiny image, side 8: crop shifts are
    # randint(-1, 2) (0.125 * 8 = 1), cutout offsets randint(0, 9) (square side 4, even).
    n, side = 9000, 8
    dsa = DSA(op)
    d = dsa.sample(n, gen(7))
    if op == "crop":
        x = torch.zeros(n, 1, side, side)
        x[:, :, side // 2, side // 2] = 1.0
        row = dsa.apply(x, d)[:, 0].sum(dim=2).argmax(dim=1)
        found = side // 2 - row  # out[i] = x[i + t]: the pixel moves to row side/2 - t
        support = range(-1, 2)
    else:
        zero = (dsa.apply(torch.ones(n, 1, side, side), d)[:, 0] == 0).any(dim=2)
        first = zero.float().argmax(dim=1)
        last = side - 1 - zero.flip(1).float().argmax(dim=1)
        # rows [o - 2, o + 2) clipped to the image: o = first + 2, or last - 1 when clipped at the top
        found = torch.where(first > 0, first + 2, last - 1)
        support = range(0, side + 1)
    freq = torch.stack([(found == k).double().mean() for k in support])
    assert float(freq.sum()) == pytest.approx(1.0)
    assert torch.allclose(freq, torch.full_like(freq, 1 / len(support)), atol=0.02), freq


def test_draw_parameters_have_the_reference_distributions() -> None:
    p = DSA(mode="all").sample(20000, gen(3)).params
    r = REF
    checks = {
        "scale_x": (p["scale_x"], (1 / r["ratio_scale"] + r["ratio_scale"]) / 2),
        "scale_y": (p["scale_y"], (1 / r["ratio_scale"] + r["ratio_scale"]) / 2),
        "rotate_degrees": (p["rotate_degrees"], 0.0),
        "brightness_shift": (p["brightness_shift"], 0.0),
        "saturation_factor": (p["saturation_factor"], r["saturation"] / 2),
        "contrast_factor": (p["contrast_factor"], 0.5 + r["contrast"]),
        "flip": (p["flip"].double(), r["prob_flip"]),
    }
    for key, (values, mean) in checks.items():
        assert abs(float(values.double().mean()) - mean) < 0.03, key
    # spreads: uniform on an interval of width a has std a / sqrt(12)
    widths = {"scale_x": r["ratio_scale"] - 1 / r["ratio_scale"], "rotate_degrees": 2 * r["ratio_rotate"],
              "brightness_shift": r["brightness"], "saturation_factor": r["saturation"], "contrast_factor": 1.0}
    for key, width in widths.items():
        assert abs(float(p[key].double().std()) - width / math.sqrt(12)) < 0.02 * max(width, 1), key


def test_draws_follow_non_default_strengths_as_the_reference_maps_them() -> None:
    # Every strength enters its op's draw as in ParamDiffAug/rand_*: the ranges move with it.
    p = DSAParams(prob_flip=0.2, ratio_scale=1.5, ratio_rotate=30.0, brightness=0.4, saturation=3.0, contrast=0.2)
    d = DSA(mode="all", params=p).sample(20000, gen(4)).params
    lo_hi = {"scale_x": (1 / 1.5, 1.5), "rotate_degrees": (-30.0, 30.0), "brightness_shift": (-0.2, 0.2),
             "saturation_factor": (0.0, 3.0), "contrast_factor": (0.2, 1.2)}
    for key, (lo, hi) in lo_hi.items():
        v = d[key].double()
        assert lo - 1e-6 <= float(v.min()) < lo + 0.01 * (hi - lo), key
        assert hi - 0.01 * (hi - lo) < float(v.max()) <= hi + 1e-6, key
    assert abs(float(d["flip"].double().mean()) - 0.2) < 0.02
