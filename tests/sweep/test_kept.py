"""Kept compositions (stemsweep/sweep/kept.py): what planning reads from disk is what Hydra composes,
and an entry is never used once anything a composition reads has changed."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from stemsweep.config import CONF_DIR, SWEEPS_DIR, paths_unchecked, validated_config
from stemsweep.identity import run_signature
from stemsweep.sweep.kept import CACHE_VARIABLE, KeptCompositions
from stemsweep.sweep.plan import JobComposer, compose_sweep


def composed(sweep: str, kept: bool = True) -> list[tuple[str, str]]:
    """Each job's composed config (as YAML, unresolved) and its run's signature (of peak: its ImageNet-21k
    pre-training and fine-tuning runs)."""
    jobs, compose_job = compose_sweep(sweep, [], kept=kept)
    out = []
    with paths_unchecked():
        for job in jobs if sweep != "peak" else [j for j in jobs if any(o.startswith("+stage=") for o in j)]:
            cfg = compose_job(job)
            out.append((OmegaConf.to_yaml(cfg), run_signature(validated_config(cfg))))
    return out


def entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.pickle"))


@pytest.mark.parametrize("sweep", ["peak", "mini_lrwd_adamw"])
def test_a_kept_composition_is_hydras_cold_and_warm(sweep, tmp_path, monkeypatch):
    """peak: structural grids (+stage=), fine-tuning runs naming their source by `${run_signature:…}`;
    lr/wd: one composition for many draws (value overrides applied to each copy)."""
    monkeypatch.setenv(CACHE_VARIABLE, "off")
    hydras = composed(sweep, kept=False)
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    cold = composed(sweep)
    written = entries(tmp_path)
    assert written, "nothing was kept"
    warm = composed(sweep)
    assert cold == hydras and warm == hydras
    assert entries(tmp_path) == written and all(p.stat().st_size for p in written)


@pytest.fixture
def own_conf(tmp_path, monkeypatch):
    """A copy of conf/ and sweeps/ in a repository-like folder, with a loader over it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    from stemsweep.sweep.plan import register_with_omegaconf

    root = tmp_path / "repo"
    shutil.copytree(CONF_DIR, root / "conf")
    shutil.copytree(SWEEPS_DIR, root / "sweeps")
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "kept"))
    register_with_omegaconf()

    def composer() -> JobComposer:
        search_path = create_config_search_path(str(root / "conf"))
        search_path.prepend("stemsweep", f"stemsweep-sweeps://{root}")  # as the plugin adds the repository's
        return JobComposer(ConfigLoaderImpl(config_search_path=search_path), kept=True)

    return root, composer


JOB = ["model=vit_xs", "stem=patch", "epochs=3"]


def test_an_edited_config_file_is_composed_again_not_read_from_the_kept_one(own_conf):
    root, composer = own_conf
    assert composer()(JOB).batch_size == 128
    edited = root / "conf" / "config.yaml"
    edited.write_text(edited.read_text().replace("batch_size: 128", "batch_size: 64"))
    assert composer()(JOB).batch_size == 64
    sweep = root / "sweeps" / "mini_peak.yaml"  # any file of the search path counts, a sweep file too
    before = composer().kept.inputs
    sweep.write_text(sweep.read_text() + "\n# edited\n")
    assert composer().kept.inputs != before


def test_a_changed_environment_variable_a_config_names_is_part_of_the_key(own_conf, monkeypatch):
    _, composer = own_conf
    monkeypatch.setenv("IMAGENET_ROOT", "/data/a")
    first = composer().kept.inputs
    monkeypatch.setenv("IMAGENET_ROOT", "/data/b")
    assert composer().kept.inputs != first


def test_an_unreadable_entry_is_composed_again_and_rewritten(own_conf, tmp_path):
    _, composer = own_conf
    fresh = OmegaConf.to_yaml(composer()(JOB))
    [entry] = entries(tmp_path / "kept")
    entry.write_bytes(b"cut short")
    assert OmegaConf.to_yaml(composer()(JOB)) == fresh
    rewritten = pickle.loads(entry.read_bytes())  # the composition of the config groups, before epochs=3
    assert rewritten.model.size == "vit_xs" and rewritten.stem.name == "patch"


def test_a_folder_that_cannot_be_written_keeps_nothing_and_planning_goes_on(own_conf, tmp_path, monkeypatch):
    _, composer = own_conf
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(CACHE_VARIABLE, str(blocked / "kept"))
    assert composer()(JOB).epochs == 3


def test_off_keeps_nothing(own_conf, tmp_path, monkeypatch):
    _, composer = own_conf
    monkeypatch.setenv(CACHE_VARIABLE, "off")
    job = composer()
    assert job.kept is None and job(JOB).epochs == 3
    assert not (tmp_path / "kept").exists()


def test_the_default_folder_is_the_users_cache(monkeypatch, tmp_path):
    from stemsweep.sweep.kept import cache_folder

    monkeypatch.delenv(CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder() == tmp_path / "stemsweep" / "compose"
    assert KeptCompositions.of(object(), "config").folder == tmp_path / "stemsweep" / "compose"


def test_an_entry_unread_for_weeks_goes_the_next_time_one_is_kept_and_a_read_one_stays(own_conf, tmp_path):
    import os
    import time

    from stemsweep.sweep.kept import UNUSED_DAYS

    _, composer = own_conf
    composer()(JOB)
    composer()(["model=regnety_xs", "stem=none"])
    first, second = sorted(entries(tmp_path / "kept"), key=lambda p: p.stat().st_mtime_ns)
    weeks_ago = time.time() - (UNUSED_DAYS + 1) * 86400
    for entry in (first, second):
        os.utime(entry, (weeks_ago, weeks_ago))
    composer()(JOB)  # reads one of the two: it is touched
    assert len(entries(tmp_path / "kept")) == 2
    composer()(["model=vit_xs", "stem=conv"])  # keeps a third: the one no one read goes
    kept = entries(tmp_path / "kept")
    assert len(kept) == 2 and all(p.stat().st_mtime > weeks_ago + 86400 for p in kept)
