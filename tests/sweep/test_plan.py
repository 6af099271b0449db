"""Every sweep file expands to the paper's grid: run counts and axes, without training anything."""

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stemsweep.cli import main as cli
from stemsweep.compose import compose_sweep, expand_grids, signature_of_overrides
from stemsweep.plan.runs import plan_sweep


def planned(name, *overrides):
    return plan_sweep(name, list(overrides)).runs


def axes(runs):
    """Each run's overrides as a dict (the last value of a key wins, as in Hydra)."""
    return [dict(o.split("=", 1) for o in run.overrides) for run in runs]


VIT3 = {"vit_1gf", "vit_4gf", "vit_18gf"}
REGNET3 = {"regnety_1gf", "regnety_4gf", "regnety_16gf"}


def test_training_length_is_24_vit_and_12_regnety_runs():
    runs = axes(planned("training_length"))
    vit = [r for r in runs if r["model"] in VIT3]
    reg = [r for r in runs if r["model"] in REGNET3]
    assert len(runs) == 36 and len(vit) == 24 and len(reg) == 12
    assert {(r["model"], r["stem"], r["epochs"]) for r in vit} == {
        (m, s, e) for m in VIT3 for s in ("patch", "conv") for e in ("50", "100", "200", "400")}
    assert {r["optimizer"] for r in vit} == {"adamw"} and {r["optimizer"] for r in reg} == {"sgd"}
    assert all("stem" not in r for r in reg)


def test_optimizer_is_the_training_length_grid_with_both_optimizers():
    runs = axes(planned("optimizer"))
    assert len(runs) == 72
    by_family = collections.Counter(("vit" if r["model"] in VIT3 else "regnety", r["optimizer"]) for r in runs)
    assert by_family == {("vit", "adamw"): 24, ("vit", "sgd"): 24, ("regnety", "adamw"): 12, ("regnety", "sgd"): 12}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_lrwd_is_3_models_by_64_seeded_log_uniform_draws(optimizer):
    runs = planned(f"lrwd_{optimizer}")
    assert len(runs) == 192 and len({r.signature for r in runs}) == 192
    overrides = axes(runs)
    models = collections.Counter((r["model"], r.get("stem")) for r in overrides)
    assert models == {("vit_4gf", "patch"): 64, ("vit_4gf", "conv"): 64, ("regnety_4gf", None): 64}
    assert {r["optimizer"] for r in overrides} == {optimizer}
    assert sorted({int(r["lrwd.draw"]) for r in overrides}) == list(range(64))
    again = planned(f"lrwd_{optimizer}")
    assert [r.signature for r in again] == [r.signature for r in runs]  # the same draws every time


def test_peak_is_every_model_at_400_epochs_and_in21k_pretraining_then_finetuning():
    runs = planned("peak")
    overrides = axes(runs)
    scratch = [r for r in overrides if "+stage" not in r]
    assert len(runs) == 23 and len(scratch) == 11
    assert {(r["model"], r.get("stem"), r["optimizer"]) for r in scratch} == {
        *{(m, s, "adamw") for m in VIT3 | {"vit_36gf"} for s in ("patch", "conv")},
        *{(m, None, "sgd") for m in REGNET3}}
    pretrain = {(r["model"], r["stem"]): run for r, run in zip(overrides, runs) if r.get("+stage") == "in21k_pretrain"}
    finetune = [(r, run) for r, run in zip(overrides, runs) if r.get("+stage") == "in1k_finetune"]
    big = {"vit_4gf", "vit_18gf", "vit_36gf"}
    assert set(pretrain) == {(m, s) for m in big for s in ("patch", "conv")} and len(finetune) == 6
    # each fine-tuning run starts from the pre-training run of its model and stem, by signature
    _, compose_job = compose_sweep("peak", [])
    from stemsweep.config import paths_unchecked, validated_config

    for r, run in finetune:
        with paths_unchecked():
            cfg = validated_config(compose_job(run.overrides))
        assert cfg.init_from == pretrain[(r["model"], r["stem"])].signature
        assert cfg.data.name == "imagenet" and cfg.epochs == 20
        if r["model"] == "vit_4gf":  # a tenth of the tuned lr (Table 4: patch 2e-3, conv 1e-3)
            assert cfg.optimizer.lr == pytest.approx({"patch": 2e-4, "conv": 1e-4}[r["stem"]])
    with paths_unchecked():
        pre = validated_config(compose_job(next(iter(pretrain.values())).overrides))
    assert (pre.data.name, pre.epochs, pre.batch_size, pre.init_from) == ("imagenet21k", 90, 4096, None)


