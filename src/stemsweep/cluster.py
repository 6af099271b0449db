"""`stemsweep cluster-config NAME`: a SLURM launcher preset for the cluster this runs on, written from
what SLURM says (`sinfo`, `scontrol show config`) to conf/local/hydra/launcher/NAME.yaml, where
`hydra/launcher=NAME` finds it. It is a draft for the user to check (docs/cluster.md): SLURM cannot say
which account to bill or which setup lines a job needs, and a cluster's partitions mean what its admins
say. What it can say is written as comments: each partition's time limit, nodes, CPUs, memory and GPUs a
node, MaxArraySize, and where the paper models' own resources (conf/model/*.yaml) do not fit the chosen
partition, the command-line setting that makes them fit.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from stemsweep.compose import compose
from stemsweep.config import CONF_DIR, LOCAL_CONF_DIR, ConfigError
from stemsweep.record.files import write_text

PRESETS_DIR = LOCAL_CONF_DIR / "hydra" / "launcher"
# What sinfo prints a line for (one per partition and kind of node): name (* marks the default), time
# limit, generic resources, CPUs a node, memory a node (MB), nodes.
SINFO_FORMAT = "%P|%l|%G|%c|%m|%D"
MAX_TIMEOUTS = 20  # conf/hydra/launcher/slurm.yaml's max_num_timeout: requeues at the time limit


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    time_limit: str  # as sinfo prints it
    minutes: int | None  # None: no limit
    nodes: int
    cpus: int  # a node (the smallest of its nodes)
    mem_gb: int  # a node (the smallest)
    gpus: int  # a node (the most: the nodes a GPU job lands on)
    gpu_type: str | None


def slurm_minutes(text: str) -> int | None:
    """A SLURM time (`infinite`, `30`, `30:00`, `2:00:00`, `1-00:00:00`, `2-12`) in minutes; None: no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes = parts[0], parts[1] if len(parts) > 1 else 0
    elif len(parts) == 3:  # hours:minutes:seconds
        hours, minutes = parts[0], parts[1]
    else:  # minutes[:seconds]
        hours, minutes = 0, parts[0]
    return (int(days or 0) * 24 + hours) * 60 + minutes


def _gpus(gres: str) -> tuple[int, str | None]:
    """GPUs a node and their type from sinfo's %G (`gpu:a100:8(S:0-1)`, `gpu:4`, `(null)`)."""
    count, kind = 0, None
    for match in re.finditer(r"gpu(?::([^:,(]+))?:(\d+)", gres):
        count += int(match.group(2))
        kind = kind or match.group(1)
    return count, kind


def parse_sinfo(text: str) -> list[Partition]:
    """sinfo's lines (SINFO_FORMAT) as one Partition each, the lines of one partition merged."""
    merged: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, limit, gres, cpus, mem, nodes = line.strip().split("|")
        gpus, kind = _gpus(gres)
        default = name.endswith("*")
        name = name.rstrip("*")
        part = Partition(name, default, limit, slurm_minutes(limit), int(nodes), int(re.sub(r"\D.*", "", cpus)),
                         int(re.sub(r"\D.*", "", mem) or 0) // 1024, gpus, kind)
        if name in merged:
            seen = merged[name]
            part = Partition(name, default or seen.default, seen.time_limit, seen.minutes, seen.nodes + part.nodes,
                             min(seen.cpus, part.cpus), min(seen.mem_gb, part.mem_gb), max(seen.gpus, part.gpus),
                             seen.gpu_type or part.gpu_type)
        merged[name] = part
    return list(merged.values())


def parse_scontrol_config(text: str) -> dict[str, str]:
    """`scontrol show config`'s `Key = Value` lines."""
    settings = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            settings[key.strip()] = value.strip()
    return settings


def choose_partition(partitions: list[Partition], name: str | None = None) -> Partition:
    """`name`, else the default partition if it has GPUs, else the one with the most GPUs a node (then the
    longest time limit), else the default one."""
    if not partitions:
        raise ConfigError("sinfo lists no partition: is this a SLURM login node?")
    if name is not None:
        for part in partitions:
            if part.name == name:
                return part
        raise ConfigError(f"--partition={name} is not allowed: this cluster's partitions are "
                          f"{', '.join(p.name for p in partitions)}")
    default = next((p for p in partitions if p.default), partitions[0])
    if default.gpus:
        return default
    best = max(partitions, key=lambda p: (p.gpus, p.minutes if p.minutes is not None else float("inf")))
    return best if best.gpus else default


def model_resources() -> dict[str, dict]:
    """Each model size's `resources` (conf/model/*.yaml, composed with its family's), by size."""
    sizes = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))
    return {size: dict(compose([f"model={size}"]).model.resources) for size in sizes}


