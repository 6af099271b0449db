"""Hydra's own plugin test suites (hydra.test_utils.launcher_common_tests), wired in as Hydra's joblib and
submitit launcher plugins wire them: a parametrized class per suite.

- `local_parallel` is a launcher preset of conf/hydra/launcher: Hydra's suites run it on Hydra's test apps
  as they are, with stemsweep's conf/ on the search path.
- The stemsweep sweeper validates every job as a stemsweep run config, so Hydra's `{foo: 10}` apps cannot
  run through it (they get one line: test_a_config_that_is_not_a_stemsweep_config_is_one_line). There each
  check of BatchedSweeperTestSuite and LauncherTestSuite is ported to the stemsweep app (conf/config.yaml,
  with Hydra's task function in place of training): the same assertions on the jobs' overrides, numbers,
  output folders and return values; only the app's values differ (`stem=patch,conv` for `group1=file1,file2`).
  The SLURM launcher's share is tests/slurm/test_hydra_suites_slurm.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from omegaconf import OmegaConf

import stemsweep.run
from stemsweep.compose import OMEGACONF_2_4, compose
from stemsweep.config import CONF_DIR

# Every plugin module is imported now, as Hydra's plugins' tests import theirs: their configs are then in
# the state hydra_restore_singletons saves and restores (Hydra 1.4 imports a plugin module only once).
Plugins.instance()
SEARCH_PATH = f"hydra.searchpath=[file://{CONF_DIR}]"  # conf/hydra/launcher/local_parallel.yaml for Hydra's apps


@pytest.fixture
def hydra_default_version_base(hydra_restore_singletons):
    """Hydra's apps name no version_base, and its suites expect what Hydra then defaults to; importing
    stemsweep.run (`@hydra.main(version_base=…)`) set it for the whole process. Restored afterwards."""
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    Singleton._instances.pop(VersionBase, None)  # the next use makes a fresh one, with Hydra's default


@pytest.mark.usefixtures("hydra_default_version_base")
@pytest.mark.parametrize("launcher_name, overrides", [("local_parallel", [SEARCH_PATH])])
class TestLocalParallelLauncher(LauncherTestSuite):
    if hasattr(LauncherTestSuite, "test_failure_preserves_task_traceback"):  # Hydra 1.4's suite
        @pytest.mark.xfail(strict=True, reason="Hydra's joblib launcher (1.4.0rc3) re-raises a job's exception "
                                               "without the frames of the worker process; hydra/launcher=joblib "
                                               "fails this test the same way (docs/hydra.md)")
        def test_failure_preserves_task_traceback(self, hydra_sweep_runner, launcher_name, overrides, tmpdir):
            super().test_failure_preserves_task_traceback(hydra_sweep_runner, launcher_name, overrides, tmpdir)


@pytest.mark.processes  # a Python process per test (make test-fast skips them)
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [(
    {"hydra": {"searchpath": [f"file://{CONF_DIR}"]},
     "defaults": [{"override hydra/launcher": "local_parallel"}, {"override hydra/job_logging": "disabled"}]},
    ["-m"])])
class TestLocalParallelLauncherIntegration(IntegrationTestSuite):
    pass


@pytest.mark.usefixtures("hydra_default_version_base")
@pytest.mark.parametrize("launcher_name, overrides",
                         [("local_parallel", [SEARCH_PATH, "hydra.sweeper.max_batch_size=2"])])
class TestLocalParallelLauncherInBatches(BatchedSweeperTestSuite):
    """Hydra's basic sweeper in batches of 2 on local_parallel (the stemsweep sweeper's port is below)."""


# The stemsweep app: conf/config.yaml through the stemsweep sweeper (its defaults choose it), with Hydra's
# test task function (it returns 100) instead of training. runs_root is `runs` in the test's folder.

def stemsweep_sweep(hydra_sweep_runner: Any, overrides: list[str], sweep_dir: Path, task_function: Any = None) -> Any:
    return hydra_sweep_runner(calling_file=stemsweep.run.__file__, calling_module=None, task_function=task_function,
                              config_path=CONF_DIR, config_name="config", overrides=overrides, temp_dir=sweep_dir)


def check_job(job: JobReturn, overrides: list[str], num: int, sweep_dir: Path, subdir: str | None = None) -> None:
    """What Hydra's suites check of a job (sweep_1_job, sweep_2_jobs, verify_dir_outputs), on the stemsweep app:
    its overrides and config, its name, id and number, its output folder and what it saved there."""
    assert job.overrides == overrides
    assert job.cfg == compose(overrides)  # the run config the overrides compose to, as for `python -m stemsweep.run`
    assert job.hydra_cfg.hydra.job.name == "run" and job.hydra_cfg.hydra.job.id is not None
    assert job.hydra_cfg.hydra.job.num == num
    output = Path(job.hydra_cfg.hydra.runtime.output_dir)
    assert output == sweep_dir / (str(num) if subdir is None else subdir)
    assert (output / "run.log").exists() and (output / ".hydra" / "config.yaml").exists()
    assert OmegaConf.load(output / ".hydra" / "overrides.yaml") == OmegaConf.create(overrides)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs_root=runs: the sweeper makes each run's folder there
    return tmp_path


@pytest.mark.usefixtures("hydra_restore_singletons", "in_tmp")
class TestStemsweepSweeperBatches:
    """BatchedSweeperTestSuite.test_sweep_2_jobs_2_batches, ported: 6 jobs in 3 batches of 2."""

    def test_sweep_2_jobs_2_batches(self, hydra_sweep_runner, tmp_path):
        job_overrides = ["stem=patch,conv", "seed=100,200,300"]
        sweep_dir = tmp_path / "sweep"
        sweep = stemsweep_sweep(hydra_sweep_runner, [*job_overrides, "hydra.sweeper.max_batch_size=2"], sweep_dir)
        expected = [[f"stem={stem}", f"seed={seed}"] for stem in ("patch", "conv") for seed in (100, 200, 300)]
        with sweep:
            assert OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task == job_overrides
            assert [len(batch) for batch in sweep.returns] == [2, 2, 2]
            flat = [job for batch in sweep.returns for job in batch]
            for num, (job, overrides) in enumerate(zip(flat, expected, strict=True)):
                check_job(job, overrides, num, sweep_dir)
                assert (job.cfg.stem.name, job.cfg.seed) == (overrides[0][5:], int(overrides[1][5:]))
            assert len({job.working_dir for job in flat}) == 1  # chdir=false: every job in the launch folder
            assert len({job.hydra_cfg.hydra.runtime.output_dir for job in flat}) == 6


@pytest.mark.usefixtures("hydra_restore_singletons", "in_tmp")
@pytest.mark.parametrize("launcher", ["basic", "local_parallel"])
class TestStemsweepSweeperLaunchers:
    """LauncherTestSuite's checks, ported to the stemsweep app, through the stemsweep sweeper."""

    def test_sweep_1_job(self, hydra_sweep_runner, launcher, tmp_path):
        sweep_dir = tmp_path / "sweep"
        with stemsweep_sweep(hydra_sweep_runner, [f"hydra/launcher={launcher}"], sweep_dir) as sweep:
            [[job]] = sweep.returns
            check_job(job, [], 0, sweep_dir)
            assert job.return_value == 100

    def test_sweep_2_jobs(self, hydra_sweep_runner, launcher, tmp_path):
        sweep_dir = tmp_path / "sweep"
        with stemsweep_sweep(hydra_sweep_runner, [f"hydra/launcher={launcher}", "seed=0,1"], sweep_dir) as sweep:
            assert OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task == ["seed=0,1"]
            [jobs] = sweep.returns
            assert len(jobs) == 2
            for i, job in enumerate(jobs):
                check_job(job, [f"seed={i}"], i, sweep_dir)
                assert job.cfg.seed == i and job.return_value == 100

    def test_not_sweeping_hydra_overrides(self, hydra_sweep_runner, launcher, tmp_path):
        message = re.escape("Sweeping over Hydra's configuration is not supported : 'hydra.verbose=true,false'")
        with pytest.raises(HydraException, match=message):
            with stemsweep_sweep(hydra_sweep_runner, [f"hydra/launcher={launcher}", "seed=0,1",
                                                      "hydra.verbose=true,false"], tmp_path / "sweep"):
                pass

    def test_sweep_1_job_strict_and_bad_key(self, hydra_sweep_runner, launcher, tmp_path):
        with pytest.raises(HydraException, match="Could not override 'boo'"):
            with stemsweep_sweep(hydra_sweep_runner, [f"hydra/launcher={launcher}", "boo=bar"], tmp_path / "sweep"):
                pass

    def test_sweep_2_optimizers(self, hydra_sweep_runner, launcher, tmp_path):
        # a config group swept: the jobs compose different group options
        sweep_dir = tmp_path / "sweep"
        with stemsweep_sweep(hydra_sweep_runner, [f"hydra/launcher={launcher}", "optimizer=adamw,sgd"],
                             sweep_dir) as sweep:
            [jobs] = sweep.returns
            for i, (job, name) in enumerate(zip(jobs, ["adamw", "sgd"], strict=True)):
                check_job(job, [f"optimizer={name}"], i, sweep_dir)
                assert job.cfg.optimizer.name == name

    def test_sweep_and_override(self, hydra_sweep_runner, launcher, tmp_path):
        # a value of a group's option, overridden while the group is swept (db.user=someone in Hydra's app)
        sweep_dir = tmp_path / "sweep"
        overrides = [f"hydra/launcher={launcher}", "optimizer=adamw,sgd", "optimizer.momentum=0.5"]
        with stemsweep_sweep(hydra_sweep_runner, overrides, sweep_dir) as sweep:
            [jobs] = sweep.returns
            for i, (job, name) in enumerate(zip(jobs, ["adamw", "sgd"], strict=True)):
                check_job(job, [f"optimizer={name}", "optimizer.momentum=0.5"], i, sweep_dir)
                assert (job.cfg.optimizer.name, job.cfg.optimizer.momentum) == (name, 0.5)

    def test_sweep_with_custom_resolver(self, hydra_sweep_runner, launcher, tmp_path):
        register = OmegaConf.register_resolver if OMEGACONF_2_4 else OmegaConf.register_new_resolver
        register("my_custom_resolver", lambda: "foo")
        try:
            sweep = stemsweep_sweep(hydra_sweep_runner, [f"hydra/launcher={launcher}", "sweep=${my_custom_resolver:}"],
                                    tmp_path / "sweep", task_function=lambda cfg: cfg.sweep)
            with sweep:
                [[job]] = sweep.returns
                assert job.return_value == "foo"
        finally:
            OmegaConf.clear_resolver("my_custom_resolver")

    def test_job_name_original_folder_and_absolute_paths(self, hydra_sweep_runner, launcher, tmp_path):
        # IntegrationTestSuite's test_custom_task_name, test_get_orig_dir_multirun and
        # test_to_absolute_path_multirun, ported: what the job sees, with chdir into its output folder
        def task(cfg: Any) -> tuple:
            import os

            from hydra.core.hydra_config import HydraConfig
            from hydra.utils import get_original_cwd, to_absolute_path

            return (HydraConfig.get().job.name, get_original_cwd(), to_absolute_path("foo/bar"),
                    to_absolute_path("/foo/bar"), os.getcwd())

        if launcher == "local_parallel":  # joblib reuses its worker processes, in the folder of an earlier test
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
        sweep_dir = tmp_path / "sweep"
        overrides = [f"hydra/launcher={launcher}", "hydra.job.name=overridden_name", "hydra.job.chdir=true",
                     "hydra.sweep.subdir=cli_dir_${hydra.job.num}"]
        with stemsweep_sweep(hydra_sweep_runner, overrides, sweep_dir, task_function=task) as sweep:
            [[job]] = sweep.returns
            assert job.return_value == ("overridden_name", str(tmp_path), str(tmp_path / "foo/bar"), "/foo/bar",
                                        str(sweep_dir / "cli_dir_0"))

    @pytest.mark.parametrize("subdir, expected", [
        ("${hydra.job.override_dirname}", ["seed=0", "seed=1"]),
        ("run_${hydra.job.num}", ["run_0", "run_1"]),
    ])
    def test_sweep_subdir_from_the_command_line(self, hydra_sweep_runner, launcher, tmp_path, subdir, expected):
        # IntegrationTestSuite.test_custom_sweeper_run_workdir's command-line cases, ported
        sweep_dir = tmp_path / "sweep"
        overrides = [f"hydra/launcher={launcher}", "seed=0,1", f"hydra.sweep.subdir={subdir}"]
        with stemsweep_sweep(hydra_sweep_runner, overrides, sweep_dir) as sweep:
            [jobs] = sweep.returns
            for i, (job, folder) in enumerate(zip(jobs, expected, strict=True)):
                check_job(job, [f"seed={i}"], i, sweep_dir, folder)


