"""What a study's plan refuses before anything runs or is queued, and where each run's lr/wd and data come from."""

from __future__ import annotations

import pytest

from stemsweep.cli import main
from stemsweep.errors import ConfigError
from stemsweep.study.plan import plan_study
from stemsweep.study.spec import load_study

CPU = ["data=synthetic", "logger=none", "schedule.warmup_epochs=0", "epochs=1"]


def test_one_data_root_for_two_data_sets_is_refused_and_each_set_takes_its_own(tmp_path, capsys):
    # as in sweeps/peak.yaml, ImageNet-21k pre-training beside ImageNet-1k runs
    path = tmp_path / "peak.yaml"
    path.write_text(f"overrides: [runs_root={tmp_path / 'runs'}, logger=none]\nstages:\n"
                    "  peak: {overrides: [model=vit_1gf, stem=conv, optimizer=adamw, 'data=imagenet,imagenet21k']}\n")
    assert main(["study", "run", str(path), "data.root=/data/imagenet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.root=/data/imagenet is not allowed here: it would reach runs of 2 data " \
        "sets (imagenet, imagenet21k); name each data set's root instead (data_roots.imagenet=… " \
        "data_roots.imagenet21k=…)" in err, err
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written

    [plan] = plan_study(load_study(str(path)), ["data_roots.imagenet=/data/in1k", "data_roots.imagenet21k=/data/in21k"])
    roots = {(run.config.data.name, run.config.data.root) for run in plan.runs}
    assert roots == {("imagenet", "/data/in1k"), ("imagenet21k", "/data/in21k")}


@pytest.mark.parametrize("untuned", [None, "vit_s"])
def test_a_run_the_stages_tuning_has_no_entry_for_is_refused_unless_the_study_says_it_is_meant(tmp_path, untuned):
    # conf/tuning/mini.yaml tunes vit_xs and regnety_xs; vit_s would train at its own lr/wd
    path = tmp_path / "t.yaml"
    extra = f", untuned: [{untuned}]" if untuned else ""
    path.write_text(f"overrides: [runs_root={tmp_path}, {', '.join(CPU)}]\nstages:\n"
                    f"  s: {{overrides: [tuning=mini, optimizer=adamw, stem=conv, 'model=vit_xs,vit_s']{extra}}}\n")
    study = load_study(str(path))
    if untuned is None:
        with pytest.raises(ConfigError, match=r"stage s: run `.*model=vit_s.*` selects tuning=mini, which has no "
                                             r"entry for vit_s conv adamw: it would train at vit_s's own lr/wd"):
            plan_study(study)
        return
    [plan] = plan_study(study)
    assert [run.lrwd_label for run in plan.runs] == ["tuning mini", "model"]


def test_a_stage_after_a_pending_tune_waits_on_it_only_for_the_cells_it_tunes(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(f"overrides: [runs_root={tmp_path}, {', '.join(CPU)}, stem=conv, optimizer=adamw]\nstages:\n"
                    "  lrwd: {overrides: [sweep=l, model=vit_xs, 'lrwd.draw=0,1']}\n"
                    f"  tune: {{tune: {{from: [lrwd], out: test_pending_{tmp_path.name}}}, needs: [lrwd]}}\n"
                    f"  after: {{overrides: [sweep=a, tuning=test_pending_{tmp_path.name}, 'model=vit_xs,vit_s'], "
                    "untuned: [vit_s], needs: [tune]}\n")
    plans = {p.stage.name: p for p in plan_study(load_study(str(path)))}
    xs, s = plans["after"].runs
    assert (xs.signature, xs.lrwd_label, xs.status) == (None, f"after tune test_pending_{tmp_path.name}", None)
    assert "tuning=test_pending_" in " ".join(xs.overrides)  # its own overrides, not those it was planned with
    assert s.signature is not None and s.lrwd_label == "model"  # not tuned: known before tune
    assert plans["after"].waits_on_tune == ["tune"]
