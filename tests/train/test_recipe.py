"""The recipe's pieces against their formulas."""

import copy
import math

import pytest
import torch
from torch import nn

from stemsweep.config import AugConfig, OptimizerConfig, ScheduleConfig
from stemsweep.train.distributed import DistEnv
from stemsweep.train.ema import ModelEma, ema_alpha
from stemsweep.train.loop import EpochBatches, batch_mixer
from stemsweep.train.optim import build_optimizer, param_groups, scaled_lr

PAPER = ScheduleConfig(name="cosine", warmup_epochs=5, warmup_factor=0.1, min_lr=0.005, step="epoch")


def test_schedule_matches_pycls_formula_at_known_points():
    from stemsweep.train.schedule import lr_factor

    # epoch 0: cosine 1 × warm-up factor 0.1
    assert lr_factor(PAPER, 0, 100) == pytest.approx(0.1)
    # mid warm-up, epoch 2 of 5: cos(π·2/100) part times 0.1·0.6 + 0.4
    cos = 0.5 * (1 + math.cos(math.pi * 2 / 100))
    assert lr_factor(PAPER, 2.7, 100) == pytest.approx(((1 - 0.005) * cos + 0.005) * (0.1 * 0.6 + 0.4))
    # after warm-up: pure cosine with floor; halfway the factor is (1 + 0.005) / 2
    assert lr_factor(PAPER, 50, 100) == pytest.approx((1 - 0.005) * 0.5 + 0.005)
    # at the end the floor, 0.5% of the base lr
    assert lr_factor(PAPER, 100, 100) == pytest.approx(0.005)


def test_schedule_steps_once_per_epoch_or_every_iteration():
    from stemsweep.train.schedule import lr_factor

    assert lr_factor(PAPER, 7.0, 50) == lr_factor(PAPER, 7.9, 50)
    smooth = ScheduleConfig(name="cosine", warmup_epochs=1, warmup_factor=0.1, min_lr=0.005, step="iteration")
    assert lr_factor(smooth, 0.5, 10) == pytest.approx(
        ((1 - 0.005) * 0.5 * (1 + math.cos(math.pi * 0.05)) + 0.005) * (0.1 * 0.5 + 0.5))
    values = [lr_factor(smooth, e / 10, 10) for e in range(10, 100)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decaying after warm-up


def test_ema_alpha_is_the_papers_formula():
    # ImageNet, batch 2048, 100 epochs, every 32 steps: 1e-5 · 2048 / 100 · 32
    assert ema_alpha(1e-5, 2048, 100, 32, 1_281_167) == pytest.approx(1e-5 * 2048 / 100 * 32)
    assert ema_alpha(1.0, 2048, 1, 32, 1000) == 1.0  # capped at 1
    # null alpha keeps the paper's horizon α·updates = 1e-5·1.28M on a smaller data set
    alpha = ema_alpha(None, 128, 10, 32, 10_000)
    updates = 10_000 * 10 / 128 / 32
    assert alpha * updates == pytest.approx(1e-5 * 1_281_167)


def test_ema_update_blends_every_float_tensor():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEma(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    ema.update(model, 0.25)
    for name, value in ema.module.state_dict().items():
        target = model.state_dict()[name]
        if value.dtype.is_floating_point:
            assert torch.allclose(value, 0.75 * before[name] + 0.25 * target)
    ema.update(model, 1.0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ema.module.state_dict().items())


def test_no_weight_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 2))
    model.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))  # a ViT's position embedding gets decay
    decay, no_decay = param_groups(model, 0.24)
    assert decay["weight_decay"] == 0.24 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    assert decayed == {id(model[0].weight), id(model[4].weight), id(model.pos_embed)}
    assert len(no_decay["params"]) == 6  # conv bias, BN weight+bias, LN weight+bias, linear bias


