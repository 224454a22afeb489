"""Image grids say how they were drawn; out-of-range images are stretched, not clamped flat."""

from __future__ import annotations

import torch

from ddlnl.report import display_pixels, image_grid_png


def test_in_range_images_are_shown_as_they_are():
    x = torch.rand(3, 1, 8, 8)
    shown, note = display_pixels(x, [0.0], [1.0])
    assert torch.equal(shown, x) and note.startswith("pixels clamped")


def test_mostly_out_of_range_images_are_stretched_per_image_and_the_caption_says_so():
    x = torch.rand(2, 1, 8, 8) * 6 - 3  # ~2/3 of the pixels outside [0, 1], as DM's digits sets
    clamped, _ = display_pixels(x, [0.0], [1.0], "clamp")
    assert ((clamped == 0) | (clamped == 1)).float().mean() > 0.5  # what a clamped grid shows
    shown, note = display_pixels(x, [0.0], [1.0])
    assert "1st-99th percentile" in note
    for img in shown:  # each image uses the whole grey range
        assert img.min() == 0 and img.max() == 1 and ((img > 0) & (img < 1)).float().mean() > 0.9


def test_grid_caption_states_row_order_and_soft_label_sorting(tmp_path, monkeypatch):
    import matplotlib.figure

    texts = []
    real = matplotlib.figure.Figure.text
    monkeypatch.setattr(matplotlib.figure.Figure, "text", lambda self, *a, **k: (texts.append(a[2]), real(self, *a, **k))[1])
    image_grid_png(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), ["a", "b"], [0.0], [1.0], tmp_path / "g.png",
                   title="datm, IPC 1, a very long dataset name, symmetric-0.6", soft=True)
    caption = " ".join(texts).replace("\n", " ")
    assert "class-index order" in caption and "argmax" in caption and "datm, IPC 1" in caption
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
