"""scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from pathlib import Path

from .common import _build, _scaled
from .types import Dataset


# ------------------------------------------------------------------------------------ digits


def load_digits(root: str | Path | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download needed).

    Pixels are 0..16 in the source and are divided by 16. The dataset ships without a test
    split, so a fixed stratified split is made:
    ``sklearn.model_selection.train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)``,
    giving 1257 training and 540 test images, the same on every call.

    Args:
        root: ignored (the data is bundled with scikit-learn); accepted for registry uniformity.

    Returns:
        ``Dataset`` with images float32 ``N x 1 x 8 x 8``, labels int64 in 0..9, classes
        ``"0".."9"``, ``meta["split"]`` describing the split.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    x, y = _sk_load_digits(return_X_y=True)
    x = x.reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=0
    )
    return _build(
        "digits",
        _scaled(x_train, 16.0),
        y_train,
        _scaled(x_test, 16.0),
        y_test,
        [str(i) for i in range(10)],
        ["sklearn.datasets.load_digits"],
        split="stratified train_test_split(test_size=0.3, stratify=y, random_state=0)",
    )
