"""How sure an accuracy difference is: the paired drop of a model against a reference on the same
images, with a seeded bootstrap confidence interval, and their top-1 agreement.

Written here because the bootstrap of a paired accuracy difference has a closed form that no library
offers as one call: each image's difference (reference right minus model right) is +1, -1 or 0, so a
resample of n images is a multinomial draw of n over those three outcomes, and its mean is
(count(+1) - count(-1)) / n. Drawing the counts is the same distribution as resampling the images, in
constant memory for any n.

One adjustment: the resampling probabilities carry Agresti and Min's (2005) half count in each cell of
the paired 2x2 table (n + 2 images, lost + 0.5, gained + 0.5). Without it a split on which the two models
never disagree gets the interval [0, 0], which claims certainty that n images cannot give (measured: the
quickstart's INT8 student agreed with FP32 on all 750 validation images and lost -0.13 points on test,
outside [0, 0]); with it that interval is about one image wide on each side.
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000


def paired_drop(labels: np.ndarray, reference: np.ndarray, model: np.ndarray, seed: int = 0,
                resamples: int = RESAMPLES, level: float = LEVEL) -> dict:
    """Accuracy drop of `model` against `reference` (predicted classes on the same images), in points:
    drop = acc(reference) - acc(model), its `level` percentile-bootstrap interval (ci_low, ci_high),
    the share of images where the two predict the same class (agreement, %), and the counts."""
    labels, reference, model = (np.asarray(a) for a in (labels, reference, model))
    n = len(labels)
    if n == 0 or not (len(reference) == len(model) == n):
        raise ValueError(f"paired_drop needs the same non-empty set of examples ({n}, {len(reference)}, {len(model)})")
    ref_right, model_right = reference == labels, model == labels
    lost, gained = int((ref_right & ~model_right).sum()), int((~ref_right & model_right).sum())
    p_lost, p_gained = (lost + 0.5) / (n + 2), (gained + 0.5) / (n + 2)  # Agresti-Min half counts
    counts = np.random.default_rng(seed).multinomial(n, [p_lost, p_gained, 1 - p_lost - p_gained], size=resamples)
    boot = 100.0 * (counts[:, 0] - counts[:, 1]) / n
    tail = 100.0 * (1 - level) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return {"drop": 100.0 * (lost - gained) / n, "ci_low": float(low), "ci_high": float(high), "level": level,
            "agreement": 100.0 * float((reference == model).mean()), "images": n, "lost": lost, "gained": gained}


def resolution(stats: dict, tolerance: float) -> dict:
    """Whether the images behind `stats` can tell a drop of `tolerance` points from none: they can when
    the interval's half-width is at most half the tolerance (then a model that loses nothing passes with
    room to spare). Otherwise, about how many images would be needed (the half-width shrinks as
    1/sqrt(n)); one image is 100/n points, so fewer than 200/tolerance images never resolve it."""
    n = stats["images"]
    half = (stats["ci_high"] - stats["ci_low"]) / 2
    # with no disagreement at all the interval is [0, 0]: the resolution is then one image's worth
    half = max(half, 100.0 / n)
    ok = tolerance > 0 and half <= tolerance / 2
    needed = n if ok else (math.inf if tolerance == 0 else int(math.ceil(n * (2 * half / tolerance) ** 2)))
    return {"resolved": ok, "half_width": half, "images": n, "images_needed": needed if needed != math.inf else None}


def disagreement_bound(reference: np.ndarray, model: np.ndarray, level: float = LEVEL) -> dict:
    """How often `model` predicts another class than `reference` (predicted classes on the same
    examples; no labels needed), in percent, with the upper end of its one-sided `level` Wilson score
    interval (Wilson 1927). An example where the two agree is right or wrong for both, so the
    accuracy drop on any labeled set drawn like these examples is at most the disagreement rate: the
    upper end bounds the drop without labels."""
    from statistics import NormalDist

    reference, model = np.asarray(reference), np.asarray(model)
    n = len(reference)
    if n == 0 or len(model) != n:
        raise ValueError(f"disagreement_bound needs the same non-empty set of examples ({n}, {len(model)})")
    k = int((reference != model).sum())
    z = NormalDist().inv_cdf(level)
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return {"disagreement": 100.0 * p, "upper": 100.0 * min(1.0, (centre + half) / (1 + z * z / n)),
            "level": level, "examples": n, "disagreed": k}