@pytest.mark.parametrize("name", ["mini_training_length", "mini_optimizer", "mini_lrwd_adamw", "mini_lrwd_sgd",
                                  "mini_peak"])
def test_every_mini_sweep_plans_on_the_embedded_data(name):
    runs = planned(name)
    assert runs and len({r.signature for r in runs}) == len(runs)


def test_command_line_overrides_replace_a_grid_axis():
    jobs = expand_grids([{"model": "vit_xs", "stem": "patch,conv", "epochs": "2,4"}], ["epochs=3", "seed=1"])
    assert len(jobs) == 2 and all("epochs=3" in j and "seed=1" in j for j in jobs)


def test_plan_expands_sweeping_overrides_as_the_run_command_does(capsys):
    # `python -m stemsweep.run -m +sweeps=mini_lrwd_adamw seed=0,1` sweeps the seeds on top of the grids
    # (test_hydra_suites checks that plan's runs are the sweep's)
    one_seed = planned("mini_lrwd_adamw")
    two_seeds = planned("mini_lrwd_adamw", "seed=0,1")
    assert [r.signature for r in two_seeds[::2]] == [r.signature for r in one_seed]
    assert [axes([r])[0]["seed"] for r in two_seeds] == ["0", "1"] * len(one_seed)
    assert cli(["plan", "mini_training_length", "seed=range(0,3)"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("27 runs: ") and lines[0].endswith(" seed=0") and lines[2].endswith(" seed=2")


def test_plan_command_prints_one_line_per_run_and_the_count(capsys):
    assert cli(["plan", "mini_peak"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"{len(lines) - 1} runs: ")
    # each run with its cost: none of these CPU runs has been measured, and the paper timed GPUs only
    assert all(re.match(r"[0-9a-f]{10}   new +unknown CPU-h  unknown: .* lr/wd: tuning mini +model=", line)
               for line in lines[:-1])
    assert lines[-1].endswith("runs: unknown CPU-h, wall unknown h at 1 at once")


def test_an_unknown_or_unparsable_sweep_file_is_one_line_at_every_entry_point(capsys):
    assert cli(["plan", "no_such_sweep"]) == 2
    err = capsys.readouterr().err
    assert "no_such_sweep" in err and "the sweeps are: " in err and "mini_peak" in err
    broken = Path(__file__).resolve().parents[2] / "sweeps" / f"broken_{os.getpid()}.yaml"
    broken.write_text("hydra:\n  sweeper:\n    grids:\n      - {model: vit_xs\n      - {stem: conv}\n")
    where = f"{broken}:5:9: not valid YAML: while parsing a flow mapping, expected ',' or '}}', but got '{{'"
    try:
        assert cli(["plan", broken.stem]) == 2
        assert capsys.readouterr().err == f"stemsweep plan: error: sweep file {where}\n"
        assert cli(["status", broken.stem]) == 2
        assert capsys.readouterr().err == f"stemsweep status: error: sweep file {where}\n"
        run = subprocess.run([sys.executable, "-m", "stemsweep.run", "-m", f"+sweeps={broken.stem}"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and run.stderr == f"stemsweep: sweep file {where}\n", run.stderr
    finally:
        broken.unlink()


def test_plan_piped_into_a_reader_that_stops_early_ends_quietly():
    # `stemsweep plan mini_peak | head -3`, at its most abrupt: the reader has gone before the plan
    # prints its first line. No traceback, exit status 1.
    plan = subprocess.Popen([sys.executable, "-m", "stemsweep.cli", "plan", "mini_peak"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    plan.stdout.close()
    err = plan.stderr.read().decode()
    assert plan.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_an_interpolation_in_a_grid_is_resolved_per_job():
    # Hydra resolves a sweeper's config when it instantiates it: read from there, every fine-tune got
    # seed 0's source. A grid is read as written, so each job resolves it in its own config.
    source = "model=vit_xs stem=conv data=synthetic logger=none epochs=1 schedule.warmup_epochs=0"
    sweep = Path(__file__).resolve().parents[2] / "sweeps" / f"interpolated_{os.getpid()}.yaml"
    sweep.write_text("# @package _global_\nhydra:\n  sweeper:\n    grids:\n      - {model: vit_xs, stem: conv, "
                     "data: synthetic, logger: none, epochs: '2', schedule.warmup_epochs: '0', seed: '0,1', "
                     f"init_from: \"${{run_signature:'{source} seed=${{seed}}'}}\"}}\n")
    try:
        runs = planned(sweep.stem)
    finally:
        sweep.unlink()
    assert [run.config.init_from for run in runs] == [signature_of_overrides(f"{source} seed={s}") for s in (0, 1)]
