"""Distillers, one module each, one signature.

Every method is ``distill(train, ipc, cfg, *, seed, num_classes, device, progress) -> SyntheticSet``
where ``train`` holds the *noisy* training labels. ``METHODS`` maps a name to the function and its
frozen config dataclass (defaults = the method's published hyperparameters; ``Config.PRESETS``
holds named smaller settings such as ``"cpu"``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .. import study
from ..errors import ConfigError
from . import dance, datm, dm, random_subset, rcig


class Method(NamedTuple):
    distill: Callable[..., Any]
    config: type
    summary: str
    # The method's own evaluation recipe: (common TrainConfig, SyntheticSet, dataset name) ->
    # (TrainConfig, LabeledTensors to train on). None: the common recipe is its recipe.
    own_recipe: Callable[..., Any] | None = None


METHODS: dict[str, Method] = {
    "random": Method(random_subset.distill, random_subset.RandomConfig,
                     "random real images per noisy class, with their noisy labels (the fair reference)"),
    "dm": Method(dm.distill, dm.DMConfig, "Distribution Matching (Zhao & Bilen, WACV 2023)", dm.own_recipe),
    "datm": Method(datm.distill, datm.DATMConfig,
                   "Difficulty-Aligned Trajectory Matching with soft labels (Guo et al., ICLR 2024), TESLA gradient",
                   datm.own_recipe),
    "rcig": Method(rcig.distill, rcig.RCIGConfig,
                   "Convexified Implicit Gradients, learned labels (Loo et al., ICML 2023)", rcig.own_recipe),
    "dance": Method(dance.distill, dance.DANCEConfig,
                    "Dual-view distribution alignment with pre-trained models and multi-formation (Zhang et al., IJCAI 2024)",
                    dance.own_recipe),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}: use one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_config(name: str, preset: str | None = None, overrides: Any = None, *, cell: Any = None) -> Any:
    """The config of ``name``: published defaults, then a named preset, then ``--set`` overrides.

    With ``preset="paper"`` and a ``cell`` (:class:`ddlnl.study.StudyCell`: dataset, IPC, noise)
    the study's values for that cell (``configs/study/``, :func:`ddlnl.study.resolve`) replace the
    defaults; without a cell the paper preset is the dataclass defaults (the methods' published
    CIFAR-10 settings). The ``cpu`` preset never reads the study tables.
    """
    from ..config import apply_overrides
    from ..correction import refuse_unsupported

    refuse_unsupported(name, overrides)
    cls = get_method(name).config
    cfg = cls()
    if preset == "paper" and cell is not None:
        cfg = apply_overrides(cfg, paper_resolution(name, cell).values)
    elif preset and preset != "paper":
        presets = getattr(cls, "PRESETS", {})
        if preset not in presets:
            raise ConfigError(f"method {name!r} has no preset {preset!r}; presets: paper, {', '.join(sorted(presets))}")
        cfg = apply_overrides(cfg, presets[preset])
    return apply_overrides(cfg, overrides)


def paper_resolution(name: str, cell: Any) -> Any:
    """The study's values for method ``name`` at ``cell``, with their sources and notes
    (:class:`ddlnl.study.Resolution`); the tables are checked against the configs first."""
    from ..train import TrainConfig

    check_study_tables()
    return study.resolve(name, cell, get_method(name).config)


def check_study_tables() -> None:
    """Check every study table column against the method configs and TrainConfig (once)."""
    global _TABLES_CHECKED
    if not _TABLES_CHECKED:
        from ..train import TrainConfig

        study.check_tables({n: m.config for n, m in METHODS.items()}, TrainConfig)
        _TABLES_CHECKED = True


_TABLES_CHECKED = False
