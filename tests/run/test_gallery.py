"""The Figure 5 gallery's pieces on hand-made tensors: which cases, which neighbours."""

from __future__ import annotations

import pytest
import torch

from batlit.data.base import class_indices
from batlit.report.gallery import eligible, nearest_training, pick_cases


def test_cases_are_right_for_the_model_and_wrong_for_the_baseline():
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    model = torch.tensor([0, 1, 2, 2, 0, 0, 2])
    base = torch.tensor([1, 1, 0, 1, 1, 2, 0])
    mask = eligible(labels, model, base, None)
    assert mask.tolist() == [True, False, True, True, False, True, True]
    assert eligible(labels, model, base, [2]).tolist() == [False, False, True, True, False, False, True]
    # round-robin over classes: class 0's first case (0), class 2's (2), then class 0's second (5);
    # rows come out grouped by class
    assert pick_cases(mask, labels, 3).tolist() == [0, 5, 2]
    assert pick_cases(mask, labels, 10).tolist() == [0, 5, 2, 3, 6]
    assert pick_cases(torch.zeros(7, dtype=torch.bool), labels, 3).tolist() == []


def test_nearest_training_images_come_from_the_asked_class_in_order():
    train_x = torch.tensor([0, 10, 200, 30, 250, 20], dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 2, 2).contiguous()
    train_y = torch.tensor([0, 0, 1, 0, 1, 0])
    query = torch.full((2, 1, 2, 2), 22 / 255)
    idx, dist = nearest_training(query, torch.tensor([0, 1]), train_x, train_y, k=3, chunk=2)
    assert idx[0].tolist() == [5, 3, 1]             # pixel values 20, 30, 10 of class 0
    assert idx[1].tolist() == [2, 4, -1]            # class 1 has only two images
    assert dist[0, 0].item() == pytest.approx(2 * 2 / 255, abs=1e-5)   # L2 over 4 pixels of 2/255
    assert torch.isinf(dist[1, 2])


def test_gallery_classes_by_index_or_name():
    names = ["plane", "car", "bird"]
    assert class_indices(["bird", 0], names, "gallery.classes") == [2, 0]
    with pytest.raises(ValueError, match="gallery.classes: 'cat' is neither"):
        class_indices(["cat"], names, "gallery.classes")
