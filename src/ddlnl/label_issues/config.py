"""How labels are scored and flagged (:class:`IssuesConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..estimate import DEFAULT_ANCHOR_FRACTION


SCORES = ("self-confidence", "posterior")
THRESHOLDS = ("estimated", "per-class")


@dataclass(frozen=True)
class IssuesConfig:
    """How labels are scored and flagged (``--set issues.<field>=...``)."""

    n_models: int = 3  # teachers trained on the synthetic set (different seeds); their mean is used
    neighbours: int = 50  # k of the neighbour vote in the teachers' feature space; 0 = teachers only
    teacher_weight: float = 0.2  # weight of the teachers' probabilities in the blend with the vote
    embed_dim: int = 128  # PCA dimensions of the concatenated teacher features (0 = no reduction)
    score: str = "posterior"  # posterior | self-confidence (see find_issues)
    threshold: str = "estimated"  # estimated | per-class (cleanlab's confident learning) | a number in (0, 1)
    anchor_fraction: float = DEFAULT_ANCHOR_FRACTION  # anchors per class / (N / K) for the noise estimate

    def check(self) -> None:
        if self.n_models < 1:
            raise ConfigError(f"issues.n_models must be >= 1, got {self.n_models}")
        if self.neighbours < 0 or self.embed_dim < 0:
            raise ConfigError("issues.neighbours and issues.embed_dim must be >= 0")
        if not 0.0 < self.anchor_fraction <= 1.0:
            raise ConfigError(f"issues.anchor_fraction must be in (0, 1], got {self.anchor_fraction}")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise ConfigError(f"issues.teacher_weight must be in [0, 1], got {self.teacher_weight}")
        if self.score not in SCORES:
            raise ConfigError(f"issues.score {self.score!r}: use {' or '.join(SCORES)}")
        self.fixed_threshold()  # validates a numeric threshold

    def fixed_threshold(self) -> float | None:
        """The threshold as a number, or None for ``estimated`` / ``per-class``."""
        if self.threshold in THRESHOLDS:
            return None
        try:
            value = float(self.threshold)
        except ValueError:
            raise ConfigError(f"issues.threshold {self.threshold!r}: use estimated, per-class or a "
                              "number in (0, 1)") from None
        if not 0.0 < value < 1.0:
            raise ConfigError(f"issues.threshold must be in (0, 1), got {value}")
        return value
