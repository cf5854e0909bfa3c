"""ClassWiseRobustness against hand-built predictions (docs/design.md §4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from batlit.metrics import ClassWiseRobustness

# 3 classes; per sample: (label, clean prediction, adversarial prediction)
CASES = [
    (0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 0, 0),   # class 0: std 1/4, bndy 1/4
    (1, 1, 0), (1, 1, 0), (1, 1, 1),              # class 1: std 0, bndy 2/3
    (2, 0, 2), (2, 2, 2),                         # class 2: std 1/2 (a clean error robust to attack counts as std), bndy 0
]
Y = torch.tensor([c[0] for c in CASES])
CLEAN = torch.tensor([c[1] for c in CASES])
ADV = torch.tensor([c[2] for c in CASES])


def _result(*batches):
    metric = ClassWiseRobustness(3)
    for clean, adv, y in batches:
        metric.update(clean, adv, y)
    return metric.compute()


def test_per_class_values_and_rob_is_std_plus_bndy():
    r = _result((CLEAN, ADV, Y))
    torch.testing.assert_close(r["std_per_class"], torch.tensor([1 / 4, 0, 1 / 2]))
    torch.testing.assert_close(r["bndy_per_class"], torch.tensor([1 / 4, 2 / 3, 0]))
    torch.testing.assert_close(r["rob_per_class"], torch.tensor([1 / 2, 2 / 3, 1 / 2]))
    assert r["count_per_class"].tolist() == [4, 3, 2]


def test_avg_and_worst_are_taken_per_metric():
    r = _result((CLEAN, ADV, Y))
    assert math.isclose(r["std_avg"].item(), (1 / 4 + 0 + 1 / 2) / 3, rel_tol=1e-6)
    assert math.isclose(r["std_worst"].item(), 1 / 2, rel_tol=1e-6) and r["std_worst_class"].item() == 2
    assert math.isclose(r["bndy_worst"].item(), 2 / 3, rel_tol=1e-6) and r["bndy_worst_class"].item() == 1
    assert math.isclose(r["rob_worst"].item(), 2 / 3, rel_tol=1e-6) and r["rob_worst_class"].item() == 1
    # worst rob is not worst std + worst bndy
    assert r["rob_worst"] < r["std_worst"] + r["bndy_worst"]


def test_logits_and_labels_give_the_same_result():
    as_logits = lambda labels: F.one_hot(labels, 3).float() * 5 + torch.randn(len(labels), 3) * 0.1
    a, b = _result((CLEAN, ADV, Y)), _result((as_logits(CLEAN), as_logits(ADV), Y))
    for key in a:
        torch.testing.assert_close(a[key], b[key], equal_nan=True)


def test_several_updates_equal_one():
    one = _result((CLEAN, ADV, Y))
    split = _result(*[(CLEAN[i:i + 2], ADV[i:i + 2], Y[i:i + 2]) for i in range(0, len(Y), 2)])
    for key in one:
        torch.testing.assert_close(one[key], split[key], equal_nan=True)


def test_unseen_class_is_nan_and_left_out_of_avg():
    metric = ClassWiseRobustness(4)
    metric.update(CLEAN, ADV, Y)
    r = metric.compute()
    assert math.isnan(r["std_per_class"][3].item())
    assert math.isclose(r["rob_avg"].item(), (1 / 2 + 2 / 3 + 1 / 2) / 3, rel_tol=1e-6)


def test_bad_shapes_and_num_classes_raise():
    with pytest.raises(ValueError, match="num_classes"):
        ClassWiseRobustness(1)
    with pytest.raises(ValueError):
        ClassWiseRobustness(3).update(CLEAN[:3], ADV, Y)
