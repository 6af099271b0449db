#!/usr/bin/env bash
# scripts/run-tests.sh — what `make test` runs: pytest with a real local SLURM cluster.
#   bash scripts/run-tests.sh [pytest args]        (default: the whole tests/)
# Brings the cluster up (scripts/local-slurm.sh), runs pytest, brings the cluster down on any exit.
# If the bring-up fails the tests still run, and the SLURM tests fail rather than skip.
# STEMSWEEP_SLURM_KEEP=1 leaves the cluster up afterwards (then a rerun starts in 0.1 s).
# The whole suite also runs the Hydra-facing tests under Hydra 1.4 (.venv-hydra14, scripts/hydra14-env.sh),
# in the background beside the main pytest: STEMSWEEP_HYDRA14=0 leaves them out, =1 adds them to a run
# with pytest args, =only runs them alone (`make test-hydra14`). Their output follows; their status counts.
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

# Hydra 1.4's share: the plugin suites, the sweep planning and real short sweeps (local and SLURM). It
# mostly waits, as the main run does, on subprocesses and SLURM jobs, so the two share the cores well.
# Its few SLURM jobs share the node with the main run's (the tests take only upper bounds on the node).
hydra14_tests=(tests/slurm/test_hydra_suites_slurm.py tests/sweep/test_hydra_suites.py tests/sweep/test_plan.py
  tests/sweep/test_launch.py::test_a_sweep_with_its_subfolders_named_by_override_dirname_runs_on_both_local_launchers)
hydra14=${STEMSWEEP_HYDRA14:-$(($# == 0))}
hydra14_pytest() {
  [[ -x .venv-hydra14/bin/python ]] || bash scripts/hydra14-env.sh >&2
  echo "run-tests: Hydra $(.venv-hydra14/bin/python -c 'import hydra; print(hydra.__version__)'): ${hydra14_tests[*]}"
  .venv-hydra14/bin/python -m pytest -p no:cacheprovider --basetemp="$(mktemp -d)/pytest" "${hydra14_tests[@]}"
}
if [[ $hydra14 == only ]]; then
  hydra14_pytest
  exit
fi
if [[ $hydra14 == 1 ]]; then
  hydra14_log=$(mktemp)
  hydra14_pytest >"$hydra14_log" 2>&1 &
  hydra14_pid=$!
fi

# Two workers side by side (pytest-xdist), a test file a unit and the SLURM tests one unit: tests/conftest.py.
.venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=12 "${@:-tests}"
rc=$?
((rc == 5)) && echo "run-tests: pytest collected no tests (exit 5): that is a failure" >&2
if [[ -n ${hydra14_pid:-} ]]; then
  wait "$hydra14_pid"
  rc14=$?
  cat "$hydra14_log"
  ((rc14 == 0)) || echo "run-tests: the Hydra 1.4 tests failed (exit $rc14)" >&2
  ((rc == 0)) && rc=$rc14
fi
exit "$rc"
