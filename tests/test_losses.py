"""The KD loss against values computed by hand (numpy, tests/fixtures/kd_loss_golden.json)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.losses import kd_loss

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "kd_loss_golden.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"T{c['temperature']}-a{c['alpha']}")
def test_kd_loss_matches_hand_computed_value(case):
    loss = kd_loss(torch.tensor(GOLDEN["student_logits"]), torch.tensor(GOLDEN["teacher_logits"]),
                   torch.tensor(GOLDEN["labels"]), case["temperature"], case["alpha"])
    assert loss.item() == pytest.approx(case["loss"], rel=1e-6)


def test_golden_file_is_the_formula():
    """The stored values follow alpha*T^2*KL(p_t||p_s) + (1-alpha)*CE, worked out in numpy."""
    s, t = np.array(GOLDEN["student_logits"]), np.array(GOLDEN["teacher_logits"])
    for c in GOLDEN["cases"]:
        T = c["temperature"]
        p = np.exp(t / T) / np.exp(t / T).sum(1, keepdims=True)
        q = np.exp(s / T) / np.exp(s / T).sum(1, keepdims=True)
        kl = float((p * np.log(p / q)).sum(1).mean())
        assert kl == pytest.approx(c["kl"]) and c["loss"] == pytest.approx(c["alpha"] * T * T * kl + (1 - c["alpha"]) * c["ce"])


def test_kd_loss_is_zero_kl_when_student_equals_teacher():
    logits = torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 3])
    only_kd = kd_loss(logits, logits.clone(), labels, temperature=3.0, alpha=1.0)
    assert only_kd.item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_flows_only_to_the_student():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t.detach(), torch.tensor([0, 1, 2]), 2.0, 0.5).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
