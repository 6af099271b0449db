"""Make the project's sweeps/ folder a config group, so `python -m stemsweep.run -m +sweeps=NAME` works."""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class StemsweepSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        import stemsweep

        root = Path(stemsweep.__file__).resolve().parents[2]
        if (root / "sweeps").is_dir():
            search_path.append(provider="stemsweep", path=f"file://{root}")
