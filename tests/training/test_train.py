"""Pieces of the training loop."""
import torch
from torch import nn

from edgedistill.training.loop import recompute_bn_stats

from conftest import gray_batches


def test_precise_bn_replaces_stale_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, momentum=0.01), nn.BatchNorm2d(2))
    frozen = model[2]
    model.train()
    frozen.eval()  # a frozen layer keeps its statistics
    x = torch.randn(64, 1, 4, 4) * 3 + 5
    order = torch.arange(64)
    recompute_bn_stats(model, lambda idx: model(x[idx]), order, batch_size=16, batches=3)
    with torch.no_grad():
        feats = model[0](x[:48])
    expected_mean = feats.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-4)  # not 0.01 of the way there
    assert model[1].momentum == 0.01  # restored
    assert torch.equal(frozen.running_mean, torch.zeros(2)) and torch.equal(frozen.running_var, torch.ones(2))


def test_precise_bn_off_changes_nothing():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    before = model[1].running_mean.clone()
    x = torch.randn(32, 1, 2, 2) + 3
    recompute_bn_stats(model, lambda idx: model(x[idx]), torch.arange(32), 16, 0)
    assert torch.equal(model[1].running_mean, before)


def test_warmup_then_cosine():
    from edgedistill.training.loop import lr_factor

    assert [round(lr_factor(s, 10, 4), 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, 4) == 1.0 and abs(lr_factor(7, 10, 4) - 0.5) < 1e-9 and lr_factor(10, 10, 4) < 1e-9
    assert lr_factor(0, 10, 0) == 1.0  # no warm-up: plain cosine


def test_early_stopping_keeps_the_best_epoch(tmp_path, monkeypatch):
    """Scripted validation accuracies 50, 70, 60, 65, 40...: best epoch 2; patience 2 stops after epoch 4;
    keep_best ends with epoch 2's weights."""
    import edgedistill.training.loop as train
    from edgedistill.training.config import TrainConfig

    scripted = iter([50.0, 70.0, 60.0, 65.0, 40.0, 30.0])
    monkeypatch.setattr(train, "accuracy", lambda logits, labels: next(scripted))
    saved = []
    real_save = train._save_atomic
    monkeypatch.setattr(train, "_save_atomic", lambda state, path: (saved.append({k: v.clone() for k, v in state["model"].items()}),
                                                                      real_save(state, path)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    cfg = TrainConfig(epochs=6, batch_size=8, lr=0.1, early_stopping_patience=2, keep_best=True)
    data = gray_batches(32, cfg)
    result = train.fit(model, data, (data.clean(range(len(data))).numpy(), data.labels.numpy()), cfg=cfg, param_groups=[{"params": list(model.parameters()), "lr": 0.1}],
                       loss_fn=lambda lg, xb, yb, idx: nn.functional.cross_entropy(lg, yb), seed=0,
                       checkpoint=tmp_path / "ck.pt", desc="t", progress=False)
    assert [h["val_accuracy"] for h in result.history] == [50.0, 70.0, 60.0, 65.0]
    assert result.best_epoch == 2 and result.final_epoch == 2 and result.val_accuracy == 70.0
    assert all(torch.equal(model.state_dict()[k], saved[1][k]) for k in saved[1])  # epoch 2's weights
    assert not all(torch.equal(saved[3][k], saved[1][k]) for k in saved[1])  # not simply the last ones


def _finetune_mobilenet(tmp_path, **teacher) -> tuple[dict, dict, dict]:
    """Fine-tune the real MobileNetV2 on a few digits; (pretrained state, trained state, metrics)."""
    from edgedistill.core.stage import Context
    from edgedistill.data.config import DataConfig
    from edgedistill.models.architectures import weights_file
    from edgedistill.models.presets import load_preset
    from edgedistill.stages import finetune, prepare
    from edgedistill.stages.finetune import TeacherConfig

    data = tmp_path / "data"
    data.mkdir()
    prepare.run(prepare.PrepareConfig(data=DataConfig(kind="digits", image_size=16, max_per_class=15), seed=0), {},
                data, Context(work=tmp_path, progress=False))
    preset = load_preset("mobilenet_v2_imagenet", "teachers")
    cfg = finetune.FinetuneConfig(teacher=TeacherConfig(batch_size=16, lr=0.01, **teacher), model=preset, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    metrics = finetune.run(cfg, {"dataset": data}, out, Context(work=tmp_path, progress=False))
    return torch.load(weights_file(preset.weights), weights_only=True), torch.load(out / "model.pt", weights_only=True), metrics


def test_partial_finetuning_trains_only_the_last_blocks(tmp_path):
    pretrained, trained, metrics = _finetune_mobilenet(tmp_path, strategy="partial", trainable_blocks=2, epochs=1)
    # torchvision MobileNetV2: features.0 .. features.18; the last two (17, 18) and the new head train
    assert torch.equal(trained["features.16.conv.0.0.weight"], pretrained["features.16.conv.0.0.weight"])
    assert torch.equal(trained["features.16.conv.0.1.running_mean"], pretrained["features.16.conv.0.1.running_mean"])
    assert not torch.equal(trained["features.18.0.weight"], pretrained["features.18.0.weight"])
    expected = sum(v.numel() for k, v in trained.items() if k.startswith(("features.17.", "features.18.", "classifier.1."))
                   and "running" not in k and "num_batches" not in k)
    assert metrics["trainable_params"] == expected


def test_gradual_unfreezing_opens_one_block_per_epoch(tmp_path):
    """Epoch 1 trains the head only, epoch 2 also the last block (features.18), epoch 3 also features.17."""
    pretrained, trained, metrics = _finetune_mobilenet(tmp_path, strategy="gradual", unfreeze_every=1, epochs=2)
    assert torch.equal(trained["features.17.conv.0.0.weight"], pretrained["features.17.conv.0.0.weight"])
    assert torch.equal(trained["features.17.conv.0.1.running_mean"], pretrained["features.17.conv.0.1.running_mean"])
    assert not torch.equal(trained["features.18.0.weight"], pretrained["features.18.0.weight"])
    assert metrics["trainable_params"] == sum(v.numel() for k, v in trained.items()
                                              if k.startswith(("features.18.", "classifier.1."))
                                              and "running" not in k and "num_batches" not in k)


def test_mixed_precision_and_channels_last_train_on_the_cpu(tmp_path):
    """The CUDA options run the same code on the CPU: bf16 autocast, channels_last; fp16 needs CUDA."""
    import pytest

    import edgedistill.training.loop as train
    from edgedistill.core.errors import ConfigError
    from edgedistill.training.config import TrainConfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, precision="bf16", channels_last=True, device="cpu")
    data = gray_batches(32, cfg, size=4)
    seen = []
    result = train.fit(model, data, (data.clean(range(len(data))).numpy(), data.labels.numpy()), cfg=cfg,
                       param_groups=[{"params": list(model.parameters()), "lr": cfg.lr}],
                       loss_fn=lambda lg, xb, yb, idx: (seen.append((lg.dtype, xb.is_contiguous(memory_format=torch.channels_last))),
                                                        nn.functional.cross_entropy(lg, yb))[1],
                       seed=0, checkpoint=tmp_path / "ck.pt", desc="t", progress=False)
    assert seen[0] == (torch.bfloat16, True) and len(result.history) == 2
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay fp32
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        train.fit(model, data, (data.clean(range(len(data))).numpy(), data.labels.numpy()), cfg=cfg.model_copy(update={"precision": "fp16"}),
                  param_groups=[{"params": list(model.parameters()), "lr": cfg.lr}], loss_fn=None, seed=0,
                  checkpoint=tmp_path / "ck2.pt", desc="t", progress=False)


def test_loader_workers_change_nothing_but_speed(tmp_path):
    """Augmentation and MixUp draws are keyed by (seed, epoch, image) and (seed, epoch, step): the
    weights after training are the same, bit for bit, with the batches made here or by 2 workers."""
    import edgedistill.training.loop as train
    from edgedistill.training.config import TrainConfig

    weights = []
    for workers in (0, 2):
        cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, augment="strong", mixup_alpha=0.4, workers=workers,
                          precise_bn_batches=2, device="cpu")
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
        data = gray_batches(40, cfg, size=8)
        train.fit(model, data, (data.clean(range(len(data))).numpy(), data.labels.numpy()), cfg=cfg,
                  param_groups=[{"params": list(model.parameters()), "lr": cfg.lr}],
                  loss_fn=lambda lg, xb, yb, idx: nn.functional.cross_entropy(lg, yb), seed=3,
                  checkpoint=tmp_path / f"ck{workers}.pt", desc="t", progress=False)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_loader_leaves_the_global_generator_alone():
    """Dropout and the like draw from torch's global generator, seeded per epoch by the training loop;
    a DataLoader without a generator of its own draws from it at every epoch and shifts those draws."""
    from edgedistill.training.config import TrainConfig
    from edgedistill.training.loader import loader

    feed = loader(gray_batches(16, TrainConfig()), workers=0, pin_memory=False)
    feed.sampler.items = [(0, 0, torch.arange(8)), (0, 1, torch.arange(8, 16))]
    torch.manual_seed(5)
    before = torch.get_rng_state()
    assert len(list(feed)) == 2
    assert torch.equal(torch.get_rng_state(), before)


def test_the_schedule_waits_when_fp16s_scaler_skips_a_step():
    """An overflowing step (inf gradients) is skipped by the scaler, which lowers its scale: the
    learning-rate schedule must not advance for it (fp16 needs CUDA; the scaler's logic is the CPU's)."""
    from edgedistill.training.loop import optimizer_stepped

    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    scale, stepped = scaler.get_scale(), []
    for value in (float("inf"), 1.0, 1.0):
        optimizer.zero_grad()
        scaler.scale(model(torch.full((1, 2), value)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
        ok, scale = optimizer_stepped(scaler, scale)
        stepped.append(ok)
    assert stepped == [False, True, True] and scale == 2.0 ** 15
    assert optimizer_stepped(torch.amp.GradScaler("cpu", enabled=False), None) == (True, None)
