"""Make the project's sweeps/ folder a config group, so `python -m stemsweep.run -m +sweeps=NAME` works."""

from pathlib import Path

from hydra._internal.core_plugins import file_config_source
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class SweepsConfigSource(file_config_source.FileConfigSource):
    """The repository root as a config source with one group, sweeps/. A plain file:// source on the
    root makes every folder in it a config group (.venv, runs/, src/ ...): `--help`, which lists every
    group, then walked all of .venv for minutes, and a folder there could answer for a group of conf/."""

    @staticmethod
    def scheme() -> str:
        return "stemsweep-sweeps"

    @staticmethod
    def _in_sweeps(config_path: str) -> bool:
        path = config_path.strip("/")
        return path in ("", "sweeps") or path.startswith("sweeps/")

    def is_group(self, config_path: str) -> bool:
        return self._in_sweeps(config_path) and super().is_group(config_path)

    def is_config(self, config_path: str) -> bool:
        return self._in_sweeps(config_path) and super().is_config(config_path)


class StemsweepSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        import stemsweep

        root = Path(stemsweep.__file__).resolve().parents[2]
        if (root / "sweeps").is_dir():
            search_path.append(provider="stemsweep", path=f"{SweepsConfigSource.scheme()}://{root}")
