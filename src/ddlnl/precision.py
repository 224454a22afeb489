"""Reduced-precision compute: a named option of a method, never a silent default.

``precision="fp32"`` is the exact path (every operation in float32, as the reference code runs).
``precision="bf16"`` runs the network's forward (and so its backward) under
:func:`torch.autocast` with ``bfloat16``: convolutions and matrix products take bfloat16 inputs
and accumulate in float32; losses are formed in float32 from float32 copies of the outputs. On a
CPU with AVX-512 BF16 (or a GPU with bfloat16 tensor cores) convolutions get cheaper:
``benchmarks/results/vs_reference_dm.md`` measures DM per iteration against the study's
``main_DM.py`` in float32 and in bf16. The price is rounding of the activations to 8 significant
bits, which the tests bound where a method offers it (``tests/test_precision.py``: one
iteration's update agrees with the float32 one).
"""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, method: str) -> None:
    """One clear line for a value that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{method}: precision {precision!r}: use fp32 (exact) or bf16 (autocast)")


def inplace_relu_(net: torch.nn.Module) -> torch.nn.Module:
    """Make ``net``'s ReLUs in-place, as the reference ConvNet's ``nn.ReLU(inplace=True)``: the
    same values bit for bit, one activation fewer to allocate per layer (1.3x on a width-32
    forward of 256 images here). Only for a network that plain autograd differentiates (no
    ``torch.func`` transform) and whose pre-activations nothing else reads."""
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = True
    return net


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The compute context of ``precision`` on ``device``: nothing for fp32, bfloat16 autocast for bf16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
