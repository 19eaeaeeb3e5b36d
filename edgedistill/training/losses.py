"""Distillation losses."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy averaged over the rows that have a label; 0 (with a gradient) when none has.

    targets: class indices, -1 where an image has no label (data.splits.UNLABELED); or probability rows
    (MixUp/CutMix), all zeros for an unlabeled image."""
    labeled = targets >= 0 if targets.dim() == 1 else targets.sum(1) > 0
    if bool(labeled.all()):
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if not bool(labeled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labeled], targets[labeled], label_smoothing=label_smoothing)


def teacher_log_probs(teacher_logits: torch.Tensor | list[torch.Tensor], temperature: float,
                      weights: list[float] | None = None) -> torch.Tensor:
    """log softmax(t / T) of one teacher; of several, the log of the weighted average of their
    tempered softmax outputs (multi-teacher soft targets, weights normalized to sum to 1)."""
    if isinstance(teacher_logits, torch.Tensor):
        return F.log_softmax(teacher_logits / temperature, dim=1)
    w = torch.tensor(weights or [1.0] * len(teacher_logits), dtype=torch.float32)
    w = (w / w.sum()).log().tolist()
    return torch.logsumexp(torch.stack([F.log_softmax(t / temperature, dim=1) + lw
                                        for t, lw in zip(teacher_logits, w)]), dim=0)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | list[torch.Tensor], labels: torch.Tensor,
            temperature: float, alpha: float, label_smoothing: float = 0.0,
            teacher_weights: list[float] | None = None) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    The KL term is averaged over the batch (``batchmean``, the true KL divergence); T^2 keeps its
    gradient scale independent of T. The CE term covers the labeled rows only (see cross_entropy), so
    unlabeled transfer-set images contribute the distillation term alone. Several teachers: their
    soft targets are averaged with teacher_weights (teacher_log_probs).
    """
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), teacher_log_probs(teacher_logits, t, teacher_weights),
                    reduction="batchmean", log_target=True)
    hard = cross_entropy(student_logits, labels, label_smoothing) if alpha < 1 else 0.0
    return alpha * t * t * soft + (1.0 - alpha) * hard


def mutual_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, response: Callable[..., torch.Tensor],
                alpha: float, teacher_alpha: float, label_smoothing: float = 0.0, teacher_label_smoothing: float = 0.0,
                extra_targets: Sequence[torch.Tensor] = (), weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """Online distillation's two losses, Deep Mutual Learning (Zhang et al., 2018): each model learns from
    the labels and from the other's outputs, detached (targets, not paths for gradients), so one backward
    pass of their sum trains each model on its own loss. DML's form is CE + KL(other || self); here each
    side is the offline response loss, e.g. kd_loss: (1 - alpha) CE + alpha T^2 KL at temperature T (at
    alpha 0.5 and T 1, half of DML's).

    response(logits, targets, alpha, label_smoothing, weights) -> scalar: kd_loss or dist_loss with the
    labels and temperature bound. extra_targets: fixed teachers' logits whose soft targets are averaged
    with the peer's for the student (weights: the peer's first). Returns {"student": ..., "teacher": ...}."""
    peer = teacher_logits.detach()
    targets = [peer, *extra_targets] if extra_targets else peer
    return {"student": response(student_logits, targets, alpha, label_smoothing, weights if extra_targets else None),
            "teacher": response(teacher_logits, student_logits.detach(), teacher_alpha, teacher_label_smoothing, None)}


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | list[torch.Tensor], labels: torch.Tensor,
              temperature: float, alpha: float, beta: float = 1.0, gamma: float = 1.0, label_smoothing: float = 0.0,
              teacher_weights: list[float] | None = None) -> torch.Tensor:
    """DIST (Huang et al., 2022, "Knowledge Distillation from A Stronger Teacher"): instead of matching the
    teacher's probabilities exactly (KL), match their relations: inter-class, 1 - Pearson correlation of
    each image's class probabilities; intra-class, 1 - Pearson correlation of each class's probabilities
    across the batch; both at temperature T and scaled by T^2, as in the authors' code.
    alpha * (beta * inter + gamma * intra) + (1 - alpha) * CE(s, y), CE on labeled rows only."""
    t = temperature
    p_s = F.softmax(student_logits / t, dim=1)
    p_t = teacher_log_probs(teacher_logits, t, teacher_weights).exp()
    inter = 1.0 - _pearson_rows(p_s, p_t).mean()
    intra = 1.0 - _pearson_rows(p_s.T, p_t.T).mean()
    soft = t * t * (beta * inter + gamma * intra)
    hard = cross_entropy(student_logits, labels, label_smoothing) if alpha < 1 else 0.0
    return alpha * soft + (1.0 - alpha) * hard


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, adapter: torch.nn.Module) -> torch.Tensor:
    """FitNets (Romero et al., 2015): mean squared error between the teacher's hint layer and the
    student's guided layer passed through a learned adapter (a 1x1 convolution, or a linear layer for
    flat features). The student map is resized to the teacher's spatial size first when they differ."""
    s = adapter(student_feat)
    if s.dim() == 4 and s.shape[-2:] != teacher_feat.shape[-2:]:
        s = F.adaptive_avg_pool2d(s, teacher_feat.shape[-2:])
    return F.mse_loss(s, teacher_feat)


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    sq = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1)
    return sq.clamp_min(1e-12).sqrt() * (1 - torch.eye(len(e), device=e.device))


