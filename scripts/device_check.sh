#!/usr/bin/env bash
# The one prepared script for a lent GPU (H100/H200): nothing is built or fetched there. Build
# here first (scripts/device_build), carry build/device-carry, then on the device machine:
#   scripts/device_check.sh [OUT_DIR]          (OUT_DIR defaults to $OUT, else ./device_out)
# Steps, each logged under OUT_DIR and bounded in time: GPU facts; the `gpu` tests; compute-
# sanitizer memcheck and racecheck on small cases of every variant; decode throughput of every
# variant on a full synthetic Nemo layer next to a device-to-device copy; the default
# experiment on the cuda backend; end-to-end generation checks. A short table comes last.
# Optional: OFFICIAL_PTX=path/to/decode.ptx (from the dfloat11 wheel) adds the official kernel.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-device_out}}"
BUILD="${BUILD:-build/device-carry}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/device_check.log"
SUMMARY="$OUT_DIR/summary.txt"
: >"$LOG"
: >"$SUMMARY"
ptx_args=()
[ -n "${OFFICIAL_PTX:-}" ] && ptx_args=(--official-ptx "$OFFICIAL_PTX")

step() {  # step NAME SECONDS COMMAND...: runs with a time limit, logs, records the verdict
  local name="$1" limit="$2"
  shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
  [ $rc -eq 124 ] && verdict="TIMED OUT"
  printf '%-28s %-14s %4ds\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$SUMMARY"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >>"$LOG" 2>&1
step "gpu tests" 120 "$BUILD/bin/test_gpu" "${ptx_args[@]}"
if command -v compute-sanitizer >/dev/null; then
  step "memcheck (small)" 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/bin/test_gpu" --small
  step "racecheck (small)" 150 compute-sanitizer --tool racecheck --error-exitcode 3 "$BUILD/bin/test_gpu" --small
else
  echo "compute-sanitizer not found" | tee -a "$SUMMARY"
fi
step "decode throughput" 150 "$BUILD/bin/run_sweep" experiments/decode_throughput.toml --backend cuda \
  --out "$OUT_DIR/decode" "${ptx_args[@]}"
step "default experiment" 240 "$BUILD/bin/run_sweep" experiments/nemo_layer.toml --backend cuda \
  --out "$OUT_DIR/sweep" "${ptx_args[@]}"
step "e2e generation" 240 harness/e2e/bench_generate.sh "$BUILD/bin/df11" "$OUT_DIR/e2e.jsonl"

# Short table last: decode GB/s per variant against the copy of the same run.
/usr/bin/env python3 - "$OUT_DIR/decode/results.jsonl" <<'PY' | tee -a "$SUMMARY"
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
except OSError:
    sys.exit(0)
copy = [r for r in rows if r["case"]["method"] == "copy" and r["disposition"] == "passed"]
bound = copy[0]["summary"]["gbps"] if copy else None
print(f"{'variant':44} {'GB/s':>8} {'of copy':>8}")
for r in rows:
    c = r["case"]
    if c["method"] != "decode":
        continue
    if r["disposition"] != "passed":
        print(f"{c['variant']:44} {r['disposition']:>17}")
        continue
    g = r["summary"]["gbps"]
    print(f"{c['variant']:44} {g:8.1f} {g / bound if bound else float('nan'):8.2f}")
if bound:
    print(f"{'copy (read + write)':44} {bound:8.1f}")
PY
cat "$SUMMARY"
