"""Hydra compositions kept on disk between commands, keyed by everything a composition reads.

Planning the paper's study composes 62 distinct configs (one per model × stem × optimizer × sweep),
and Hydra takes about 0.1 s for each on this machine: most of `stemsweep study plan paper`'s time
(docs/benchmarks.md, "Studies"). `plan`, `study plan`, `study run` and `study status` compose the same
configs again and again, so their compositions are kept, pickled, under the cache folder
($STEMSWEEP_COMPOSE_CACHE, else $XDG_CACHE_HOME/stemsweep/compose, else ~/.cache/stemsweep/compose;
STEMSWEEP_COMPOSE_CACHE=off keeps none). Hydra keeps no compositions between processes, hence this.

A composition is a pure function of its inputs, and an entry's name hashes all of them, so an entry
can never be stale, only unused:
- the overrides and the primary config's name;
- the content of every file in the file-based config search path (conf/, sweeps/);
- the code that registers structured configs (stemsweep's and every hydra_plugins package's source);
- the versions of Python, Hydra and OmegaConf (Hydra's own configs ship with it);
- the values of the environment variables the config files name (`${oc.env:NAME}`), in case a
  defaults list interpolates one.
What is kept is the composed config with its interpolations unresolved (`hydra` node dropped), as
JobComposer would compose it: everything resolved later (lr/wd, signatures, `${now:}`) is not kept.
An entry that cannot be read is composed again and rewritten; entries are written atomically, so
concurrent commands can share the folder. Every change of the configs or the code starts a new set of
entries (about 15 kB each), so reading an entry touches it and an entry unread for UNUSED_DAYS is removed
the next time something is kept.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CACHE_VARIABLE = "STEMSWEEP_COMPOSE_CACHE"
OFF = ("0", "off", "false", "no")
ENV_REFERENCE = re.compile(rb"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")
UNUSED_DAYS = 14


def cache_folder() -> Path | None:
    """Where compositions are kept, or None when the user turned keeping off."""
    setting = os.environ.get(CACHE_VARIABLE, "")
    if setting.lower() in OFF:
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stemsweep" / "compose"


class KeptCompositions:
    """The kept compositions of one config loader (its search path) and primary config."""

    def __init__(self, loader: Any, config_name: str, folder: Path):
        self.loader, self.config_name, self.folder = loader, config_name, folder

    @classmethod
    def of(cls, loader: Any, config_name: str) -> KeptCompositions | None:
        folder = cache_folder()
        return None if folder is None else cls(loader, config_name, folder)

    @functools.cached_property
    def inputs(self) -> str:
        """The digest of everything but the overrides (~6 ms; read again by each composer, so that a
        file edited meanwhile is never missed)."""
        import hydra
        import omegaconf

        digest = hashlib.sha256()
        digest.update(f"{sys.version_info[:2]} hydra {hydra.__version__} omegaconf {omegaconf.__version__} "
                      f"{self.config_name}\n".encode())
        env_names: set[bytes] = set()
        for folder in (*self._config_folders(), *_source_folders()):
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                content = path.read_bytes()
                env_names.update(ENV_REFERENCE.findall(content))
                digest.update(f"{path.relative_to(folder)}\0{len(content)}\0".encode())
                digest.update(content)
        for name in sorted(env_names):
            digest.update(name + b"=" + os.environ.get(name.decode(), "\0unset").encode() + b"\n")
        return digest.hexdigest()

    def _config_folders(self) -> list[Path]:
        """The file-based folders of the search path: conf/, and the repository's sweeps/ (its
        `stemsweep-sweeps://ROOT` source reads ROOT/sweeps only)."""
        folders = []
        for element in self.loader.config_search_path.get_path():
            scheme, _, where = element.path.partition("://")
            if not where:
                scheme, where = "file", element.path
            if scheme == "file" and Path(where).is_dir():
                folders.append(Path(where))
            elif scheme == "stemsweep-sweeps" and (Path(where) / "sweeps").is_dir():
                folders.append(Path(where) / "sweeps")
        return folders

    def _path(self, overrides: Sequence[str]) -> Path:
        key = hashlib.sha256("\0".join([self.inputs, *overrides]).encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.pickle"

    def get(self, overrides: Sequence[str]) -> bytes | None:
        path = self._path(overrides)
        try:
            pickled = path.read_bytes()
        except OSError:
            return None
        try:
            os.utime(path)  # used: not pruned
        except OSError:
            pass
        return pickled

    def put(self, overrides: Sequence[str], pickled: bytes) -> None:
        """Keep one composition; a folder that cannot be written keeps nothing (planning goes on)."""
        path = self._path(overrides)
        self._prune()
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
                tmp.write(pickled)
            os.replace(tmp.name, path)
        except OSError:
            if tmp is not None:  # written in part, or not moved into place: not left behind
                Path(tmp.name).unlink(missing_ok=True)

    @functools.cache  # noqa: B019 - once per instance (a planning command has one or two)
    def _prune(self) -> None:
        """Remove the entries no command has read for UNUSED_DAYS (once for each composer that keeps one)."""
        old = time.time() - UNUSED_DAYS * 86400
        for entry in self.folder.glob("*/*.pickle"):
            try:
                if entry.stat().st_mtime < old:
                    entry.unlink()
            except OSError:
                continue


@functools.cache
def _source_folders() -> tuple[Path, ...]:
    """The code that registers structured configs in Hydra's ConfigStore: stemsweep's package (its
    run schema) and every hydra_plugins folder (the launchers' and sweepers' schemas)."""
    import hydra_plugins
    import stemsweep

    return (Path(stemsweep.__file__).parent, *(Path(p) for p in hydra_plugins.__path__))
