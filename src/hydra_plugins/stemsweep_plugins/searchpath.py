"""The project's config sources beyond conf/: its sweeps/ folder (`+sweeps=NAME`), and the machine's own
settings in conf/local/ (not tracked by git: a `git pull` never conflicts with them).

conf/local/ answers for two groups: `hydra/launcher` (your copy of a SLURM preset, e.g.
conf/local/hydra/launcher/mycluster.yaml, taken by `hydra/launcher=mycluster`) and `tuning` (what a
study's `tune` stage or `stemsweep tune --out NAME` writes, conf/local/tuning/NAME.yaml). It comes
before conf/ in the search path, so an option in both is read from conf/local/: a study that tunes
`mini` again then trains at what its own `tune` stage just wrote, not at the committed
conf/tuning/mini.yaml, whose values it would otherwise silently ignore. conf/local/default.yaml (data
roots, runs_root, ...) is conf/config.yaml's `optional local` entry, read from conf/ itself.
"""

from abc import abstractmethod
from pathlib import Path
from typing import List, Optional

from hydra._internal.core_plugins import file_config_source
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.plugins.search_path_plugin import SearchPathPlugin


class GroupsConfigSource(file_config_source.FileConfigSource):
    """A folder as a config source that answers only for some groups. A plain file:// source makes
    every folder in it a config group: on the repository root (.venv, runs/, src/ ...) `--help`, which
    lists every group, walked all of .venv for minutes, and a folder there could answer for a group of
    conf/; in conf/local/ a stray folder of the user's would do the same."""

    GROUPS: tuple = ()

    @staticmethod
    @abstractmethod
    def scheme() -> str: ...  # abstract: Hydra registers only the concrete sources below

    def _group_or_above(self, path: str) -> bool:
        return path == "" or any(g == path or g.startswith(f"{path}/") or path.startswith(f"{g}/") for g in self.GROUPS)

    def is_group(self, config_path: str) -> bool:
        return self._group_or_above(config_path.strip("/")) and super().is_group(config_path)

    def is_config(self, config_path: str) -> bool:
        # only options of its groups: no primary config here, and no option of a group above them (hydra/)
        path = config_path.strip("/")
        return any(path.startswith(f"{g}/") for g in self.GROUPS) and super().is_config(config_path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        def answers(name: str) -> bool:
            path = f"{config_path.strip('/')}/{name}".strip("/")
            return self.is_group(path) or self.is_config(path)

        return [name for name in super().list(config_path, results_filter) if answers(name)]


class SweepsConfigSource(GroupsConfigSource):
    """The repository root, with one group: sweeps/."""

    GROUPS = ("sweeps",)

    @staticmethod
    def scheme() -> str:
        return "stemsweep-sweeps"


class LocalConfigSource(GroupsConfigSource):
    """conf/local/, with the groups a machine keeps for itself: its launcher presets and the tunings its
    studies wrote."""

    GROUPS = ("hydra/launcher", "tuning")

    @staticmethod
    def scheme() -> str:
        return "stemsweep-local"


class StemsweepSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # Imported here, not at the top: Hydra imports every plugin module when it scans for plugins.
        from stemsweep.config import CONF_DIR, LOCAL_CONF_DIR, SWEEPS_DIR

        if SWEEPS_DIR.is_dir():
            search_path.append(provider="stemsweep", path=f"{SweepsConfigSource.scheme()}://{SWEEPS_DIR.parent}")
        if Path(CONF_DIR).is_dir():
            # before the application's conf/ (provider "main"): what a study wrote wins (module docstring)
            search_path.prepend(provider="stemsweep-local", path=f"{LocalConfigSource.scheme()}://{LOCAL_CONF_DIR}",
                                anchor=SearchPathQuery(provider="main"))
