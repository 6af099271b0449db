"""STEMSWEEP_RUNS → the records a notebook reads (analysis.load.runs_source): a folder, a study's name, a W&B
project, or unset: runs/ when it holds records, else the mini study's committed records."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemsweep.analysis.load import RUNS_ENV, runs_source
from stemsweep.config import ConfigError


def records(folder: Path, count: int = 1) -> Path:
    for i in range(count):
        (folder / f"{i:010x}").mkdir(parents=True)
        (folder / f"{i:010x}" / "summary.json").write_text("{}")
    return folder


@pytest.fixture
def repository(tmp_path, monkeypatch) -> Path:
    """A clone with the committed records and a study whose runs_root is not runs/NAME; the working
    directory elsewhere, as a notebook's kernel is (analysis/)."""
    repo = tmp_path / "clone"
    records(repo / "results" / "mini-study", 3)
    (repo / "studies").mkdir()
    (repo / "studies" / "mini.yaml").write_text("overrides: [runs_root=runs/mini-study, threads=1]\nstages: {}\n")
    (repo / "studies" / "paper.yaml").write_text("stages: {}\n")
    (repo / "analysis").mkdir()
    monkeypatch.chdir(repo / "analysis")
    monkeypatch.delenv(RUNS_ENV, raising=False)
    return repo


def test_unset_it_is_the_committed_records_until_runs_holds_some(repository):
    assert runs_source(repository=repository) == str(repository / "results" / "mini-study")
    (repository / "runs").mkdir()  # an empty runs/ holds no records
    assert runs_source(repository=repository) == str(repository / "results" / "mini-study")
    records(repository / "runs" / "mini-study")  # one study's runs: those
    assert runs_source(repository=repository) == str(repository / "runs" / "mini-study")
    records(repository / "runs" / "paper")  # two studies': which one is the user's to say
    with pytest.raises(ConfigError, match=r"^STEMSWEEP_RUNS is not set and .*runs holds the records of several "
                                          r"studies \(mini-study, paper\): set STEMSWEEP_RUNS to one of them$"):
        runs_source(repository=repository)
    records(repository / "runs", 2)  # records in runs/ itself: runs/
    assert runs_source(repository=repository) == str(repository / "runs")


def test_a_study_name_is_its_runs_folder(repository, monkeypatch):
    with pytest.raises(ConfigError, match=r"^STEMSWEEP_RUNS=mini is not allowed: study mini's runs folder "
                                          r"runs/mini-study is not here; run the study first"):
        runs_source("mini", repository=repository)
    records(repository / "runs" / "mini-study")
    records(repository / "runs" / "paper")
    assert runs_source("mini", repository=repository) == str(repository / "runs" / "mini-study")  # its runs_root
    monkeypatch.setenv(RUNS_ENV, "paper")  # read from the environment when not given
    assert runs_source(repository=repository) == str(repository / "runs" / "paper")


def test_a_folder_is_read_from_here_or_else_from_the_clone(repository, tmp_path):
    elsewhere = records(tmp_path / "scratch" / "runs")
    assert runs_source(str(elsewhere), repository=repository) == str(elsewhere)
    assert runs_source("results/mini-study", repository=repository) == str(repository / "results" / "mini-study")
    assert runs_source("wandb:me/stemsweep", repository=repository) == "wandb:me/stemsweep"
    with pytest.raises(ConfigError, match=r"^STEMSWEEP_RUNS=nothing is not allowed: it is no records folder"):
        runs_source("nothing", repository=repository)
