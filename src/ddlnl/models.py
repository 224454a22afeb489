"""Networks, built by parameters: ``create_model("convnet", depth=3, width=128, norm="instance")``.

The ConvNet is the dataset-distillation standard (Gidaris & Komodakis 2018; used by DC, DSA, DM,
MTT, DATM, DANCE): ``depth`` blocks of [3x3 conv (padding 1) -> norm -> activation -> 2x2 pool],
then one linear classifier. "instance" norm is ``GroupNorm(width, width)`` with affine parameters,
which is what the reference code calls instancenorm (per-sample, per-channel statistics).

Reference geometry on 28x28 single-channel images (MNIST, Fashion-MNIST): the references pad the
first convolution by 3 instead of 1 (DatasetCondensation ``networks.py`` ``ConvNet._make_layers``:
``padding=3 if channel == 1 and d == 0``, with ``im_size`` 28 treated as 32; the same code in DATM,
DD_LNL and DANCE; RCIG ``models.Conv``: ``kernel_size // 2 + 2``), so the first map is 32x32 and a
depth-3 net ends at 4x4 (2048 features at width 128), as on CIFAR. ddlnl applies this only to
28x28 single-channel input, the only case in which the references use it: the bundled 8x8 digits
keep padding 1 (:func:`first_padding`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

NORMS = ("instance", "batch", "none")
ACTIVATIONS = ("relu", "leakyrelu", "sigmoid", "softplus", "gelu")
POOLINGS = ("avg", "max", "none")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instance":
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(width)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}: use one of {', '.join(NORMS)}")


def _activation(kind: str, softplus_beta: float) -> nn.Module:
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": lambda: nn.ReLU(inplace=False),
        "leakyrelu": lambda: nn.LeakyReLU(0.01),
        "sigmoid": nn.Sigmoid,
        "softplus": lambda: nn.Softplus(beta=softplus_beta),
        "gelu": nn.GELU,
    }
    if kind not in table:
        raise ConfigError(f"unknown activation {kind!r}: use one of {', '.join(ACTIVATIONS)}")
    return table[kind]()


def first_padding(channels: int, image_size: tuple[int, int]) -> int:
    """Padding of the first 3x3 convolution: 3 on 28x28 single-channel images (the references'
    MNIST/Fashion-MNIST geometry, 28 -> 32), else 1."""
    return 3 if channels == 1 and tuple(image_size) == (28, 28) else 1


def _pool(kind: str) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(2, 2)
    if kind == "max":
        return nn.MaxPool2d(2, 2)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown pooling {kind!r}: use one of {', '.join(POOLINGS)}")


class ConvNet(nn.Module):
    """The distillation ConvNet, sized from the data.

    Args:
        channels: input channels (1 or 3).
        num_classes: output logits.
        image_size: input ``(H, W)``.
        depth: number of conv blocks; each halves the resolution when pooling (stops halving at 1).
        width: channels of the first conv layer (of every layer when ``width_multiplier`` is 1).
        norm: ``instance`` (GroupNorm(width, width)), ``batch`` or ``none``.
        activation: ``relu`` (default), ``leakyrelu``, ``sigmoid``, ``softplus``, ``gelu``.
        pooling: ``avg`` (default), ``max`` or ``none``.
        softplus_beta: temperature of softplus (RCIG uses a smooth activation).
        width_multiplier: block ``i`` (0-based) has ``width * width_multiplier ** i`` channels;
            1 (default) keeps the width constant, RCIG's ConvNet doubles it (2: 128, 256, 512).
    """

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], depth: int = 3,
                 width: int = 128, norm: str = "instance", activation: str = "relu",
                 pooling: str = "avg", softplus_beta: float = 1.0, width_multiplier: int = 1) -> None:
        super().__init__()
        if depth < 1 or width < 1 or width_multiplier < 1:
            raise ConfigError(f"ConvNet depth, width and width_multiplier must be >= 1, got depth={depth}, "
                              f"width={width}, width_multiplier={width_multiplier}")
        layers: list[nn.Module] = []
        pad = first_padding(channels, image_size)
        # A 3x3 convolution with padding p changes each side by 2p - 2.
        h, w = image_size[0] + 2 * pad - 2, image_size[1] + 2 * pad - 2
        c = channels
        for i in range(depth):
            out = width * width_multiplier ** i
            layers += [nn.Conv2d(c, out, kernel_size=3, padding=pad if i == 0 else 1), _norm(norm, out),
                       _activation(activation, softplus_beta)]
            # Pool only while there is something left to halve, so 8x8 digits work at depth 3+.
            if pooling != "none" and h >= 2 and w >= 2:
                layers.append(_pool(pooling))
                h, w = h // 2, w // 2
            c = out
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features ``N x feature_dim`` before the classifier (DM/DANCE match these)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``N x num_classes``."""
        return self.classifier(self.embed(x))


