"""The commands of README.md and docs/cluster.md, as a user types them, so that the docs cannot drift from
the code.

Every command in a ```sh block of those pages either runs here, shrunk only as SHRINK says, or says why it
cannot (`why_not_here`); a command neither covers fails the test until it is placed. The Hydra overrides of
every stemsweep command, run here or not, are parsed as a sweep parses them (Hydra's parser, then each
value re-serialized and parsed again, as Hydra's sweepers hand a job its overrides), which is where a
fine-tune's unquoted `init_from=${run_signature:'…'}` breaks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from stemsweep.analysis.load import runs_source
from stemsweep.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/cluster.md")
COMMITTED = ROOT / "results" / "mini-study"


@dataclass(frozen=True)
class Command:
    doc: str
    line: str  # as the page writes it
    env: tuple  # the VAR=value words before the program
    program: str  # stemsweep, stemsweep.run (`python -m stemsweep.run`), python, pip, jupyter, mkdir, cp …
    args: tuple

    def __str__(self) -> str:
        return f"{self.doc}: {self.line}"


def doc_commands(doc: str) -> list[Command]:
    """The commands of the page's ```sh blocks, one a line (a line ending in \\ goes on), comments dropped."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", (ROOT / doc).read_text(), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            env = []
            while re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                env.append(words.pop(0))
            program, args = words[0].removeprefix(".venv/bin/"), words[1:]
            if program == "python" and args[:2] == ["-m", "stemsweep.run"]:
                program, args = "stemsweep.run", args[2:]
            commands.append(Command(doc, line.split(" #")[0].strip(), tuple(env), program, tuple(args)))
    return commands


COMMANDS = [command for doc in DOCS for command in doc_commands(doc)]


def why_not_here(command: Command) -> str | None:
    """Why a documented command is not run by this test, or None: it runs (`run_here`)."""
    program, args = command.program, command.args
    if program == "pip":
        return "installs into the user's Python: `make install-check` runs it in a fresh venv"
    if program == "python":
        return "checks the cluster's own CUDA torch"
    if program in ("mkdir", "cp"):
        return "writes the user's own preset into conf/local/ (tests/test_local_conf.py composes one)"
    if program == "stemsweep" and args[0] == "cluster-config":
        return "reads the cluster's sinfo and writes into conf/local/: tests/slurm/test_cluster_config_slurm.py"
    if program == "stemsweep" and args[:2] == ("study", "run"):
        return ("submits the paper's study to a cluster (ImageNet, data_roots); the tiny study runs locally and on "
                "the local SLURM in tests/study/")
    if program == "stemsweep.run" and any(a.startswith("hydra/launcher=") for a in args):
        return "trains ImageNet runs on a cluster"
    return None


def hydra_overrides(command: Command) -> list[str]:
    """The words of a stemsweep command that are Hydra overrides."""
    if command.program == "stemsweep.run":
        return [a for a in command.args if not a.startswith("-")]
    if command.program == "stemsweep" and command.args[0] == "plan":
        return list(command.args[2:])
    if command.program == "stemsweep" and command.args[0] == "study":
        return list(command.args[3:])
    return []


def parse_as_a_sweep_does(overrides: list[str]) -> None:
    """Parse the overrides, then each job's value again as Hydra's sweepers write it for the job."""
    parser = OverridesParser.create()
    for override in parser.parse_overrides(overrides):
        values = override.sweep_string_iterator() if override.is_sweep_override() else \
            [override.get_value_element_as_str()]
        parser.parse_overrides([f"{override.get_key_element()}={value}" for value in values])


def test_every_documented_command_runs_here_or_says_why_not():
    assert {c.doc for c in COMMANDS} == set(DOCS)  # each page has commands: a renamed fence fails here
    unplaced = [str(c) for c in COMMANDS if why_not_here(c) is None and runner(c) is None]
    assert not unplaced, "place these in tests/test_readme.py (run them, or say why not):\n" + "\n".join(unplaced)
    for command in COMMANDS:
        parse_as_a_sweep_does(hydra_overrides(command))
    assert any("init_from=" in o for c in COMMANDS for o in hydra_overrides(c))  # the quoting is shown, and parses


def test_the_override_check_fails_where_a_sweep_fails():
    quoted = "init_from=\"${run_signature:'model=vit_xs seed=0'}\""
    parse_as_a_sweep_does([quoted, "stem=patch,conv", "lrwd.draw=range(0,4)"])
    with pytest.raises(Exception, match="mismatched input"):  # what `stemsweep plan` or `-m` says without them
        parse_as_a_sweep_does([quoted.replace('"', "")])


# --- running them ----------------------------------------------------------------------------------------------

# The documented runs, shrunk: what each word stands for here.
SWEEP = ["data.train_subset=256", "data.test_subset=256", "batch_size=64", "logger=none", "threads=1"]  # + runs_root


