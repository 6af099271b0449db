"""The one submitter's plan, as data (no cluster): arrays per resources, array_parallelism shared where an
array is split at MaxArraySize, and a fine-tune a single job after its source's task."""

from __future__ import annotations

import pytest

from stemsweep.compose import signature_of_overrides
from stemsweep.plan.launcher import LauncherSettings
from stemsweep.plan.runs import plan_sweep
from stemsweep.plan.submit import AllOf, Submission, TaskOf

TINY = ["model=vit_xs", "stem=conv", "data=synthetic", "logger=none", "schedule.warmup_epochs=0", "epochs=1"]


def submission(parallel: int) -> Submission:
    return Submission(folder="/nowhere/%j", settings=LauncherSettings(target="slurm", parallel=parallel))


@pytest.fixture(scope="module")
def seeds():
    return plan_sweep(None, [*TINY, "seed=range(0,5)"]).runs


@pytest.mark.parametrize("parallel, cap, expected", [
    (64, 1001, ["array of 5 (%64)"]),
    (4, 2, ["array of 2 (%2)", "array of 2 (%1)", "array of 1 (%1)"]),  # 4 at once shared by 3 pieces
    (1, 2, ["array of 2 (%1)", "array of 2 (%1)", "array of 1 (%1)"]),  # 3 pieces, 1 at once: one after another
])
def test_an_array_is_split_at_max_array_size_and_keeps_its_parallelism(seeds, parallel, cap, expected):
    plan = submission(parallel)
    plan.add_runs("s", print, seeds, [(i,) for i in range(len(seeds))], after=["77"])
    lines = plan.lines(cap)
    assert [line.split(": ", 1)[1].split(",")[0] for line in lines] == expected, lines
    if parallel < len(lines):  # chained: each piece after the one before, and after what the array waits on
        assert lines[0].endswith("after job 77")
        assert lines[1].endswith("after job 77, piece 0 of array 0") and lines[2].endswith("piece 1 of array 0")
    else:
        assert all(line.endswith("after job 77") for line in lines)


def test_one_array_per_set_of_resources():
    runs = plan_sweep(None, [*TINY, "model=vit_xs,vit_1gf"]).runs
    plan = submission(8)
    plan.add_runs("s", print, runs, [(i,) for i in range(len(runs))])
    assert [len(a.tasks) for a in plan.arrays] == [1, 1]
    assert {tuple(sorted(a.resources.items())) for a in plan.arrays} == {run.resources for run in runs}


def test_a_fine_tune_waits_on_its_sources_task_only():
    source = signature_of_overrides(" ".join([*TINY, "seed=1"]))
    pretrain = plan_sweep(None, [*TINY, "seed=0,1"]).runs
    finetune = plan_sweep(None, [*TINY, "seed=1", "epochs=2", f"init_from={source}"]).runs
    plan = submission(8)
    known = plan.add_runs("pre", print, pretrain, [(i,) for i in range(2)], after=["10"])
    plan.add_runs("fine", print, finetune, [(0,)], after=[AllOf(0), "11"], known=known,
                  source_after=lambda run: ["11"])  # not the pre-training array: its source's task
    assert not plan.arrays[0].single and plan.arrays[1].single
    assert plan.arrays[1].after == ["11", TaskOf(0, 1)]
    assert plan.lines(1001)[1] == f"fine: 1 job, {dict(finetune[0].resources)}, after job 11, task 1 of array 0"
    # with its source done (not in this submission), a fine-tune goes in an array like any run
    alone = submission(8)
    alone.add_runs("fine", print, finetune, [(0,)])
    assert not alone.arrays[0].single
