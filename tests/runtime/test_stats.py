"""The paired accuracy drop, its bootstrap interval, and when a validation split is too small."""
import numpy as np
import pytest

from edgedistill.runtime.stats import disagreement_bound, paired_drop, resolution


def example(n=100, lost=10, gained=4):
    """n images, all labeled 0: the reference gets every one right except `gained` of them, which the
    model gets right; the model gets `lost` of the reference's right ones wrong."""
    labels = np.zeros(n, dtype=np.int64)
    reference, model = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    model[:lost] = 1
    reference[lost:lost + gained] = 1
    return labels, reference, model


def test_paired_drop_matches_a_hand_worked_example():
    """100 images, 10 lost and 4 gained. Drop = (10 - 4) / 100 = 6 points. The resampling probabilities
    carry Agresti-Min half counts: p(+1) = 10.5/102, p(-1) = 4.5/102, so a resampled difference has mean
    6/102 = 0.0588 and variance 15/102 - 0.0588^2 = 0.1436; the standard error of a mean of 100 is
    sqrt(0.1436 / 100) = 0.03790, and the normal 95% interval is 5.88 +- 1.96 * 3.790 = [-1.55, 13.31]
    points. The percentile bootstrap (whose values move in steps of one image, 1 point) agrees within
    that step. Agreement: 86 of 100."""
    d = paired_drop(*example(), seed=0)
    assert d["drop"] == pytest.approx(6.0) and (d["lost"], d["gained"], d["images"]) == (10, 4, 100)
    assert d["ci_low"] == pytest.approx(-1.55, abs=1.0) and d["ci_high"] == pytest.approx(13.31, abs=1.0)
    assert d["agreement"] == pytest.approx(86.0)
    assert paired_drop(*example(), seed=0) == d  # seeded


def test_identical_predictions_have_no_drop_but_an_honest_interval():
    """No disagreement on 750 images does not prove no drop: the interval is about one image (0.13
    points) wide on each side, not [0, 0]; a model that gains one image on test falls inside it."""
    labels, reference, _ = example(n=750, lost=0, gained=0)
    d = paired_drop(labels, reference, reference.copy())
    assert (d["drop"], d["agreement"]) == (0.0, 100.0)
    assert -0.4 <= d["ci_low"] <= -0.13 and 0.13 <= d["ci_high"] <= 0.4


def test_a_small_validation_split_cannot_resolve_the_tolerance():
    """100 images with 14 disagreements: an interval of about +-7 points cannot tell a 1-point drop from
    none; the images needed scale with the square of the ratio: 100 * (2 * 7.2 / 1)^2, about 20,000."""
    r = resolution(paired_drop(*example(), seed=0), tolerance=1.0)
    assert not r["resolved"] and 15_000 < r["images_needed"] < 27_000
    # 10,000 images with the same disagreement rates: +-0.72 points resolves a 2-point tolerance
    big = resolution(paired_drop(*example(10_000, 1000, 400), seed=0), tolerance=2.0)
    assert big["resolved"] and big["images_needed"] == 10_000
    # no disagreement on 100 images: one image (1 point) is the resolution, too coarse for 1 point
    labels, reference, _ = example()
    assert not resolution(paired_drop(labels, reference, reference), tolerance=1.0)["resolved"]


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        paired_drop(np.zeros(3), np.zeros(3), np.zeros(2))


def test_disagreement_bound_matches_a_hand_worked_example():
    # 10 of 1,000 predictions differ: p = 0.01; the one-sided 95% Wilson upper end, z = 1.6449:
    # (p + z^2/2n + z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) = (0.011353 + 0.005350) / 1.002706 = 1.6657%
    d = disagreement_bound(np.zeros(1000), np.r_[np.ones(10), np.zeros(990)])
    assert d["disagreement"] == pytest.approx(1.0) and d["disagreed"] == 10 and d["examples"] == 1000
    assert d["upper"] == pytest.approx(1.6657, abs=1e-3)
    # none differ among 100: the upper end is z^2 / (n + z^2) = 2.7055 / 102.7055, not 0
    assert disagreement_bound(np.zeros(100), np.zeros(100))["upper"] == pytest.approx(2.634, abs=1e-3)
    # the drop on any labeled set is at most the disagreement on it: each differing example loses at most one
    labels, ref, model = np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0]), np.array([0, 1, 0, 3])
    assert paired_drop(labels, ref, model)["drop"] <= disagreement_bound(ref, model)["disagreement"]
    with pytest.raises(ValueError):
        disagreement_bound(np.zeros(3), np.zeros(2))