def fit_depth(depth: int, image_size: tuple[int, int], min_side: int = 2) -> int:
    """The largest depth <= ``depth`` whose last feature map is at least ``min_side`` pixels a side.

    Why: with instance norm, a block whose map is pooled down to 1x1 outputs little more than the
    pooled mean of a per-channel-normalised map, so the embedding carries almost no signal. On 8x8
    digits the standard depth 3 ends at 1x1 (DM's matching loss is then ~500x smaller and its
    images barely move); depth 2 ends at 2x2. 28x28 (padded to 32x32 when single-channel, see
    :func:`first_padding`) and 32x32 inputs keep depth 3 (4x4 maps); 64x64 keeps depth 4.
    """
    side = min(image_size)
    fitted = 0
    while fitted < depth and side // 2 >= min_side:
        side //= 2
        fitted += 1
    return max(1, fitted)


MODELS: dict[str, Callable[..., nn.Module]] = {"convnet": ConvNet}
# The ConvNet's architecture parameters (TrainConfig.model_kwargs); a user model that does not
# take one of them is built without it, so ``--set train.model=...`` works with any model.
ARCH_KEYS = ("depth", "width", "norm", "activation", "pooling")


def register_model(name: str, *, replace: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class or function decorator: make a model available to ``create_model(name)`` and so to
    ``--set train.model=NAME`` / ``TrainConfig(model=NAME)``.

    The model is called as ``factory(channels=C, num_classes=K, image_size=(H, W), **kw)`` and must
    map ``N x C x H x W`` images to logits ``N x K``; ``kw`` holds those of the ConvNet's
    architecture parameters (``depth``, ``width``, ``norm``, ``activation``, ``pooling``) that its
    signature accepts. Example::

        @ddlnl.register_model("mlp")
        class MLP(nn.Module):
            def __init__(self, channels, num_classes, image_size, width=256):
                ...
    """
    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS and MODELS[name] is not factory and not replace:
            raise ConfigError(f"model name {name!r} is taken; pick another or pass replace=True")
        MODELS[name] = factory
        return factory

    return decorate


def resolve_model(name: str) -> Callable[..., nn.Module]:
    """The factory of ``name``: a registered name, or ``"package.module:Attr"`` (imported; the
    form a command line can name a model defined in the user's own code by)."""
    if name in MODELS:
        return MODELS[name]
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"model {name!r}: cannot import {attr!r} from {module!r} ({exc}); "
                              "check the module is on PYTHONPATH") from None
        if not callable(factory):
            raise ConfigError(f"model {name!r}: {attr} is not a class or function")
        return factory
    raise ConfigError(f"unknown model {name!r}: use one of {', '.join(sorted(MODELS))}, "
                      "or package.module:ClassName for your own")


def create_model(name: str, *, channels: int, num_classes: int, image_size: tuple[int, int],
                 **kwargs) -> nn.Module:
    """Build a registered model by name with keyword parameters.

    Architecture parameters (``ARCH_KEYS``) the model's signature does not take are dropped; any
    other unknown keyword is refused.
    """
    import inspect

    factory = resolve_model(name)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params or k not in ARCH_KEYS}
    try:
        return factory(channels=channels, num_classes=num_classes, image_size=image_size, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
