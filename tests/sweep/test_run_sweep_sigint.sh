#!/usr/bin/env bash
# run_sweep under Ctrl-C (and SIGTERM, what `timeout` sends): start it in the background on
# quick_smoke --quick, send the signal once the first result line is out, and check that it exits
# 128 + the signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, as a shell reports a process the signal
# ended) with a message naming it and leaves a valid JSONL file (every line complete, the
# interrupted cases not_run). Usage: RUN_SWEEP EXPERIMENT SCRATCH
set -euo pipefail
bin=$1
experiment=$2
scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"

interrupt_with() {  # SIGNAL: one run stopped by it, checked; 0 when one attempt was
  local sig=$1 want=$2
# A run can finish between the first line and the signal on a fast machine; try again then.
for attempt in 1 2 3 4 5; do
  out="$scratch/$sig$attempt"
  "$bin" "$experiment" --quick --backend cpu --out "$out" >"$scratch/stdout$sig$attempt" 2>"$scratch/stderr$sig$attempt" &
  pid=$!
  for _ in $(seq 1 2000); do  # up to 20 s for the first line
    if [ -s "$out/results.jsonl" ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.01
  done
  kill -"$sig" "$pid" 2>/dev/null || true
  # `timeout` sends SIGTERM twice (the child, then its process group); test_sweep checks that the
  # second stays handled (here the run is usually gone by then).
  if [ "$sig" = TERM ]; then sleep 0.05; kill -TERM "$pid" 2>/dev/null || true; fi
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "attempt $attempt: the run finished before SIG$sig arrived; again"
    continue
  fi
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: run_sweep exited $rc after SIG$sig (expected $want)"
    cat "$scratch/stderr$sig$attempt"
    exit 1
  fi
  if ! grep -q "interrupted (SIG$sig)" "$scratch/stderr$sig$attempt"; then
    echo "FAIL: no message naming SIG$sig on stderr"
    cat "$scratch/stderr$sig$attempt"
    exit 1
  fi
  /usr/bin/python3 - "$out/results.jsonl" "SIG$sig" <<'PY'
import json, sys
path, signame = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as f:
    text = f.read()
if not text.endswith("\n"):
    sys.exit(f"FAIL: {path} does not end with a complete line")
rows = []
for n, line in enumerate(text.splitlines(), 1):
    try:
        rows.append(json.loads(line))
    except json.JSONDecodeError as e:
        sys.exit(f"FAIL: {path} line {n} is not JSON: {e}")
for r in rows:
    assert r["schema_version"] == 1, r
    assert r["disposition"] in ("passed", "incorrect", "not_supported", "not_run"), r
    assert (r["summary"] is None) == (r["disposition"] != "passed"), r
not_run = [r for r in rows if r["disposition"] == "not_run"]
if not not_run:
    sys.exit("FAIL: no case is marked not_run after the interrupt")
if not all(f"interrupted ({signame})" in r["reason"] for r in not_run):
    sys.exit(f"FAIL: a not_run row does not say it was interrupted by {signame}: "
             f"{[r['reason'] for r in not_run][:3]}")
if not any(r["disposition"] == "passed" for r in rows):
    sys.exit("FAIL: no case passed before the interrupt")
print(f"ok: {len(rows)} complete lines, {len(not_run)} not_run after the signal")
PY
  echo "($sig)"
  return 0
done
echo "FAIL: every attempt finished before SIG$sig arrived"
exit 1
}
interrupt_with INT 130
interrupt_with TERM 143
interrupt_with HUP 129
