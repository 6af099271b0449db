"""What a run costs before it is queued: measured speeds, else the paper's time column, else unknown."""

from __future__ import annotations

import json

import pytest
from run_configs import make_config

from stemsweep.plan.cost import MeasuredSpeeds, estimate, paper_epoch_minutes, sweep_wall_hours


def paper_run(size: str, stem: str, epochs: int, **changes):
    cfg = make_config(**{"model.size": size, "stem.name": stem, "data.name": "imagenet", "epochs": epochs, **changes})
    cfg.model.resources.gpus = 8
    return cfg


def test_a_paper_run_costs_the_papers_minutes_per_epoch_on_8_gpus():
    # by hand: ViT_P-4GF takes 3.8 min an ImageNet-1k epoch on 8 V100 (vit_models.csv); 50 epochs are
    # 190 min of wall time on 8 GPUs: 3.1667 h, 25.333 GPU-h
    cost = estimate(paper_run("vit_4gf", "patch", 50), MeasuredSpeeds([]))
    assert cost.source == "paper (8 V100)" and cost.device == "cuda" and cost.devices == 8
    assert cost.wall_hours == pytest.approx(190 / 60) and cost.device_hours == pytest.approx(8 * 190 / 60)
    # a quarter of the images: a quarter of the time
    subset = estimate(paper_run("vit_4gf", "patch", 50, **{"data.train_subset": 1_281_167 // 4}), MeasuredSpeeds([]))
    assert subset.device_hours == pytest.approx(cost.device_hours / 4, rel=1e-5)


def test_regnety_is_timed_by_its_flops_at_the_vits_minutes_per_gf():
    minutes = paper_epoch_minutes()
    per_gf = sorted(m / f for m, f in [(2.6, 1.1), (3.8, 3.9), (11.5, 17.5), (18.8, 35.9), (2.7, 1.1), (3.9, 4.0),
                                       (11.4, 17.7), (18.6, 35.0)])
    assert minutes["RegNetY-4GF"] == pytest.approx((per_gf[3] + per_gf[4]) / 2 * 4.096)
    cfg = make_config(**{"model.size": "regnety_4gf", "stem.name": "none", "data.name": "imagenet", "epochs": 100})
    cfg.model.resources.gpus = 8
    assert estimate(cfg, MeasuredSpeeds([])).device_hours == pytest.approx(minutes["RegNetY-4GF"] * 100 / 60 * 8)


def finished(images_per_s: float, device: str = "cuda", world_size: int = 8, **changes) -> dict:
    return {"status": "done", "model": "ViT_P-4GF", "stem": "patch", "image_size": 224, "device": device,
            "device_name": "NVIDIA H200", "world_size": world_size, "images_per_s": images_per_s, **changes}


def test_measured_runs_of_the_same_model_stem_resolution_and_device_win_over_the_paper(tmp_path):
    # two finished runs at 4,000 and 6,000 img/s on 8 GPUs: 625 img/s per GPU (the median); 50 epochs of
    # ImageNet-1k on 8 GPUs: 1,281,167 × 50 / 5,000 / 3600 = 3.5588 h of wall time
    for i, speed in enumerate((4000.0, 6000.0)):
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "summary.json").write_text(json.dumps(finished(speed)))
    (tmp_path / "other").mkdir()  # another resolution measures nothing for it
    (tmp_path / "other" / "summary.json").write_text(json.dumps(finished(1.0, image_size=160)))
    cost = estimate(paper_run("vit_4gf", "patch", 50), MeasuredSpeeds.from_runs_roots([tmp_path]))
    assert cost.source == "measured (2 runs, NVIDIA H200)"
    assert cost.wall_hours == pytest.approx(1_281_167 * 50 / 5000 / 3600)
    assert cost.device_hours == pytest.approx(8 * cost.wall_hours)


def test_with_no_record_and_no_paper_figure_the_cost_is_unknown_and_a_done_run_costs_nothing():
    cpu = make_config(**{"data.name": "fashion_mnist", "data.train_subset": 10_000})  # ViT_C-XS: not in the paper
    assert estimate(cpu, MeasuredSpeeds([])).device_hours is None
    assert estimate(cpu, MeasuredSpeeds([])).source.startswith("unknown")
    gpu_other_size = paper_run("vit_4gf", "patch", 50, **{"data.image_size": 160})  # the paper timed 224²
    assert estimate(gpu_other_size, MeasuredSpeeds([])).device_hours is None
    assert estimate(cpu, MeasuredSpeeds([]), status="done").device_hours == 0.0
    measured_cpu = MeasuredSpeeds([finished(100.0, device="cpu", world_size=1, model="ViT_C-XS", stem="conv",
                                            image_size=28)])
    assert estimate(cpu, measured_cpu).wall_hours == pytest.approx(10_000 * 10 / 100 / 3600)


def test_the_wall_time_of_a_sweep_fills_its_parallel_slots():
    costs = [estimate(paper_run("vit_4gf", "patch", e), MeasuredSpeeds([])) for e in (50, 50, 100)]
    one = costs[0].wall_hours
    assert sweep_wall_hours(costs, parallel=1) == pytest.approx(4 * one)
    assert sweep_wall_hours(costs, parallel=2) == pytest.approx(2 * one)  # 100 epochs beside 50 + 50
    assert sweep_wall_hours(costs, parallel=64) == pytest.approx(2 * one)
