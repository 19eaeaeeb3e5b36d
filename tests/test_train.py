"""Pieces of the training loop."""
import torch
from torch import nn

from edgedistill.train import recompute_bn_stats


def test_precise_bn_replaces_stale_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, momentum=0.01), nn.BatchNorm2d(2))
    frozen = model[2]
    model.train()
    frozen.eval()  # a frozen layer keeps its statistics
    x = torch.randn(64, 1, 4, 4) * 3 + 5
    order = torch.arange(64)
    recompute_bn_stats(model, x, order, batch_size=16, batches=3, device=torch.device("cpu"))
    with torch.no_grad():
        feats = model[0](x[:48])
    expected_mean = feats.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-4)  # not 0.01 of the way there
    assert model[1].momentum == 0.01  # restored
    assert torch.equal(frozen.running_mean, torch.zeros(2)) and torch.equal(frozen.running_var, torch.ones(2))


def test_precise_bn_off_changes_nothing():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    before = model[1].running_mean.clone()
    recompute_bn_stats(model, torch.randn(32, 1, 2, 2) + 3, torch.arange(32), 16, 0, torch.device("cpu"))
    assert torch.equal(model[1].running_mean, before)
