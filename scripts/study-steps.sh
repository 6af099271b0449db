# Sourced by scripts/mini-study.sh and scripts/mini-study-4ep.sh: run a study's steps and keep their
# wall time in $RESULTS/wall_time.csv (one row per step; a resumed step records only that invocation).
# Needs PY, RESULTS, JOBS and THREADS set.
mkdir -p "$RESULTS"
[ -f "$RESULTS/wall_time.csv" ] || echo "step,started_utc,wall_s,jobs,threads" > "$RESULTS/wall_time.csv"

timed() {  # timed STEP COMMAND...: run it and append its wall time
  local step=$1 start; shift
  start=$(date +%s)
  echo "== $step: $*"
  "$@"
  echo "$step,$(date -u -d "@$start" +%FT%TZ),$(( $(date +%s) - start )),$JOBS,$THREADS" >> "$RESULTS/wall_time.csv"
}

# The records are the study's data: exported to $RESULTS (committed), and the report is drawn from
# that export alone, so anyone can regenerate it from the repository (`stemsweep report $RESULTS`).
export_and_report() {
  timed export "$PY" -m stemsweep.cli export "$RUNS" --out "$RESULTS"
  timed report "$PY" -m stemsweep.cli report "$RESULTS" --out "$OUT"
}
