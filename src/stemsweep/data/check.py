"""`stemsweep check-data ROOT`: decode every image of a folder before a cluster is spent on it.

A run replaces an unreadable training image and leaves an unreadable test image out (data/bad_files.py),
and stops past data.max_bad_files of them; this lists them all up front, with several processes.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from stemsweep.data.bad_files import UnreadableImage
from stemsweep.data.imagenet import LAYOUT, read_rgb
from stemsweep.errors import ConfigError

CHUNK = 64  # files a process decodes per task: few round trips, a smooth progress bar


def folder_images(root: str | Path, runs_root: str | Path = "runs") -> list[str]:
    """Every file a run reads under `root`: train/ then val/, from the folder's kept index as the runs
    read it (data/image_index.py: beside the data, or under runs_root for read-only data), built and
    kept now if there is none yet."""
    from stemsweep.data.image_index import INDEX_CACHE, image_index

    paths = []
    for split in ("train", "val"):
        folder = Path(root).expanduser() / split
        if not folder.is_dir():
            raise ConfigError(f"{folder} does not exist; a data folder holds {LAYOUT}")
        index = image_index(folder, Path(runs_root) / INDEX_CACHE)
        paths += [index.path(i) for i in range(len(index))]
    return paths


def decode_problem(path: str) -> tuple[str, str | None]:
    """(path, why it cannot be read or decoded), or (path, None) for a good file."""
    try:
        read_rgb(path)
    except UnreadableImage as error:
        return path, error.cause
    return path, None


def bad_images(paths: list[str], processes: int, progress: bool = True) -> dict[str, str]:
    """The files among `paths` that cannot be read or decoded, and why, decoded by `processes`
    processes; a progress bar with the ETA on stderr."""
    with Pool(processes) as pool, tqdm(total=len(paths), unit="img", desc="decoding", disable=not progress,
                                       file=sys.stderr) as bar:
        bad = {}
        for path, problem in pool.imap_unordered(decode_problem, paths, chunksize=CHUNK):
            if problem is not None:
                bad[path] = problem
            bar.update()
    return dict(sorted(bad.items()))


def check_data(root: str, processes: int | None = None, runs_root: str = "runs") -> int:
    """Print every bad file of the folder with its cause; 1 if there is any, else 0."""
    if processes is not None and processes < 1:
        raise ConfigError(f"--processes={processes} is not allowed: a positive integer")
    print(f"listing the files under {root}", file=sys.stderr)  # minutes for millions of files
    paths = folder_images(root, runs_root)
    bad = bad_images(paths, processes or len(os.sched_getaffinity(0)))
    for path, problem in bad.items():
        print(f"{path}: {problem}")
    if bad:
        print(f"{len(bad)} of {len(paths)} files under {root} cannot be read or decoded: a run replaces them in "
              "training and leaves them out of the test error, and stops past data.max_bad_files of them")
        return 1
    print(f"all {len(paths)} files under {root} can be read and decoded")
    return 0
