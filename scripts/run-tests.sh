#!/usr/bin/env bash
# scripts/run-tests.sh — what `make test` runs: pytest with a real local SLURM cluster.
#   bash scripts/run-tests.sh [pytest args]        (default: the whole tests/)
# Brings the cluster up (scripts/local-slurm.sh), runs pytest, brings the cluster down on any exit.
# If the bring-up fails the tests still run, and the SLURM tests fail rather than skip.
# STEMSWEEP_SLURM_KEEP=1 leaves the cluster up afterwards (then a rerun starts in 0.1 s).
set -uo pipefail
cd "$(dirname "$0")/.." || exit
slurm="bash scripts/local-slurm.sh"

# One run at a time per cluster: another run's teardown would kill this run's jobs.
exec 8>"${STEMSWEEP_SLURM_DIR:-/tmp/stemsweep-slurm}.tests.lock"
flock -n 8 || { echo "run-tests: waiting for another run-tests.sh to finish" >&2; flock 8; }

trap 'exit 130' INT TERM  # so that the EXIT trap below runs on Ctrl-C too
[[ ${STEMSWEEP_SLURM_KEEP:-0} == 1 ]] || trap '$slurm down' EXIT
if $slurm up; then
  eval "$($slurm env)"  # PATH: the cluster's client wrappers and scontrol shim first; SLURM_CONF
else
  echo "run-tests: SLURM bring-up failed; the SLURM tests will fail" >&2
  export STEMSWEEP_SLURM_UP_FAILED=1
fi
export STEMSWEEP_REQUIRE_SLURM=${STEMSWEEP_REQUIRE_SLURM:-1}  # fail, don't skip, without a cluster

.venv/bin/python -m pytest --durations=12 "${@:-tests}"  # the slowest, to keep the suite under 10 min
rc=$?
((rc == 5)) && echo "run-tests: pytest collected no tests (exit 5): that is a failure" >&2
exit "$rc"
