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


def test_warmup_then_cosine():
    from edgedistill.train import lr_factor

    assert [round(lr_factor(s, 10, 4), 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, 4) == 1.0 and abs(lr_factor(7, 10, 4) - 0.5) < 1e-9 and lr_factor(10, 10, 4) < 1e-9
    assert lr_factor(0, 10, 0) == 1.0  # no warm-up: plain cosine


def test_early_stopping_keeps_the_best_epoch(tmp_path, monkeypatch):
    """Scripted validation accuracies 50, 70, 60, 65, 40...: best epoch 2; patience 2 stops after epoch 4;
    keep_best ends with epoch 2's weights."""
    import edgedistill.train as train
    from edgedistill.config import TrainConfig

    scripted = iter([50.0, 70.0, 60.0, 65.0, 40.0, 30.0])
    monkeypatch.setattr(train, "accuracy", lambda logits, labels: next(scripted))
    saved = []
    real_save = train._save_atomic
    monkeypatch.setattr(train, "_save_atomic", lambda state, path: (saved.append({k: v.clone() for k, v in state["model"].items()}),
                                                                      real_save(state, path)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(32, 1, 2, 2).numpy(), torch.randint(0, 3, (32,)).numpy()
    cfg = TrainConfig(epochs=6, batch_size=8, lr=0.1, early_stopping_patience=2, keep_best=True)
    result = train.fit(model, (x, y), (x, y), cfg=cfg, param_groups=[{"params": list(model.parameters()), "lr": 0.1}],
                       loss_fn=lambda lg, xb, yb, idx: nn.functional.cross_entropy(lg, yb), seed=0,
                       checkpoint=tmp_path / "ck.pt", desc="t", progress=False)
    assert [h["val_accuracy"] for h in result.history] == [50.0, 70.0, 60.0, 65.0]
    assert result.best_epoch == 2 and result.final_epoch == 2 and result.val_accuracy == 70.0
    assert all(torch.equal(model.state_dict()[k], saved[1][k]) for k in saved[1])  # epoch 2's weights
    assert not all(torch.equal(saved[3][k], saved[1][k]) for k in saved[1])  # not simply the last ones


def test_partial_finetuning_trains_only_the_last_blocks(tmp_path):
    from edgedistill.config import DataConfig, TeacherConfig, load_preset
    from edgedistill.models import weights_file
    from edgedistill.runner import Context
    from edgedistill.stages import finetune, prepare

    data = tmp_path / "data"
    data.mkdir()
    prepare.run(prepare.PrepareConfig(data=DataConfig(kind="digits", image_size=16, max_per_class=15), seed=0), {},
                data, Context(work=tmp_path, progress=False))
    preset = load_preset("mobilenet_v2_imagenet", "teachers")
    cfg = finetune.FinetuneConfig(teacher=TeacherConfig(strategy="partial", trainable_blocks=2, epochs=1, batch_size=16,
                                                        lr=0.01), model=preset, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    metrics = finetune.run(cfg, {"dataset": data}, out, Context(work=tmp_path, progress=False))
    pretrained = torch.load(weights_file(preset.weights), weights_only=True)
    trained = torch.load(out / "model.pt", weights_only=True)
    # torchvision MobileNetV2: features.0 .. features.18; the last two (17, 18) and the new head train
    assert torch.equal(trained["features.16.conv.0.0.weight"], pretrained["features.16.conv.0.0.weight"])
    assert torch.equal(trained["features.16.conv.0.1.running_mean"], pretrained["features.16.conv.0.1.running_mean"])
    assert not torch.equal(trained["features.18.0.weight"], pretrained["features.18.0.weight"])
    expected = sum(v.numel() for k, v in trained.items() if k.startswith(("features.17.", "features.18.", "classifier.1."))
                   and "running" not in k and "num_batches" not in k)
    assert metrics["trainable_params"] == expected
