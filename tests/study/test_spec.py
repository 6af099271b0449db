"""Study files: the committed ones load, and a bad one is one line that names what is wrong."""

from __future__ import annotations

import pytest

from stemsweep.config import ConfigError
from stemsweep.study.spec import load_study, stage_order, study_names


def test_the_committed_studies_load_with_their_stages_in_order():
    assert {"mini", "mini4", "paper"} <= set(study_names())
    paper = load_study("paper")
    assert [s.name for s in stage_order(paper)] == ["lrwd_adamw", "lrwd_sgd", "tune", "training_length", "optimizer",
                                                    "peak", "report"]
    assert paper.stage("tune").tune_from == ("lrwd_adamw", "lrwd_sgd") and paper.stage("tune").tuning == "paper"
    assert [t.name for t in paper.upstream_tunes(paper.stage("report"))] == ["tune"]
    assert paper.runs_root() == "runs/paper" and paper.runs_root(["runs_root=/data/runs"]) == "/data/runs"
    mini4 = load_study("mini4")
    assert mini4.sweep_name(mini4.stage("lrwd")) == "mini4_lrwd"  # tune reads the runs by this label


@pytest.mark.parametrize("text, message", [
    ("stages: {a: {sweep: no_such_sweep}}", "sweep 'no_such_sweep' is not allowed: there is no"),
    ("stages: {a: {overrides: [epochs=1]}, b: {overrides: [epochs=2], needs: [c]}}",
     "stage 'b' needs 'c', which is not a stage (the stages: a, b)"),
    ("stages: {a: {overrides: [x=1], needs: [b]}, b: {overrides: [x=2], needs: [a]}}", "need each other in a circle"),
    ("stages: {a: {overrides: [x=1]}, t: {tune: {from: [a], out: x}}}", "tunes from 'a': list it under needs too"),
    ("stages: {a: {overrides: [x=1], report: {out: r}}}", "is one kind of stage"),
    ("stages: {a: {overides: [x=1]}}", "key 'overides' is not allowed (allowed: needs, overrides, sweep, untuned)"),
    ("stage: {a: {}}", "a study is a mapping with `stages:`"),
    ("stages: {a: [", "not valid YAML"),
])
def test_a_bad_study_file_is_one_line_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as error:
        load_study(str(path))
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_comparison_the_test_refuses_is_named_once_after_its_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stages: {a: {overrides: [x=1]}}\n"
                    "comparisons: {c: {stage: a, a: [stem=conv], b: [stem=patch], statistic: lrwd_edf, wave: 0}}\n")
    with pytest.raises(ConfigError) as error:
        load_study(str(path))
    assert str(error.value) == f"study file {path}: comparison 'c': wave=0 is not allowed: an integer >= 1"


def test_an_unknown_study_names_the_ones_there_are():
    with pytest.raises(ConfigError, match="study 'nope' is not allowed: there is no .*nope.yaml; the studies are: "
                                          ".*mini, mini4, mini_adaptive, paper, paper_adaptive"):
        load_study("nope")


@pytest.mark.parametrize("override, message", [
    ("notanoverride", "override 'notanoverride' is not allowed: Error parsing override 'notanoverride'; give KEY="),
    ("model=nosuch", "sweep 'mini_lrwd_adamw': In 'config': Could not find 'model/nosuch'"),
    ("optimizer.lr=-1", "optimizer.lr=-1.0 is not allowed: it must be a positive number"),
])
def test_a_bad_override_to_a_study_command_is_one_line(capsys, override, message):
    from stemsweep.cli import main

    assert main(["study", "plan", "mini", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stemsweep study: error: ") and message in err and err.count("\n") == 1, err


def test_a_stage_the_study_file_does_not_have_is_one_line(tmp_path):
    # what a SLURM task meets when its study file lost the stage it was submitted for
    path = tmp_path / "s.yaml"
    path.write_text("stages: {a: {overrides: [epochs=1]}, b: {overrides: [epochs=2]}}\n")
    with pytest.raises(ConfigError, match=r"^stage 'gone' is not allowed: study file .*s.yaml has no such stage "
                                          r"\(its stages: a, b\)$"):
        load_study(str(path)).stage("gone")
