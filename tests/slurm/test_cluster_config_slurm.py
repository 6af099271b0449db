"""`stemsweep cluster-config NAME` on the local SLURM, as a user runs it: the preset it writes is taken by
hydra/launcher=NAME, and what SLURM said is in it."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from hydra import compose, initialize_config_dir

from stemsweep.cluster import PRESETS_DIR
from stemsweep.config import CONF_DIR, register_configs

pytestmark = pytest.mark.slurm


def test_cluster_config_writes_a_preset_hydra_takes_by_its_name(slurm_cluster):
    name = f"test_{uuid.uuid4().hex[:8]}"
    path = PRESETS_DIR / f"{name}.yaml"

    def cluster_config(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stemsweep.cli", "cluster-config", name, *args],
                              capture_output=True, text=True, timeout=120)

    max_array = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    max_array = next(line.split("=")[1].strip() for line in max_array.splitlines() if line.startswith("MaxArraySize"))
    try:
        first = cluster_config()
        assert first.returncode == 0, first.stderr
        assert f"wrote {path}" in first.stdout
        text = path.read_text()
        assert f"# MaxArraySize {max_array}:" in text and f"partition: {slurm_cluster.partition}\n" in text
        assert "has no GPUs" in text  # the local node has none; the paper's models want them
        register_configs()
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            launcher = compose("config", [f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher
        assert (launcher.partition, launcher.array_parallelism) == (slurm_cluster.partition, 64)
        again = cluster_config()
        assert again.returncode == 2 and again.stderr.strip().endswith("or write it again with --force")
        assert path.read_text() == text
        assert cluster_config("--force").returncode == 0
    finally:
        path.unlink(missing_ok=True)
