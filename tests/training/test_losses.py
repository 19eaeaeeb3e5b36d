"""The KD loss against values computed by hand (numpy, tests/fixtures/kd_loss_golden.json)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.training.losses import kd_loss, mutual_loss

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "kd_loss_golden.json").read_text())


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


MUTUAL = json.loads((Path(__file__).parents[1] / "fixtures" / "mutual_loss_golden.json").read_text())


@pytest.mark.parametrize("case", MUTUAL["cases"], ids=lambda c: f"T{c['temperature']}-a{c['alpha']}-ta{c['teacher_alpha']}")
def test_mutual_loss_matches_hand_computed_values(case):
    """Online distillation's two losses (DML with soft targets) against tests/fixtures/mutual_loss_golden.json,
    an unlabeled image among them; each loss's gradient reaches its own model's logits only."""
    s = torch.tensor(MUTUAL["student_logits"], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(MUTUAL["teacher_logits"], dtype=torch.float64, requires_grad=True)
    y = torch.tensor(MUTUAL["labels"])
    response = lambda logits, targets, alpha, smoothing, weights: kd_loss(logits, targets, y, case["temperature"], alpha,
                                                                           smoothing, weights)
    losses = mutual_loss(s, t, response, case["alpha"], case["teacher_alpha"])
    assert losses["student"].item() == pytest.approx(case["student_loss"], rel=1e-6)
    assert losses["teacher"].item() == pytest.approx(case["teacher_loss"], rel=1e-6)
    losses["student"].backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    s.grad = None
    losses["teacher"].backward()
    assert t.grad.abs().sum() > 0 and s.grad is None


def test_mutual_golden_file_is_the_formula():
    s, t = np.array(MUTUAL["student_logits"]), np.array(MUTUAL["teacher_logits"])
    for c in MUTUAL["cases"]:
        T = c["temperature"]
        q, p = (np.exp(x / T) / np.exp(x / T).sum(1, keepdims=True) for x in (s, t))
        assert c["kl_teacher_to_student"] == pytest.approx(float((p * np.log(p / q)).sum(1).mean()))
        assert c["student_loss"] == pytest.approx(c["alpha"] * T * T * c["kl_teacher_to_student"] + (1 - c["alpha"]) * c["ce_student"])
        assert c["teacher_loss"] == pytest.approx(c["teacher_alpha"] * T * T * c["kl_student_to_teacher"]
                                                  + (1 - c["teacher_alpha"]) * c["ce_teacher"])


RKD = json.loads((Path(__file__).parents[1] / "fixtures" / "rkd_golden.json").read_text())


def test_rkd_losses_match_a_loop_by_loop_numpy_reference():
    """Golden values from tests/fixtures/rkd_golden.json, computed with explicit loops over pairs and
    triplets and a written-out Huber loss (not with this code)."""
    from edgedistill.training.losses import rkd_angle_loss, rkd_distance_loss

    s, t = torch.tensor(RKD["student"], dtype=torch.float64), torch.tensor(RKD["teacher"], dtype=torch.float64)
    assert rkd_distance_loss(s, t).item() == pytest.approx(RKD["rkd_distance"], rel=1e-9)
    assert rkd_angle_loss(s, t).item() == pytest.approx(RKD["rkd_angle"], rel=1e-9)


def test_rkd_ignores_scale_and_moves_only_the_student():
    from edgedistill.training.losses import rkd_angle_loss, rkd_distance_loss

    t = torch.randn(6, 8)
    assert rkd_distance_loss(3.0 * t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle_loss(0.5 * t, t).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(6, 4, requires_grad=True)
    teacher = t.clone().requires_grad_(True)
    (rkd_distance_loss(s, teacher) + rkd_angle_loss(s, teacher)).backward()
    assert s.grad.abs().sum() > 0 and teacher.grad is None


def test_hint_loss_by_hand():
    """A 1x1 adapter that doubles channel 0 and sums both channels; student map 2x2, teacher map 1x1."""
    from edgedistill.training.losses import hint_loss

    adapter = torch.nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        adapter.weight[:] = torch.tensor([[[[2.0]], [[1.0]]]])
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]]])  # (1, 2, 2, 2)
    teacher = torch.tensor([[[[5.0]]]])
    # adapter: 2*[1,2,3,4] + [0,0,0,4] = [2,4,6,12], pooled to 1x1: mean 6; (6 - 5)^2 = 1
    assert hint_loss(student, teacher, adapter).item() == pytest.approx(1.0)


def test_unlabeled_rows_get_only_the_distillation_term():
    """Rows labeled -1 (transfer-set images) add their KL term but no cross-entropy."""
    s, t = torch.tensor(GOLDEN["student_logits"]), torch.tensor(GOLDEN["teacher_logits"])
    labels = torch.tensor(GOLDEN["labels"])
    T, alpha = 4.0, 0.7
    kd_only = kd_loss(s, t, labels, T, 1.0) / (T * T)  # batch-mean KL
    part = labels.clone()
    part[1:] = -1  # only row 0 keeps its label
    ce0 = torch.nn.functional.cross_entropy(s[:1], labels[:1])
    assert kd_loss(s, t, part, T, alpha).item() == pytest.approx((alpha * T * T * kd_only + (1 - alpha) * ce0).item(), rel=1e-6)
    none = torch.full_like(labels, -1)
    assert kd_loss(s, t, none, T, alpha).item() == pytest.approx((alpha * T * T * kd_only).item(), rel=1e-6)


def test_mixed_soft_targets_skip_all_zero_rows():
    from edgedistill.training.losses import cross_entropy

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, -2.0, 0.0]])
    targets = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # row 1: unlabeled
    logp = torch.log_softmax(logits, 1)
    by_hand = -((targets * logp).sum(1)[[0, 2]]).mean()
    assert cross_entropy(logits, targets).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_multi_teacher_soft_target_is_the_weighted_average_of_tempered_softmaxes():
    """Two teachers weighted 3:1, worked out in numpy: KL(0.75 p1 + 0.25 p2 || q)."""
    rng = np.random.default_rng(0)
    s, t1, t2 = (rng.normal(size=(4, 5)) for _ in range(3))
    T = 2.0

    def softmax(z):
        e = np.exp(z / T)
        return e / e.sum(1, keepdims=True)

    p = 0.75 * softmax(t1) + 0.25 * softmax(t2)
    kl = float((p * np.log(p / softmax(s))).sum(1).mean())
    loss = kd_loss(torch.tensor(s), [torch.tensor(t1), torch.tensor(t2)], torch.zeros(4, dtype=torch.long), T, 1.0,
                   teacher_weights=[3.0, 1.0])
    assert loss.item() == pytest.approx(T * T * kl, rel=1e-6)
    single = kd_loss(torch.tensor(s), [torch.tensor(t1)], torch.zeros(4, dtype=torch.long), T, 1.0)
    assert single.item() == pytest.approx(kd_loss(torch.tensor(s), torch.tensor(t1), torch.zeros(4, dtype=torch.long), T, 1.0).item())


def test_dist_loss_matches_the_formula_worked_out_in_numpy():
    """DIST: T^2 * (beta * (1 - mean row Pearson) + gamma * (1 - mean column Pearson)) of the tempered
    probabilities, plus (1 - alpha) * CE; computed here with numpy's corrcoef, not this code."""
    from edgedistill.training.losses import dist_loss

    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(6, 5)) * 2, rng.normal(size=(6, 5)) * 2
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    T, alpha, beta, gamma = 2.0, 0.6, 1.5, 0.5

    def softmax(z):
        e = np.exp(z / T)
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(s), softmax(t)
    inter = 1 - np.mean([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(len(ps))])
    intra = 1 - np.mean([np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(ps.shape[1])])
    ce = torch.nn.functional.cross_entropy(torch.tensor(s), labels).item()
    expected = alpha * T * T * (beta * inter + gamma * intra) + (1 - alpha) * ce
    got = dist_loss(torch.tensor(s), torch.tensor(t), labels, T, alpha, beta, gamma)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # a student that predicts what the teacher predicts has nothing left to learn
    assert dist_loss(torch.tensor(t), torch.tensor(t), labels, T, 1.0).item() == pytest.approx(0.0, abs=1e-5)
