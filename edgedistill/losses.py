"""Distillation losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    The KL term is averaged over the batch (``batchmean``, the true KL divergence); T^2 keeps its
    gradient scale independent of T.
    """
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1.0 - alpha) * hard


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