def shrink(args: tuple, here: dict[str, str]) -> list[str]:
    """`args` with the words of SHRINK replaced: the paper's study by the tiny study (tests/study/tiny.py), your
    cluster's preset by the committed example, your study's records by the committed mini-study records, a
    paper sweep by its mini version, and the folders a command writes by this test's."""
    shrunk = {
        "paper": here["tiny_study"],
        "hydra/launcher=mycluster": "hydra/launcher=slurm_cluster_example",
        "runs/paper": str(COMMITTED),
        "results/mini-study": str(COMMITTED),
        "optimizer": "mini_optimizer",
        "runs": here["runs"],
        "report/": here["report"],
        "report/paper": here["report"],
    }
    return [shrunk.get(a, a) for a in args]


def runner(command: Command):
    """How the test runs a command here: ("cli", argv), ("sweep", argv) or ("notebook", path); None if it cannot."""
    program, args = command.program, command.args
    if program == "stemsweep" and (args[0] in ("plan", "status", "report") or
                                   args[:2] in (("study", "plan"), ("study", "status"))):
        return "cli"
    if program == "stemsweep.run" and args[:1] == ("-m",):
        return "sweep"
    if program == "jupyter" and args[:1] == ("lab",) and len(args) == 2 and args[1].endswith(".ipynb"):
        return "notebook"
    return None


RUN_HERE = [c for c in COMMANDS if why_not_here(c) is None and runner(c) is not None]


@dataclass
class Result:
    code: int
    out: str
    argv: list


def run_cli(argv: list[str]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(argv)
    return Result(code, out.getvalue() + err.getvalue(), argv)


def run_notebook(path: str) -> Result:
    """The notebook executed as `jupyter lab` would run it: its kernel in its folder, no STEMSWEEP_RUNS."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "STEMSWEEP_RUNS"} | {"MPLBACKEND": "Agg"}
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str((ROOT / path).parent)}}).execute(env=env)
    except Exception as exc:  # noqa: BLE001 - the cell's error is the result
        return Result(1, str(exc), [path])
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    return Result(0, f"{text}\n{figures} figures", [path])


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    """Every command of RUN_HERE, shrunk, in the pages' order (the sweep before the status and report of its
    runs); a command that shrinks to one already run is run once."""
    sys.path.insert(0, str(ROOT / "tests" / "study"))
    from tiny import write_tiny_study

    folder = tmp_path_factory.mktemp("readme")
    tiny_study, _ = write_tiny_study(folder, folder / "tiny-runs")
    here = {"tiny_study": str(tiny_study), "runs": str(folder / "runs"), "report": str(folder / "report")}
    results, done = {}, {}
    for command in RUN_HERE:
        how, argv = runner(command), shrink(command.args, here)
        key = (how, tuple(argv))
        if key not in done:
            if how == "cli":
                done[key] = run_cli(argv)
            elif how == "sweep":
                argv += [*SWEEP, f"runs_root={here['runs']}"]
                sweep = subprocess.run([sys.executable, "-m", "stemsweep.run", *argv], capture_output=True, text=True,
                                       env={**os.environ, "WANDB_MODE": "disabled"}, timeout=600)
                done[key] = Result(sweep.returncode, sweep.stdout + sweep.stderr, argv)
            else:
                done[key] = run_notebook(argv[1])
        results[command] = done[key]
    return {"results": results, **here}


@pytest.mark.processes
@pytest.mark.parametrize("command", RUN_HERE, ids=lambda c: c.line)
def test_the_documented_command_runs_here(command, ran):
    result = ran["results"][command]
    assert result.code == 0, f"{command}\nran as: {result.argv}\n{result.out[-3000:]}"
    out, args = result.out, result.argv
    if runner(command) == "sweep":  # the first sweep: four runs of one epoch, the short schedule's warm-up fitted
        records = [json.loads(p.read_text()) for p in Path(ran["runs"]).glob("*/summary.json")]
        assert len(records) == 4 and {r["status"] for r in records} == {"done"}
        configs = Path(ran["runs"]).glob("*/config.yaml")
        assert all(re.search(r"^  warmup_epochs: 0\.5$", p.read_text(), re.M) for p in configs)
    elif runner(command) == "notebook":
        shown = runs_source("")  # what the notebook reads with STEMSWEEP_RUNS unset
        if not (ROOT / "runs").exists():  # no runs of this clone's own: the committed records
            assert shown == str(COMMITTED)
        count = len([p for p in Path(shown).iterdir() if (p / "summary.json").is_file()])
        assert f"{count} runs in {shown}" in out and not out.endswith("\n0 figures")
    elif args[0] == "plan":
        assert re.search(r"^\d+ runs: ", out, re.M), out
    elif args[:2] == ["study", "plan"]:
        assert "study tiny" in out and re.search(r"^total: 8 runs", out, re.M), out
    elif args[:2] == ["study", "status"]:
        assert re.search(r"^lrwd +sweep +4 ", out, re.M) and re.search(r"^report +report", out, re.M), out
    elif args[0] == "status":
        rows = [line for line in out.splitlines() if re.match(r"[0-9a-f]{10} ", line)]
        if args[1] == ran["runs"]:  # the first sweep's
            assert len(rows) == 4 and all(" done " in row for row in rows), out
        else:
            assert len(rows) == len(list(COMMITTED.glob("*/summary.json"))), out
    elif args[0] == "report":
        assert (Path(args[args.index("--out") + 1]) / "report.md").is_file()
    else:
        raise AssertionError(f"no check for {command}")
