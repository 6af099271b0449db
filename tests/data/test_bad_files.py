"""Files that cannot be read or decoded (data/bad_files.py): a run trains to the end in both pipelines,
counts them, resumes exactly, stops past data.max_bad_files with one line; check-data lists them."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stemsweep.cli import main as cli
from stemsweep.config import AugConfig, ConfigError, DataConfig
from stemsweep.data import build_data
from stemsweep.data.bad_files import BadFiles
from stemsweep.data.seeding import SeededImages
from stemsweep.record.rundir import StepMarker

PAPER_AUG = AugConfig(name="paper", random_resized_crop=True, flip=True, autoaugment=True)
CPU = torch.device("cpu")
# Two classes of 16 training files (two batches of 8 an epoch: every file is read every epoch), 4 of
# them bad, and 8 good test images among 11.
BAD = ["train/a/cut.jpg", "train/a/corrupt.jpg", "train/b/empty.jpg", "train/b/text.jpg",
       "val/a/cut.jpg", "val/a/corrupt.jpg", "val/b/empty.jpg"]
GOOD_TEST_IMAGES = 8
COMPARED = ("epoch", "train_loss", "train_error", "test_error", "test_images", "ema_test_error", "lr")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)

    def image(name: str, **save) -> bytes:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path, **{"format": "JPEG", **save})
        return path.read_bytes()

    for split, per_class in (("train", {"a": 12, "b": 14}), ("val", {"a": 4, "b": 4})):
        for label, count in per_class.items():
            for i in range(count):
                jpeg = image(f"{split}/{label}/{i:02d}.jpg", quality=90)
    # Fine in both pipelines: a CMYK JPEG and a PNG named .jpg.
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).convert("CMYK").save(
        root / "train/a/cmyk.jpg", quality=90)
    image("train/a/png.jpg", format="PNG")
    for split in ("train", "val"):
        (root / split / "a" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # a download cut short
        # Its header and end marker intact, its data not: only a full decode finds it.
        (root / split / "a" / "corrupt.jpg").write_bytes(jpeg[:600] + bytes(200) + jpeg[800:])
        (root / split / "b" / "empty.jpg").write_bytes(b"")
    (root / "train/b/text.jpg").write_text("<html>not an image</html>")
    return root


def test_check_data_lists_exactly_the_bad_files(root, tmp_path, capsys):
    assert cli(["check-data", str(root), "--processes", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in out[:-1]] == sorted(str(root / name) for name in BAD)
    assert out[-1].startswith(f"7 of 43 files under {root} cannot be read or decoded")
    for split in ("train/a", "val/a"):
        shutil.copytree(root / split, tmp_path / split, ignore=shutil.ignore_patterns("c*.jpg"))
    assert cli(["check-data", str(tmp_path), "--processes", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"all 17 files under {tmp_path} can be read and decoded"


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_an_unreadable_training_image_is_the_next_image_with_its_own_augmentation(root, pipeline):
    bad_files = BadFiles()
    data = build_data(DataConfig(name="imagenet", root=str(root), image_size=32, pipeline=pipeline), PAPER_AUG,
                      None, None, bad_files=bad_files)
    train = SeededImages(data.train)
    paths = [path for path, _ in data.train.samples]

    def batch(indices, seed):
        images, labels = data.to_device(data.collate([train[i, seed] for i in indices]), CPU, False, train=True)
        return images, labels

    cut = paths.index(str(root / "train/a/cut.jpg"))
    assert paths[cut + 1] == str(root / "train/a/png.jpg")
    for seed in (3, 4):
        assert all(torch.equal(a, b) for a, b in zip(batch([cut], seed), batch([cut + 1], seed)))
    corrupt = paths.index(str(root / "train/a/corrupt.jpg"))
    images, labels = batch([corrupt, 0], seed=5)
    if pipeline == "cpu":  # Pillow finds it in the worker: the next file, as above
        assert torch.equal(images[0], batch([corrupt + 1], seed=5)[0][0])
    else:  # its header parses, the device finds it: the next image of its batch, so the batch keeps its size
        assert torch.equal(images[0], images[1]) and labels[0] == labels[1]
    assert sorted(bad_files.paths()) == [str(root / "train/a/corrupt.jpg"), str(root / "train/a/cut.jpg")]


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_an_unreadable_test_image_is_left_out(root, pipeline):
    data = build_data(DataConfig(name="imagenet", root=str(root), image_size=32, pipeline=pipeline),
                      AugConfig(name="none"), None, None)
    loader = torch.utils.data.DataLoader(data.test, batch_size=4, collate_fn=data.collate)
    labels = [data.to_device(batch, CPU, False, train=False)[1] for batch in loader if batch is not None]
    assert torch.cat(labels).tolist() == [0] * 4 + [1] * 4


def test_max_bad_files_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"data.max_bad_files=-1 is not allowed: an integer >= 0 \(0: stop at "):
        DataConfig(name="synthetic", max_bad_files=-1)


# Whole runs, in this process: the CPU pipeline with a DataLoader worker (bad files met in another
# process), the device pipeline without (its log is seen here).
PIPELINES = {"cpu": ["data.pipeline=cpu", "data.num_workers=1"], "gpu": ["data.pipeline=gpu", "data.num_workers=0"]}


def train(root: Path, runs: Path, *overrides: str) -> tuple[Path, dict, list[dict]]:
    from stemsweep.compose import compose
    from stemsweep.run import run

    threads = torch.get_num_threads()
    try:
        run(compose(["model=vit_xs", "data=imagenet", f"data.root={root}", "data.check_shape=false",
                     "data.image_size=32", "aug=paper", "batch_size=8", "epochs=2", "schedule.warmup_epochs=0.5",
                     "logger=none", "threads=1", f"runs_root={runs}", *overrides]))
    finally:
        torch.set_num_threads(threads)
    [run_dir] = [p for p in runs.iterdir() if not p.name.startswith(".")]
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, summary, [{k: row[k] for k in COMPARED} for row in metrics]


@pytest.fixture(scope="module")
def uninterrupted(root, tmp_path_factory):
    done = {}

    def trained(pipeline: str):
        if pipeline not in done:
            done[pipeline] = train(root, tmp_path_factory.mktemp(pipeline), *PIPELINES[pipeline])
        return done[pipeline]
    return trained


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_a_run_with_bad_files_trains_to_the_end_and_counts_each_once(root, uninterrupted, pipeline, caplog):
    with caplog.at_level(logging.WARNING, logger="stemsweep.data.bad_files"):
        _, summary, metrics = uninterrupted(pipeline)
    assert summary["status"] == "done" and summary["epochs_done"] == 2
    assert summary["bad_files"]["count"] == len(BAD)  # distinct over two epochs (and the worker)
    assert sorted(summary["bad_files"]["first"]) == sorted(str(root / name) for name in BAD)
    assert summary["test_images"] == GOOD_TEST_IMAGES and [m["test_images"] for m in metrics] == [8, 8]
    if pipeline == "gpu":  # met here, each twice (two epochs): logged once, with its path
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot read or decode")]
        assert sorted(m.split()[4] for m in logged) == sorted(str(root / name) for name in BAD)


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_stopped_mid_epoch_and_resumed_it_ends_as_the_uninterrupted_run(root, uninterrupted, pipeline, tmp_path,
                                                                        monkeypatch):
    _, expected_summary, expected = uninterrupted(pipeline)
    mark = StepMarker.mark

    def stop_after_step_6(self, steps):  # the middle of the second epoch (4 steps an epoch)
        mark(self, steps)
        if steps == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(StepMarker, "mark", stop_after_step_6)
    with pytest.raises(KeyboardInterrupt):  # stemsweep.train.interrupt.RunInterrupted
        train(root, tmp_path, *PIPELINES[pipeline])
    monkeypatch.setattr(StepMarker, "mark", mark)
    run_dir, summary, metrics = train(root, tmp_path, *PIPELINES[pipeline])
    assert summary["status"] == "done" and summary["resumes"][-1]["from_global_step"] == 6
    assert len(metrics) == len(expected) == 2
    for row, expected_row in zip(metrics, expected):
        assert row == pytest.approx(expected_row, rel=1e-6, abs=1e-9)
    assert summary["bad_files"] == expected_summary["bad_files"]


@pytest.mark.parametrize(("pipeline", "limit"), [("gpu", 0), ("cpu", 2)])
def test_past_max_bad_files_the_run_stops_with_one_line_and_is_failed(root, tmp_path, pipeline, limit):
    with pytest.raises(SystemExit) as stopped:
        train(root, tmp_path, *PIPELINES[pipeline], f"data.max_bad_files={limit}")
    line = str(stopped.value)
    # A DataLoader worker goes on with its next batch while this process stops: it may meet one more.
    match = re.fullmatch(rf"stemsweep: data.max_bad_files={limit} is exceeded: (\d+) files? cannot be read or "
                         rf"decoded \(([^)]+)\); list them all with `stemsweep check-data {root}`, then remove or "
                         r"replace them, or raise data.max_bad_files", line)
    assert match and int(match[1]) > limit, line
    named = match[2].split(" and ")[0].split(", ")
    assert len(named) == min(int(match[1]), 3) and set(named) <= {str(root / name) for name in BAD}
    [run_dir] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error_message"] == line.removeprefix("stemsweep: ")
    assert summary["bad_files"]["count"] == int(match[1]) and summary["bad_files"]["first"][:3] == named


@pytest.mark.processes
def test_with_two_processes_the_one_that_crosses_the_limit_stops_with_the_other_and_the_line(root, tmp_path):
    """Only one process meets the bad file (its half of a batch); stopping alone, it would leave the
    other waiting in the next gradient all-reduce, until torchrun ended it. Both stop at the same step."""
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=lambda folder, names: [n for n in names if n in {  # its index: made anew
        "corrupt.jpg", "empty.jpg", "text.jpg", ".stemsweep-index"} or (n == "cut.jpg" and "val" in folder)])
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29534",
           "-m", "stemsweep.run", "model=vit_xs", "data=imagenet", f"data.root={data}", "data.check_shape=false",
           "data.image_size=32", "batch_size=8", "epochs=2", "logger=none", "threads=1", "data.pipeline=cpu",
           "data.num_workers=0", "data.max_bad_files=0", f"runs_root={tmp_path / 'runs'}"]
    result = subprocess.run(run, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    out = result.stdout + result.stderr
    cut = data / "train/a/cut.jpg"
    line = (f"stemsweep: data.max_bad_files=0 is exceeded: 1 file cannot be read or decoded ({cut}); list them "
            f"all with `stemsweep check-data {data}`, then remove or replace them, or raise data.max_bad_files")
    assert result.returncode != 0 and out.count(line) == 2, out[-4000:]  # each process, with the line
    assert out.count(f"cannot read or decode {cut}") == 1, out[-4000:]  # met by one of them
    [run_dir] = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error_message"] == line.removeprefix("stemsweep: ")
    assert summary["bad_files"] == {"count": 1, "first": [str(cut)]}
