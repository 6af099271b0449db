"""conf/local/: a machine's own settings, outside the tracked tree (searchpath.py, conf/config.yaml).

default.yaml gives every run its values (the command line still wins); hydra/launcher/NAME.yaml is taken by
hydra/launcher=NAME; tuning/NAME.yaml, what a study's tune stage writes, wins over conf/tuning/NAME.yaml.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.object_type import ObjectType

from hydra_plugins.stemsweep_plugins.searchpath import LocalConfigSource
from stemsweep.config import CONF_DIR, LOCAL_CONF_DIR, register_configs

ROOT = Path(CONF_DIR).parent


def composed(overrides: list[str], conf: str = CONF_DIR, hydra: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=conf, version_base=None):
        return compose("config", overrides, return_hydra_config=hydra)


@pytest.fixture
def name():
    """A unique option name; the files of that name under conf/local/ and conf/tuning/ are removed after."""
    name = f"test_{uuid.uuid4().hex[:8]}"
    yield name
    for path in (LOCAL_CONF_DIR / "tuning" / f"{name}.yaml", LOCAL_CONF_DIR / "hydra" / "launcher" / f"{name}.yaml",
                 Path(CONF_DIR) / "tuning" / f"{name}.yaml"):
        path.unlink(missing_ok=True)


def test_a_local_default_gives_every_run_its_values_and_the_command_line_wins(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf, ignore=shutil.ignore_patterns("local"))
    assert composed([], str(conf)).runs_root == "runs"  # optional: no conf/local/default.yaml, no change
    (conf / "local").mkdir()
    (conf / "local" / "default.yaml").write_text("runs_root: /scratch/me/runs\ndata: {num_workers: 6}\n")
    cfg = composed(["data=imagenet"], str(conf))
    assert (cfg.runs_root, cfg.data.num_workers) == ("/scratch/me/runs", 6)  # over conf/config.yaml and conf/data/
    assert composed(["runs_root=mine"], str(conf)).runs_root == "mine"


def test_a_tuning_a_study_wrote_wins_over_the_committed_one_of_its_name(name):
    for folder, lr in ((Path(CONF_DIR) / "tuning", 0.001), (LOCAL_CONF_DIR / "tuning", 0.002)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.yaml").write_text(f"vit_xs:\n  conv:\n    adamw: {{lr: {lr}, wd: 0.05}}\n")
    assert composed([f"tuning={name}"]).tuning.vit_xs.conv.adamw.lr == 0.002
    (LOCAL_CONF_DIR / "tuning" / f"{name}.yaml").unlink()
    assert composed([f"tuning={name}"]).tuning.vit_xs.conv.adamw.lr == 0.001  # the committed one, as mini's


def test_a_launcher_preset_in_conf_local_is_taken_by_its_name(name):
    (LOCAL_CONF_DIR / "hydra" / "launcher").mkdir(parents=True, exist_ok=True)
    (LOCAL_CONF_DIR / "hydra" / "launcher" / f"{name}.yaml").write_text(
        "defaults:\n  - slurm\n  - _self_\npartition: gpu-long\naccount: my-lab\n")
    launcher = composed([f"hydra/launcher={name}", "hydra.launcher.account=other"], hydra=True).hydra.launcher
    assert launcher._target_.endswith("StemsweepSlurmLauncher")  # slurm.yaml's, under the preset
    assert (launcher.partition, launcher.account, launcher.array_parallelism) == ("gpu-long", "other", 64)


def test_conf_local_answers_only_for_its_groups(tmp_path):
    for path in ("tuning/a.yaml", "hydra/launcher/b.yaml", "hydra/c.yaml", "model/d.yaml", "default.yaml",
                 "config.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x: 1\n")
    source = LocalConfigSource("test", f"{LocalConfigSource.scheme()}://{tmp_path}")
    assert [source.is_config(p) for p in ("tuning/a", "hydra/launcher/b", "hydra/c", "model/d", "default", "config")] \
        == [True, True, False, False, False, False]  # a stray folder or file cannot answer for conf/'s
    assert (source.is_group("model"), source.is_group("hydra"), source.is_group("tuning")) == (False, True, True)
    assert source.list("", ObjectType.GROUP) == ["hydra", "tuning"] and source.list("", ObjectType.CONFIG) == []


def test_git_tracks_nothing_in_conf_local_but_its_readme():
    paths = ["conf/local/default.yaml", "conf/local/tuning/x.yaml", "conf/local/hydra/launcher/x.yaml",
             "conf/local/README.md"]
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", *paths], capture_output=True, text=True)
    assert ignored.stdout.split() == paths[:3]
