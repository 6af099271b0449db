"""`stemsweep cluster-config`: what sinfo and `scontrol show config` say, read into a launcher preset (on the
local SLURM: tests/slurm/test_cluster_config_slurm.py)."""

from __future__ import annotations

import pytest
import yaml

from stemsweep.cluster import (
    choose_partition,
    fit_notes,
    model_resources,
    parse_scontrol_config,
    parse_sinfo,
    preset_yaml,
    slurm_minutes,
    write_cluster_config,
)
from stemsweep.config import ConfigError

# sinfo --format=%P|%l|%G|%c|%m|%D on a cluster with two kinds of GPU node in one partition
SINFO = """\
cpu*|2-00:00:00|(null)|64|256000|40
gpu|1-00:00:00|gpu:a100:4(S:0-1)|48|512000|10
gpu|1-00:00:00|gpu:v100:8|40|384000+|6
debug|30:00|gpu:a100:1|8|64000|2
"""


def test_slurm_times_in_minutes():
    assert [slurm_minutes(t) for t in ("infinite", "30", "30:00", "2:00:00", "1-00:00:00", "2-12", "1-02:30")] == \
        [None, 30, 30, 120, 1440, 3600, 1590]


def test_sinfo_lines_become_one_partition_each():
    cpu, gpu, debug = parse_sinfo(SINFO)
    assert (cpu.name, cpu.default, cpu.gpus, cpu.minutes) == ("cpu", True, 0, 2880)
    assert (gpu.name, gpu.nodes, gpu.gpus, gpu.gpu_type, gpu.cpus, gpu.mem_gb) == ("gpu", 16, 8, "a100", 40, 375)
    assert choose_partition([cpu, gpu, debug]).name == "gpu"  # the default has no GPUs: the most GPUs a node
    assert choose_partition([cpu, gpu, debug], "debug").name == "debug"
    with pytest.raises(ConfigError, match=r"^--partition=big is not allowed: this cluster's partitions are cpu, gpu, "
                                          r"debug$"):
        choose_partition([cpu, gpu, debug], "big")


def test_the_preset_says_where_the_models_do_not_fit_and_composes_as_a_slurm_preset():
    partitions = parse_sinfo(SINFO)
    debug = partitions[2]
    notes = fit_notes(debug, model_resources())
    assert len(notes) == 2
    assert notes[0].startswith("regnety_16gf, regnety_1gf, regnety_4gf, vit_18gf, vit_1gf, vit_36gf, vit_4gf ask for "
                               "more GPUs a node than partition debug has (1): add model.resources.gpus=1")
    assert "add hydra.launcher.timeout_min=30 to the command line" in notes[1]
    settings = parse_scontrol_config("Configuration data as of 2026\nClusterName             = big\n"
                                     "MaxArraySize            = 4001\nSLURM_VERSION = 23.02\n")
    assert settings == {"ClusterName": "big", "MaxArraySize": "4001", "SLURM_VERSION": "23.02"}
    text = preset_yaml("big", partitions, debug, settings, notes)
    assert "# MaxArraySize 4001: the most tasks one job array may have." in text
    preset = yaml.safe_load(text)
    assert preset["defaults"] == ["slurm", "_self_"] and preset["partition"] == "debug"
    assert preset["account"] is None and preset["setup"][0].startswith(("source ", "export PATH="))


def test_an_existing_preset_is_kept_and_a_bad_name_refused(tmp_path):
    (tmp_path / "mine.yaml").write_text("partition: x\n")
    with pytest.raises(ConfigError, match=r"mine.yaml exists: check or remove it, or write it again with --force$"):
        write_cluster_config("mine", folder=tmp_path)
    with pytest.raises(ConfigError, match=r"^name 'slurm' is not allowed"):
        write_cluster_config("slurm", folder=tmp_path)
    assert (tmp_path / "mine.yaml").read_text() == "partition: x\n"