def rkd_distance_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD distance (Park et al., 2019): Huber loss between the pairwise distance matrices of the batch,
    each divided by its mean off-diagonal distance (so the two embedding spaces need not share a scale)."""
    s, t = student_emb.flatten(1), teacher_emb.flatten(1)
    with torch.no_grad():
        td = _pairwise_distances(t)
        td = td / td[td > 0].mean()
    sd = _pairwise_distances(s)
    sd = sd / sd[sd > 0].mean()
    return F.smooth_l1_loss(sd, td)


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # diff[i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # cos of the angle at i between j and k


def rkd_angle_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD angle (Park et al., 2019): Huber loss between the cosines of the angles formed by every
    triplet of the batch's embeddings."""
    with torch.no_grad():
        ta = _angles(teacher_emb.flatten(1))
    return F.smooth_l1_loss(_angles(student_emb.flatten(1)), ta)


def _relation(a: torch.Tensor, b: torch.Tensor, heads: int, keys: torch.Tensor) -> torch.Tensor:
    """Per head, log softmax(a b^T / sqrt(d)) over the keys that are not padding: (N, heads, L, L)."""
    n, length, hidden = a.shape
    d = hidden // heads
    a = a.view(n, length, heads, d).transpose(1, 2)
    b = b.view(n, length, heads, d).transpose(1, 2)
    scores = a @ b.transpose(-1, -2) / d ** 0.5
    # a large finite value, not -inf: padded keys get probability ~0 in both models, and no inf - inf
    return F.log_softmax(scores.masked_fill(~keys[:, None, None, :], -1e9), dim=-1)


def minilm_relation_loss(student: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                         teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor], heads: int,
                         mask: torch.Tensor) -> torch.Tensor:
    """MiniLM (Wang et al., 2020) deep self-attention transfer for one layer of each model: the KL
    divergence from the teacher's self-attention distributions softmax(Q K^T / sqrt(d)) to the
    student's, plus the same for the value relation softmax(V V^T / sqrt(d)), per head, averaged over
    the tokens that are not padding. student, teacher: the (query, key, value) projections, each
    (N, L, hidden); the hidden sizes may differ, the number of heads may not. mask: (N, L), True on
    tokens. Written here: torch and transformers have no such loss."""
    loss = student[0].new_zeros(())
    queries = mask[:, None, :].expand(-1, heads, -1)  # (N, heads, L): the rows that are tokens
    for (sa, sb), (ta, tb) in (((student[0], student[1]), (teacher[0], teacher[1])),   # attention: Q K^T
                               ((student[2], student[2]), (teacher[2], teacher[2]))):  # value relation: V V^T
        log_s, log_t = _relation(sa, sb, heads, mask), _relation(ta, tb, heads, mask)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # KL(teacher || student) per query row
        loss = loss + kl[queries].mean()
    return loss
