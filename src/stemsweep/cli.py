"""The `stemsweep` command: one subcommand per job; each lives in the module that owns it.

Each subcommand imports its module when it runs (deferred for start-up speed: `plan` needs Hydra,
`report` pandas and matplotlib, `check-data` torch; none needs the others')."""

from __future__ import annotations

import argparse
import os
import sys

from stemsweep.errors import ConfigError


def _models(args: argparse.Namespace) -> int:
    from stemsweep.models.paper import print_model_table

    print_model_table(csv=args.csv)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from stemsweep.sweep.plan import print_plan

    print_plan(args.sweep, args.overrides)
    return 0


def _status(args: argparse.Namespace) -> int:
    from stemsweep.sweep.status import print_status

    print_status(args.path)
    return 0


def _report(args: argparse.Namespace) -> int:
    from stemsweep.analysis.report import write_report

    write_report(args.runs, args.out, error=args.error, diverged=args.diverged)
    print(f"report written to {args.out}/report.md")
    return 0


def _export(args: argparse.Namespace) -> int:
    from stemsweep.analysis.export import export_runs

    count = export_runs(args.runs, args.out)
    print(f"{count} runs exported to {args.out} (their records and {args.out}/runs.csv)")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from stemsweep.analysis.tune import tuning_file, write_tuning

    tuned = write_tuning(args.runs, args.sweeps, args.out)
    print(tuned.to_string(index=False))
    print(f"tuning written to {tuning_file(args.out)}")
    return 0


def _cluster_config(args: argparse.Namespace) -> int:
    from stemsweep.cluster import write_cluster_config

    path, notes = write_cluster_config(args.name, args.partition, args.force)
    print(f"wrote {path}: check it (account, setup lines), then `stemsweep study plan paper "
          f"hydra/launcher={args.name}`")
    for note in notes:
        print(f"  - {note}")
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from stemsweep.data.check import check_data

    return check_data(args.root, args.processes, args.runs_root)


def _study(args: argparse.Namespace) -> int:
    from stemsweep.study.plan import print_study_plan
    from stemsweep.study.runner import check_overrides, run_study
    from stemsweep.study.spec import load_study
    from stemsweep.study.status import comparison_rows, format_study, study_rows

    try:
        study = load_study(args.name)
        check_overrides(args.overrides)
        if args.action == "run":
            return run_study(study, args.overrides, wait=args.wait)
        if args.action == "plan":
            print_study_plan(study, args.overrides, show_runs=not args.stages_only)
            return 0
        print(format_study(study_rows(study, args.overrides), comparison_rows(study, args.overrides)))
        return 0
    except KeyboardInterrupt:
        print(f"stemsweep study: interrupted; run `stemsweep study run {args.name}` again to go on where it was",
              file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stemsweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="the paper's models and the CPU sizes: blocks, flops, params, acts")
    p.add_argument("--csv", action="store_true", help="print CSV with unrounded numbers")
    p.set_defaults(func=_models)

    p = sub.add_parser("plan", help="the runs a sweep expands to, without training anything")
    p.add_argument("sweep", help="a sweep file name in sweeps/, e.g. optimizer or mini_optimizer")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, as on the run command line")
    p.set_defaults(func=_plan)

    p = sub.add_parser("study", help="a whole study (studies/NAME.yaml): its stages in order (run), what they "
                                     "will train and cost (plan), where each stands (status)")
    p.add_argument("action", choices=["run", "plan", "status"])
    p.add_argument("name", help="a study file name in studies/, e.g. mini or paper")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every sweep stage, e.g. runs_root=… "
                                                "hydra/launcher=slurm")
    p.add_argument("--stages-only", action="store_true", help="plan: one line per stage, not per run")
    p.add_argument("--wait", action="store_true", help="run on SLURM: wait until the study ends (by default "
                                                       "it returns once every stage is submitted)")
    p.set_defaults(func=_study)

    p = sub.add_parser("status", help="a table of the runs of a sweep or runs directory")
    p.add_argument("path", help="a runs directory, or a sweep name")
    p.set_defaults(func=_status)

    p = sub.add_parser("report", help="every figure and table of the study, and report.md")
    p.add_argument("runs", nargs="+", help="runs directories (or entity/project for W&B)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--error", default="best_ema_error", help="which error column the analyses use")
    p.add_argument("--diverged", default="stemsweep",
                   help="how the lr/wd EDFs count diverged runs: stemsweep (a failed setting, within no Δ) or "
                        "pycls (at the error reached before diverging; left out if never evaluated)")
    p.set_defaults(func=_report)

    p = sub.add_parser("export", help="the runs' records without checkpoints or W&B files, and runs.csv: "
                                      "small enough to commit, readable by report and status")
    p.add_argument("runs", nargs="+", help="runs directories")
    p.add_argument("--out", required=True, help="output directory, e.g. results/mini-study")
    p.set_defaults(func=_export)

    p = sub.add_parser("tune", help="each model's best lr/wd from lr/wd sweeps, as a conf/tuning/ option")
    p.add_argument("runs", nargs="+", help="runs directories (or entity/project for W&B)")
    p.add_argument("--sweeps", nargs="+", required=True, help="the lr/wd sweeps to tune from, e.g. mini_lrwd_adamw")
    p.add_argument("--out", required=True, help="a tuning name, written to conf/local/tuning/NAME.yaml (tuning=NAME), "
                                                "or a file")
    p.set_defaults(func=_tune)

    p = sub.add_parser("cluster-config", help="a SLURM preset for this cluster from sinfo and scontrol, written to "
                                              "conf/local/hydra/launcher/NAME.yaml for you to check")
    p.add_argument("name", help="the preset's name, as hydra/launcher=NAME takes it, e.g. mycluster")
    p.add_argument("--partition", help="the partition to use (default: the default one if it has GPUs, else the "
                                       "one with the most GPUs a node)")
    p.add_argument("--force", action="store_true", help="write over an existing preset of that name")
    p.set_defaults(func=_cluster_config)

    p = sub.add_parser("check-data", help="decode every image of a data folder (train/, val/) and list the "
                                          "files that cannot be read or decoded; exits 1 if there are any")
    p.add_argument("root", help="the folder a run's data.root names")
    p.add_argument("--processes", type=int, default=None, help="decoding processes (default: every CPU)")
    p.add_argument("--runs-root", default="runs", help="where the index of read-only data is kept (the runs' "
                   "runs_root); an index kept there or beside the data is reused")
    p.set_defaults(func=_check_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe is found here, not at exit
        return code
    except ConfigError as exc:  # the user's input: one line; anything else is a bug and keeps its traceback
        print(f"stemsweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`stemsweep plan … | head`): stop quietly, as other command-line tools
        # do. Python flushes stdout again at exit; send that flush to /dev/null (Python's docs, "Note
        # on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