@pytest.mark.usefixtures("hydra_restore_singletons", "in_tmp")
def test_plan_shows_the_overrides_and_signatures_the_sweep_launches(hydra_sweep_runner, tmp_path):
    from stemsweep.compose import planned_config
    from stemsweep.identity import run_signature
    from stemsweep.plan.runs import plan_sweep

    extra = ["seed=range(0,2)", "epochs=3"]
    sweep = stemsweep_sweep(hydra_sweep_runner, ["+sweeps=mini_training_length", *extra], tmp_path / "sweep",
                            task_function=lambda cfg: run_signature(planned_config(cfg)))  # each job's run
    with sweep:
        launched = [(job.overrides, job.return_value) for batch in sweep.returns for job in batch]
    planned = plan_sweep("mini_training_length", extra).runs
    assert [(list(run.overrides), run.signature) for run in planned] == launched and len(launched) == 6


@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("plugin", ["hydra/sweeper=stemsweep", "hydra/launcher=slurm"])
def test_a_config_that_is_not_a_stemsweep_config_is_one_line(hydra_sweep_runner, tmp_path, plugin):
    # Hydra's test app {foo: 10, bar: 100} through the stemsweep sweeper or the SLURM launcher (which composes
    # each job to find its resources before submitting anything): one line, not an AttributeError
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml",
                               overrides=[SEARCH_PATH, plugin, "+a=0,1"], temp_dir=tmp_path)
    with pytest.raises(SystemExit) as stop:
        with sweep:
            pass
    message = str(stop.value)
    assert message == "stemsweep: a config with keys foo, bar, a is not allowed: stemsweep runs, sweeps and " \
                      "launches only stemsweep run configs (conf/config.yaml, whose defaults list names run_schema)"
