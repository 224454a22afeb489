"""ddlnl: dataset distillation as a label denoiser.

The public API (imported on first use, so ``import ddlnl`` stays fast)::

    import ddlnl
    data = ddlnl.load_dataset("digits")                    # Dataset: train/test tensors, classes
    noisy = ddlnl.make_noise(data, "symmetric:0.6")        # NoisyLabels: noisy, realized_rate, realized_T
    syn = ddlnl.distill(data, "dm", ipc=10, labels=noisy)  # SyntheticSet
    result = ddlnl.evaluate(syn, data)                     # EvalResult: accs, mean, std
    issues = ddlnl.label_issues(syn, data, labels=noisy)   # LabelIssues: quality, is_issue, suggested

Models: ``ddlnl.register_model("name")`` decorates a class, then ``settings=["train.model=name"]``
(or ``--set train.model=package.module:Class`` on the command line) trains it.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ._version import __version__

# name -> (module, attribute): resolved on first access (PEP 562).
_LAZY = {
    "load_dataset": ("data", "load_dataset"),
    "Dataset": ("data", "Dataset"),
    "LabeledTensors": ("data", "LabeledTensors"),
    "make_noise": ("api", "make_noise"),
    "distill": ("api", "distill"),
    "evaluate": ("api", "evaluate"),
    "train_model": ("api", "train_model"),
    "SyntheticSet": ("synthetic", "SyntheticSet"),
    "load_synthetic": ("synthetic", "load_synthetic"),
    "NoisyLabels": ("noise", "NoisyLabels"),
    "TrainConfig": ("train", "TrainConfig"),
    "EvalResult": ("train", "EvalResult"),
    "create_model": ("models", "create_model"),
    "register_model": ("models", "register_model"),
    "MODELS": ("models", "MODELS"),
    "METHODS": ("methods", "METHODS"),
}

__all__ = ["__version__", "label_issues", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ddlnl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """``ddlnl.label_issues`` is the API function although a submodule has that name: importing the
    submodule (which sets the package attribute) must not replace the function."""

    @property
    def label_issues(self):  # type: ignore[override]
        from .api import label_issues

        return label_issues

    @label_issues.setter
    def label_issues(self, module: types.ModuleType) -> None:
        self.__dict__["_label_issues_module"] = module


sys.modules[__name__].__class__ = _Package