def fit_notes(part: Partition, resources: dict[str, dict]) -> list[str]:
    """Where the models' resources do not fit `part`, and the setting that makes them fit."""
    notes = []
    gpu_models = {size: r for size, r in resources.items() if r["gpus"] > 0}
    wanting = sorted(size for size, r in gpu_models.items() if r["gpus"] > part.gpus)
    if wanting and part.gpus:
        notes.append(f"{', '.join(wanting)} ask for more GPUs a node than partition {part.name} has ({part.gpus}): "
                     f"add model.resources.gpus={part.gpus} (and model.resources.nodes=N for as many GPUs in "
                     "all; the batch is global, so the runs train the same)")
    elif wanting:
        notes.append(f"partition {part.name} has no GPUs: the paper's models ({', '.join(wanting)}) need them; "
                     "pick a GPU partition (--partition, or partition: below)")
    longest = max((r["timeout_min"] for r in gpu_models.values()), default=0)
    if part.minutes is not None and longest > part.minutes:
        notes.append(f"the models ask for up to {longest} minutes a job, partition {part.name} allows "
                     f"{part.minutes}: add hydra.launcher.timeout_min={part.minutes} to the command line (it wins "
                     f"over the models' own); a run stopped at the limit is requeued and resumes from its "
                     f"checkpoint, up to {MAX_TIMEOUTS} times")
    return notes


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise ConfigError(f"{command[0]} is not on PATH: run `stemsweep cluster-config` on a login node of the "
                          "SLURM cluster it is for")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ConfigError(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip().splitlines()[0]}")
    return result.stdout


def setup_line() -> str:
    """The shell line that puts this Python first in a job: its venv's activation, else its folder on PATH."""
    if sys.prefix != sys.base_prefix:
        return f"source {sys.prefix}/bin/activate"
    return f"export PATH={Path(sys.executable).parent}:$PATH"


def preset_yaml(name: str, partitions: list[Partition], part: Partition, settings: dict[str, str],
                notes: list[str]) -> str:
    cluster = settings.get("ClusterName", "this cluster")
    rows = [f"#   {p.name + ('*' if p.default else ''):<16} {p.time_limit:>12} {p.nodes:>6} {p.cpus:>6} "
            f"{p.mem_gb:>8} GB {p.gpus:>4}{f' ({p.gpu_type})' if p.gpu_type else ''}" for p in partitions]
    lines = [
        f"# A SLURM preset for cluster {cluster}: `stemsweep cluster-config {name}` wrote it on "
        f"{socket.gethostname()}, {date.today()},",
        "# from sinfo and `scontrol show config`. Check it, then plan with it (docs/cluster.md):",
        f"#   stemsweep study plan paper hydra/launcher={name}",
        "#",
        "# Partitions (* the default):",
        f"#   {'name':<16} {'time limit':>12} {'nodes':>6} {'CPUs':>6} {'memory':>11} GPUs a node",
        *rows,
        f"# MaxArraySize {settings.get('MaxArraySize', 'unknown')}: the most tasks one job array may have.",
    ]
    if notes:
        lines += ["#", f"# The models' resources (conf/model/*.yaml) against partition {part.name}:"]
        lines += [f"#   - {note}" for note in notes]
    lines += [
        "defaults:",
        "  - slurm",
        "  - _self_",
        f"partition: {part.name}",
        "account: null           # your account, if the cluster bills one (sacctmgr show associations user=$USER)",
        "qos: null",
        "constraint: null        # e.g. a GPU type the partition mixes",
        "additional_parameters: {}",
        "setup:                  # shell lines each job runs first: modules, the environment",
        f"  - {setup_line()}",
    ]
    return "\n".join(lines) + "\n"


def write_cluster_config(name: str, partition: str | None = None, force: bool = False,
                         folder: Path = PRESETS_DIR) -> tuple[Path, list[str]]:
    """Write the preset NAME for this cluster; (its path, the notes on what does not fit). An existing
    preset is kept unless `force`."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in ("slurm", "local_parallel", "basic"):
        raise ConfigError(f"name {name!r} is not allowed: a preset name of letters, digits, _ . - other than "
                          "slurm, local_parallel and basic (e.g. mycluster)")
    path = folder / f"{name}.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: check or remove it, or write it again with --force")
    partitions = parse_sinfo(_run(["sinfo", "--noheader", f"--format={SINFO_FORMAT}"]))
    part = choose_partition(partitions, partition)
    settings = parse_scontrol_config(_run(["scontrol", "show", "config"]))
    notes = fit_notes(part, model_resources())
    write_text(path, preset_yaml(name, partitions, part, settings, notes))
    return path, notes