def test_optimizers_and_lr_scaling():
    model = nn.Linear(4, 2)
    adamw = build_optimizer(OptimizerConfig(name="adamw", lr=1e-3, wd=0.24), model, 512)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["lr"] == pytest.approx(1e-3 * 512 / 2048)
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)
    sgd = build_optimizer(OptimizerConfig(name="sgd", lr=2.54, wd=2.4e-5), model, 2048)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["lr"] == pytest.approx(2.54) == scaled_lr(2.54, 2048)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_optimizer_takes_the_default_implementations_step(name):
    # build_optimizer picks PyTorch's fused kernel on CPU; its steps must be the standard update.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3))
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    cfg = OptimizerConfig(name=name, lr=0.5, wd=0.05)
    fused = build_optimizer(cfg, model, 256)
    assert fused.defaults["fused"] is True
    groups = param_groups(reference, cfg.wd)
    lr = scaled_lr(cfg.lr, 256)
    if name == "adamw":
        plain = torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), foreach=False)
    else:
        plain = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=False)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(5):
        for net, opt in ((model, fused), (reference, plain)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    moved = [(a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters())]
    assert max(moved) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(model.parameters(), initial.parameters())) > 1e-2


def test_training_applies_aug_label_smoothing_to_its_loss(tmp_path, run_in_process, monkeypatch):
    # A real run (2 steps) with every cross-entropy the process computes watched: the training loss is the
    # one that takes cfg.aug.label_smoothing, not a default or another aug setting's.
    seen = []
    cross_entropy = torch.nn.functional.cross_entropy

    def watched(logits, targets, *args, **kwargs):
        loss = cross_entropy(logits, targets, *args, **kwargs)
        if loss.requires_grad:  # training, not evaluation
            seen.append(kwargs.get("label_smoothing", 0.0))
        return loss
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", watched)
    run_in_process(f"runs_root={tmp_path}", "data=synthetic", "data.num_train=128", "data.num_test=64",
                   "batch_size=64", "epochs=1", "schedule.warmup_epochs=0", "aug=none", "aug.label_smoothing=0.3",
                   "logger=none", "threads=1")
    assert seen == [0.3, 0.3]


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_give_soft_targets_of_the_batch_shape(mixup, cutmix):
    aug = AugConfig(name="x", mixup_alpha=mixup, cutmix_alpha=cutmix)
    mixer = batch_mixer(aug, num_classes=10)
    images, labels = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    mixed, targets = mixer(images, labels)
    assert mixed.shape == images.shape and targets.shape == (8, 10)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert batch_mixer(AugConfig(name="none"), 10) is None


def test_epoch_batches_split_one_global_batch_among_processes():
    single = list(EpochBatches(100, 8, seed=1, epoch=3, env=DistEnv()))
    assert len(single) == 12 and all(len(b) == 8 for b in single)  # partial batch dropped
    halves = [list(EpochBatches(100, 8, 1, 3, DistEnv(rank=r, world_size=2))) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == single
    assert single != list(EpochBatches(100, 8, seed=1, epoch=4, env=DistEnv()))  # new order each epoch


def test_scale_warnings_name_each_setting_that_means_less_at_small_scale():
    from run_configs import make_config

    from stemsweep.train.scale import scale_warnings

    quiet = make_config(**{"schedule.warmup_epochs": 1.0, "schedule.step": "iteration"})
    assert scale_warnings(quiet, steps_per_epoch=625, train_images=1_281_167, test_images=50_000,
                          ema_alpha=0.006) == []
    warm = make_config(**{"schedule.warmup_epochs": 0.01, "schedule.step": "iteration"})
    [short] = scale_warnings(warm, 20, 1280, 5000, 0.006)
    assert short.startswith("schedule.warmup_epochs=0.01 is less than one of the 20 steps an epoch")
    whole = make_config(epochs=1, **{"schedule.warmup_epochs": 0.5, "schedule.step": "epoch"})
    assert any("keeps all of its 1 epoch at the warm-up lr" in w for w in scale_warnings(whole, 100, 6400, 5000, 0.1))
    copy = scale_warnings(make_config(), 100, 6400, 5000, 1.0)
    assert any(w.startswith("ema: α = min(1, alpha · batch / epochs · period) is 1") for w in copy)
    stale = make_config(epochs=2, **{"schedule.warmup_epochs": 0.0})
    [ema] = scale_warnings(stale, 64, 8192, 5000, 0.001)
    assert "after its 6 updates (α=0.001, no warm-up) the EMA will still be 99% the untrained" in ema
    [few] = scale_warnings(quiet, 625, 1_281_167, 500, 0.006)
    assert few.startswith("the test errors are counted over 500 images (data.test_subset=None): each image "
                          "is 0.2 points")
