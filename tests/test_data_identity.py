"""Data is part of what a run means: each data set has its own root, a run's record keeps its data's
fingerprint, a record of other data is neither skipped as done nor resumed, a folder of the wrong shape
stops a run, and the record is written with the user's umask and says when the disk was full."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from run_configs import make_config

from stemsweep.compose import compose
from stemsweep.config import ConfigError, DataConfig, paths_unchecked
from stemsweep.data.fingerprint import KNOWN_CLASSES, data_fingerprint, data_mismatch, shape_problem
from stemsweep.record import files
from stemsweep.record.checkpoint import RECORD_NOT_WRITTEN, RecordNotWritten
from stemsweep.record.rundir import RunDir

# One 1-epoch run of ViT_C-XS on a folder of 2 classes × 8 images (data.check_shape=false: not ImageNet's shape).
FOLDER_RUN = ["model=vit_xs", "data=imagenet", "data.check_shape=false", "batch_size=8", "epochs=1",
              "schedule.warmup_epochs=0", "logger=none", "threads=1", "data.num_workers=0", "data.pipeline=cpu"]
SYNTHETIC_RUN = ["model=vit_xs", "data=synthetic", "data.image_size=28", "data.num_train=16", "data.num_test=8",
                 "batch_size=8", "epochs=1", "schedule.warmup_epochs=0", "logger=none", "threads=1"]


def image_folder(root: Path, names: str, per_class: int = 4) -> Path:
    """root/{train,val}/{red,blue}/<name><i>.png: small images of one colour a class."""
    for split in ("train", "val"):
        for colour in ("red", "blue"):
            folder = root / split / colour
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), colour).save(folder / f"{names}{i}.png")
    return root


def record_files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def only_run(runs: Path) -> Path:
    [run] = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return run


def test_each_image_folder_data_set_takes_its_own_root_and_data_root_still_names_one_runs(monkeypatch):
    roots = ["data_roots.imagenet=/data/in1k", "data_roots.imagenet21k=/data/in21k"]
    assert compose(["data=imagenet", *roots]).data.root == "/data/in1k"
    assert compose(["data=imagenet21k", *roots]).data.root == "/data/in21k"
    assert compose(["+stage=in21k_pretrain", *roots]).data.root == "/data/in21k"
    assert compose(["data=imagenet21k", *roots, "data.root=/mine"]).data.root == "/mine"
    monkeypatch.setenv("IMAGENET21K_ROOT", "/env/in21k")
    assert compose(["data=imagenet21k"]).data.root == "/env/in21k"  # the environment's default, as before


def test_a_run_on_another_folder_with_the_same_settings_is_neither_skipped_nor_resumed(tmp_path, run_in_process):
    runs = tmp_path / "runs"
    first, other = image_folder(tmp_path / "first", "a"), image_folder(tmp_path / "other", "b")
    run_in_process(f"runs_root={runs}", f"data.root={first}", *FOLDER_RUN)
    run = only_run(runs)
    recorded = json.loads((run / "summary.json").read_text())
    assert recorded["status"] == "done" and recorded["data"]["root"] == str(first)
    assert {split: recorded["data"][split]["images"] for split in ("train", "val")} == {"train": 8, "val": 8}

    def refused() -> str:
        before = record_files(run)
        with pytest.raises(ConfigError) as stopped:
            run_in_process(f"runs_root={runs}", f"data.root={other}", *FOLDER_RUN)
        assert record_files(run) == before and only_run(runs) == run  # the first record is as it was
        return str(stopped.value)

    line = refused()  # done: not skipped as if it were this run
    assert "\n" not in line and line.startswith(f"run {run.name} under runs_root={runs} was trained on {first} (")
    assert f"not on {other} (8 training images in 2 classes" in line
    assert f"to keep both runs, train this one under another runs_root (e.g. runs_root={runs}-other)" in line
    (run / "summary.json").write_text(json.dumps({**recorded, "status": "resumable"}))
    assert refused() == line  # resumable: not resumed from the other folder's checkpoint

    # The same files in another place (a copy on a node's disk) are the same data: the record is reused.
    (run / "summary.json").write_text(json.dumps(recorded))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, ignore=shutil.ignore_patterns(".stemsweep-index"))  # listed anew there
    assert f"run {run.name} is done" in run_in_process(f"runs_root={runs}", f"data.root={copy}", *FOLDER_RUN)


def test_a_planner_learns_of_a_data_mismatch_before_it_skips_a_run(tmp_path):
    first, other = image_folder(tmp_path / "first", "a"), image_folder(tmp_path / "other", "b")
    cfg = make_config(**{"data": DataConfig(name="imagenet", root=str(first)), "runs_root": str(tmp_path / "runs")})
    summary = {"signature": "0123456789", "data": data_fingerprint(cfg.data, cfg.runs_root)}
    assert data_mismatch(cfg, summary) is None
    cfg.data.root = str(other)
    assert data_mismatch(cfg, summary).startswith(f"run 0123456789 under runs_root={tmp_path / 'runs'} was trained "
                                                  f"on {first} (8 training images in 2 classes")
    assert data_mismatch(cfg, {"signature": "0123456789"}) is None  # a record from before fingerprints
    cfg.data.root = str(tmp_path / "not here")  # a plan made where the data is not: the run checks it
    assert data_mismatch(cfg, summary) is None
    synthetic = make_config(**{"data.num_classes": 5})
    assert data_mismatch(synthetic, {"data": data_fingerprint(synthetic.data, "runs")}) is None
    assert "data.num_classes=5" in data_mismatch(make_config(), {"data": data_fingerprint(synthetic.data, "runs")})


def test_the_planners_check_imports_no_torch():
    code = "import sys, stemsweep.data.fingerprint; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_21k_run_on_a_1000_class_folder_stops_with_its_line_and_writes_no_record(tmp_path, run_in_process):
    in1k = tmp_path / "in1k"
    for split in ("train", "val"):
        for label in range(1000):  # the index counts the class folders; it reads no image
            (in1k / split / f"n{label:08d}").mkdir(parents=True)
            (in1k / split / f"n{label:08d}" / "0.JPEG").touch()
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError) as stopped:
        run_in_process(f"runs_root={runs}", "model=vit_xs", "+stage=in21k_pretrain",
                       f"data_roots.imagenet21k={in1k}", "logger=none")
    assert str(stopped.value) == (
        f"data=imagenet21k: {in1k}/train has 1,000 class folders, as ImageNet-1k has; data=imagenet21k expects "
        "21,841 (ImageNet-21k fall11), 19,167 (ImageNet-21k winter21), 11,221 (ImageNet-21K-P from fall11), "
        "10,450 (ImageNet-21K-P from winter21): name its folder with data_roots.imagenet21k=PATH (data.root=PATH "
        "for one run), or give data.check_shape=false to train on this folder as it is")
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


def folder_of(classes: int) -> dict:
    return {"name": "?", "root": "/data/x", "train": {"images": 10 * classes, "classes": classes, "digest": "d"}}


@pytest.mark.parametrize("name", ["imagenet", "imagenet21k"])
def test_a_folder_fits_its_data_set_when_it_has_the_classes_of_a_known_release(name):
    with paths_unchecked():
        data = DataConfig(name=name, root="/data/x")
        unchecked = DataConfig(name=name, root="/data/x", check_shape=False)
    for classes in KNOWN_CLASSES[name]:
        assert shape_problem(data, folder_of(classes)) is None
    assert shape_problem(data, folder_of(3)).startswith(f"data={name}: /data/x/train has 3 class folders; "
                                                        f"data={name} expects ")
    assert shape_problem(unchecked, folder_of(3)) is None


def test_records_and_the_index_beside_the_data_are_written_with_the_users_umask(tmp_path, run_in_process):
    runs, data = tmp_path / "runs", image_folder(tmp_path / "data", "a")
    previous = os.umask(0o022)
    try:
        run_in_process(f"runs_root={runs}", f"data.root={data}", *FOLDER_RUN)
    finally:
        os.umask(previous)
    written = [p for p in [*only_run(runs).rglob("*"), *(data / ".stemsweep-index").rglob("*")] if p.is_file()]
    names = {p.name for p in written}
    assert {"summary.json", "metrics.jsonl", "config.yaml", "checkpoint.pt", "progress", "lock", "train.index",
            "val.index"} <= names, names
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: "0o644" for p in written}


def test_a_full_disk_at_a_metrics_write_stops_the_run_with_one_line_and_a_record_that_says_so(
        tmp_path, run_in_process, monkeypatch):
    runs = tmp_path / "runs"
    atomic_replace, full = files.atomic_replace, []

    def write_on_a_disk_that_fills_at_the_metrics(path, write_to, keep_previous=None):
        if path.name == "metrics.jsonl":
            full.append(path)
        if full:  # from then on no file can be made: no atomic write can happen
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent / f".{path.name}.x.tmp"))
        atomic_replace(path, write_to, keep_previous)

    monkeypatch.setattr(files, "atomic_replace", write_on_a_disk_that_fills_at_the_metrics)
    with pytest.raises(RecordNotWritten) as stopped:
        run_in_process(f"runs_root={runs}", *SYNTHETIC_RUN)
    run = only_run(runs)
    line = str(stopped.value)
    assert line == (f"run {run.name} stopped: the disk is full (OSError: [Errno 28] No space left on device: "
                    f"'{run}/.metrics.jsonl.x.tmp'); it is recorded resumable: once {run} has space, launch it "
                    "again and it resumes from its checkpoint")
    summary = RunDir(runs, run.name).read_summary()
    assert summary["status"] == "resumable"
    last = summary["interruptions"][-1]
    assert last["cause"] == RECORD_NOT_WRITTEN and "No space left on device" in last["error"]
    assert not (run / "error.log").exists()

    monkeypatch.setattr(files, "atomic_replace", atomic_replace)  # space again
    run_in_process(f"runs_root={runs}", *SYNTHETIC_RUN)
    summary = RunDir(runs, run.name).read_summary()
    assert summary["status"] == "done" and len(RunDir(runs, run.name).read_metrics()) == 1


def test_a_full_disk_before_a_new_runs_first_record_is_its_line(tmp_path, run_in_process, monkeypatch):
    def full(path, write_to, keep_previous=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(files, "atomic_replace", full)
    runs = tmp_path / "runs"
    with pytest.raises(RecordNotWritten) as stopped:
        run_in_process(f"runs_root={runs}", *SYNTHETIC_RUN)
    run = only_run(runs)
    assert str(stopped.value) == (
        f"run {run.name} stopped: the disk is full (OSError: [Errno 28] No space left on device: '{run}/config.yaml'); "
        f"its record could not say so either (FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{run}/summary.json'): once {run} has space, launch it again and it resumes from its checkpoint")
