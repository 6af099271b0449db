"""The kept image index: ImageFolder's samples, built once per folder, rebuilt when the folder changes."""

import errno
import logging
import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from torchvision.datasets import ImageFolder

from stemsweep.data import image_index as image_index_module
from stemsweep.data.image_index import INDEX_FOLDER, image_index
from stemsweep.errors import ConfigError

BUILT = "indexed %s: %d images in %d classes, listed in %.1f s, kept in %s"


def settle(folder: Path) -> None:
    """Date every folder under `folder` a minute back: a folder that has not changed for a while (an
    index listed within a second of a change is not trusted, image_index.RACY_NS)."""
    past = time.time_ns() - 60 * 10**9
    for root, _, _ in os.walk(folder):
        os.utime(root, ns=(past, past))


@pytest.fixture
def folder(tmp_path):
    """Classes in a sorted order that is not the creation order, nested sub-folders, mixed-case and
    non-image extensions, a class linked in and a file linked in, a hidden file."""
    train = tmp_path / "data" / "train"
    files = ["zebra/b.JPEG", "zebra/a.jpg", "zebra/notes.txt", "zebra/sub/c.png", "zebra/sub b/d.Jpg",
             "zebra/sub/deeper/e.webp", "apple/1.jpeg", "apple/.hidden.jpg", "apple/x.tiff", "apple/y.gif",
             "Mango/m.PNG", "mango/readme", "mango/z.bmp", "elsewhere/l.jpg"]
    for name in files:
        (train / name).parent.mkdir(parents=True, exist_ok=True)
        (train / name).write_bytes(b"not decoded by the index")
    os.symlink(train / "elsewhere", train / "linked")
    os.symlink(train / "apple" / "1.jpeg", train / "mango" / "linked.jpg")
    (train / "top-level.jpg").write_bytes(b"")  # not in a class folder: not a sample
    settle(tmp_path / "data")
    return train


def test_it_gives_imagefolders_classes_and_samples(folder):
    expected = ImageFolder(str(folder))
    index = image_index(folder)
    assert (index.classes, index.class_to_idx) == (expected.classes, expected.class_to_idx)
    assert list(index) == expected.samples and len(index) == 13
    assert index.labels.tolist() == expected.targets
    assert index[-1] == expected.samples[-1]
    with pytest.raises(IndexError):
        index[len(index)]


def test_it_is_kept_beside_the_data_and_reused(folder, caplog):
    with caplog.at_level(logging.INFO, "stemsweep.data.image_index"):
        first = image_index(folder)
        second = image_index(folder)
    assert [r.msg for r in caplog.records] == [BUILT]  # listed once
    assert (folder.parent / INDEX_FOLDER / "train.index").is_file()
    assert list(second) == list(first)


def test_it_is_listed_again_when_a_folder_changes(folder, caplog):
    image_index(folder)
    (folder / "apple" / "2.jpg").write_bytes(b"")  # a class folder's mtime moves
    assert list(image_index(folder)) == ImageFolder(str(folder)).samples
    (folder / "zebra" / "sub" / "deeper" / "f.jpg").write_bytes(b"")  # a nested folder's
    with caplog.at_level(logging.INFO, "stemsweep.data.image_index"):
        assert list(image_index(folder)) == ImageFolder(str(folder)).samples
    assert [r.msg for r in caplog.records] == [BUILT]
    os.rename(folder / "mango", folder / "orange")  # the folder's own
    assert image_index(folder).classes == ImageFolder(str(folder)).classes


def test_a_folder_changed_just_before_listing_is_listed_again(folder, caplog):
    image_index(folder)
    (folder / "apple" / "2.jpg").write_bytes(b"")
    image_index(folder)  # listed within the file system's mtime granularity of the change: not trusted
    with caplog.at_level(logging.INFO, "stemsweep.data.image_index"):
        assert list(image_index(folder)) == ImageFolder(str(folder)).samples
    assert [r.msg for r in caplog.records] == [BUILT]


def _index_in_a_process(folder, start):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("stemsweep.data.image_index")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    start.wait()
    return len(image_index(folder)), sum(r.msg == BUILT for r in records)


def test_two_processes_starting_at_once_list_it_once(folder):
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        start = manager.Barrier(2)
        with context.Pool(2) as pool:
            results = pool.starmap(_index_in_a_process, [(folder, start)] * 2)
    assert sorted(results) == [(13, 0), (13, 1)]


@pytest.fixture
def read_only(folder):
    """The data's root made read-only: by its mode, or where the tests run as root (which the mode does
    not stop) by the immutable attribute."""
    root = folder.parent
    if os.geteuid() != 0:
        root.chmod(0o555)
        yield root
        root.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(root)], capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is not allowed: no way to make a folder read-only")
    try:
        yield root
    finally:
        subprocess.run(["chattr", "-i", str(root)], check=True)


def test_the_index_of_read_only_data_is_kept_in_the_cache_folder(folder, read_only, tmp_path, caplog):
    cache = tmp_path / "runs" / ".index-cache"
    with caplog.at_level(logging.INFO, "stemsweep.data.image_index"):
        assert list(image_index(folder, cache)) == ImageFolder(str(folder)).samples
        image_index(folder, cache)
    assert [r.msg for r in caplog.records] == [BUILT]
    assert not (read_only / INDEX_FOLDER).exists()
    assert len(list(cache.glob("*/train.index"))) == 1


def test_without_a_writable_place_it_is_listed_in_memory(folder, read_only, caplog):
    with caplog.at_level(logging.INFO, "stemsweep.data.image_index"):
        assert list(image_index(folder)) == ImageFolder(str(folder)).samples
    assert len(caplog.records) == 1 and "in memory only" in caplog.text and str(read_only) in caplog.text


def test_a_class_without_images_is_named_as_imagefolder_does(folder):
    (folder / "empty").mkdir()
    with pytest.raises(ConfigError, match="Found no valid file for the classes empty. Supported"):
        image_index(folder)


def test_its_digest_names_the_listing_wherever_the_folder_is(folder, tmp_path):
    listed = image_index(folder)
    assert image_index(folder).digest == listed.digest  # kept with the index, read back without listing
    copy = tmp_path / "copy"
    shutil.copytree(folder.parent, copy, ignore=shutil.ignore_patterns(INDEX_FOLDER))
    assert image_index(copy / "train").digest == listed.digest  # the same files and labels elsewhere
    (copy / "train" / "zebra" / "a.jpg").rename(copy / "train" / "zebra" / "a2.jpg")
    renamed = image_index(copy / "train").digest
    (copy / "train" / "zebra" / "a2.jpg").rename(copy / "train" / "apple" / "a2.jpg")  # another label
    assert len({listed.digest, renamed, image_index(copy / "train").digest}) == 3


def test_a_full_disk_leaves_the_index_in_memory_with_one_line(folder, monkeypatch, caplog):
    def full(file, *_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))

    monkeypatch.setattr(image_index_module, "_write", full)
    with caplog.at_level(logging.INFO, "stemsweep.data.image_index"):
        assert list(image_index(folder)) == ImageFolder(str(folder)).samples
    assert len(caplog.records) == 1 and "in memory only" in caplog.text
    assert f"{folder.parent / INDEX_FOLDER / 'train.index'}: No space left on device" in caplog.text
