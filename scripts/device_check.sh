#!/usr/bin/env bash
# The one prepared script for a lent GPU (H100/H200): nothing is built or fetched there. Build
# here first (scripts/device_build), carry build/device-carry, then on the device machine:
#   scripts/device_check.sh [OUT_DIR]          (OUT_DIR defaults to $OUT, else ./device_out)
# First a preflight (a second): the carry's BUILD_INFO against this tree's scripts/source_hash
# (a stale carry is named in the summary), and every carried binary's libraries (a missing one
# ends the run at once instead of failing every step). Then the steps, in the order STEPS names
# them (default: the order below, what a first run must learn), each logged under OUT_DIR and
# bounded in time:
#   facts       GPU name, clocks, driver
#   gpu_tests   every variant on the device, outputs poisoned, bit-exact (test_gpu; e2e gpu test)
#   decode      decode throughput of every variant on a full synthetic Nemo layer next to a
#               device-to-device copy (experiments/decode_throughput.toml)
#   sweep       the default experiment on the cuda backend (experiments/nemo_layer.toml)
#   e2e         end-to-end generation on synthetic full-size Nemo (harness/e2e/bench_generate.sh)
#   memcheck    compute-sanitizer memcheck on small cases of every variant, then on every CUDA
#               path of the forward pass on the tiny config (harness/e2e/sanitize_runs.txt)
#   racecheck   compute-sanitizer racecheck on the same
#   profile     Nsight Compute counters (scripts/device_profile.py) of one decode each of
#               PROFILE_METHODS (space-separated decode:<variant> / df11-fused[:<variant>]@<batch>;
#               default: official-ptx, lut8x4.gap5-block.smem-out.t512.b8, this run's two fastest
#               decoders, df11-fused@1 and the one-pass df11-fused:multi12.gap5-cnt.*.t256.b16@1):
#               DRAM GB/s, issue-slot use, occupancy, instructions per
#               weight, warp stalls. Without ncu or its counters it says so and passes.
#   bench       df11_bench's GPU micro-benchmarks (decoders on a Nemo gate_proj, copy, GEMMs; a
#               benchmark that reports an error, e.g. a bit mismatch, fails the step)
# On the device a test binary's "no GPU" exit (77) is a failure, and DF11_EXPECT_GPU makes the
# binaries print why CUDA saw no device.
# The whole run keeps to BUDGET_S seconds (default 480): each step gets at most its own limit and
# what is left of the budget; a step that cannot get MIN_STEP_S (default 30) is skipped and says
# so. STEPS="gpu_tests decode" runs only those steps, STEPS="e2e profile decode" those three in
# that order (so a tight budget cuts the last); an unknown name ends the run at once (exit 2).
# A short table comes last. The e2e and profile steps pick decoders from this call's decode rows:
# the decode step's, else the default experiment's shortlist (decode_results).
# The official kernel (official-ptx) runs when OFFICIAL_PTX names decode.ptx; by default the one
# scripts/device_build put in the carry folder ($BUILD/decode.ptx), if it is there.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT_DIR="${1:-${OUT:-device_out}}"
BUILD="${BUILD:-build/device-carry}"
BUDGET_S="${BUDGET_S:-480}"
MIN_STEP_S="${MIN_STEP_S:-30}"
STEPS="${STEPS:-facts gpu_tests decode sweep e2e memcheck racecheck profile bench}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export DF11_EXPECT_GPU=1
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/device_check.log"
SUMMARY="$OUT_DIR/summary.txt"
: >"$LOG"
: >"$SUMMARY"
ptx_args=()
[ -z "${OFFICIAL_PTX:-}" ] && [ -f "$BUILD/decode.ptx" ] && OFFICIAL_PTX="$BUILD/decode.ptx"
[ -n "${OFFICIAL_PTX:-}" ] && ptx_args=(--official-ptx "$OFFICIAL_PTX")
start=$SECONDS
failed=0

# Every name in STEPS must be a step (a typo would otherwise spend a lent GPU's call on nothing).
for s in $STEPS; do
  case $s in
    facts | gpu_tests | decode | sweep | e2e | memcheck | racecheck | profile | bench | none) ;;
    *) echo "device_check: unknown step '$s' (facts gpu_tests decode sweep e2e memcheck racecheck profile bench)" >&2
       exit 2 ;;
  esac
done

step() {  # step NAME LIMIT COMMAND...: runs within the budget, logs, records the verdict
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET_S - (SECONDS - start)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt "$MIN_STEP_S" ]; then
    printf '%-22s %-16s %4ds\n' "$name" "SKIPPED (budget)" 0 | tee -a "$SUMMARY"
    return
  fi
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local verdict
  case $rc in
    0) verdict=ok ;;
    77) verdict="FAILED (no GPU)" && failed=$((failed + 1)) ;;  # the test binaries' skip code: here, a fault
    124 | 137) verdict="TIMED OUT" && failed=$((failed + 1)) ;;
    *) verdict="FAILED rc=$rc" && failed=$((failed + 1)) ;;
  esac
  printf '%-22s %-16s %4ds\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$SUMMARY"
}

# Preflight.
if [ -f "$BUILD/BUILD_INFO" ]; then
  sed 's/^/carry: /' "$BUILD/BUILD_INFO" >>"$SUMMARY"
  built=$(awk '$1 == "source_hash" {print $2}' "$BUILD/BUILD_INFO")
  here=$(scripts/source_hash 2>/dev/null || echo unknown)
  if [ "$built" != "$here" ]; then
    echo "WARNING: the carry was built from other sources (source_hash $built, this tree $here): rerun scripts/device_build" |
      tee -a "$SUMMARY"
  fi
else
  echo "WARNING: $BUILD/BUILD_INFO is missing: a carry from scripts/device_build?" | tee -a "$SUMMARY"
fi
missing=""
unresolved() { for b in "$BUILD"/bin/*; do ldd "$b" 2>&1 | grep "not found" | sed "s|^|$(basename "$b"): |"; done; }
if command -v ldd >/dev/null; then
  missing=$(unresolved)
  # cuBLAS outside /usr/local/cuda/lib64 (e.g. only the nvidia-cublas wheel of the image's
  # Python): look for it once and put its folder on the path (the e2e model dlopens it too).
  if grep -q "libcublas" <<<"$missing"; then
    dir=$(find /usr/local /opt /usr/lib -maxdepth 9 -name 'libcublasLt.so.13' -printf '%h\n' 2>/dev/null | head -1)
    if [ -n "$dir" ]; then
      export LD_LIBRARY_PATH="$dir:$LD_LIBRARY_PATH"
      echo "cuBLAS from $dir" | tee -a "$SUMMARY"
      missing=$(unresolved)
    fi
  fi
else
  echo "WARNING: no ldd here: the carried binaries' libraries are not checked" | tee -a "$SUMMARY"
fi
if [ -n "$missing" ]; then
  printf 'preflight FAILED: libraries not found:\n%s\n' "$missing" | tee -a "$SUMMARY" "$LOG"
  exit 2
fi

# The steps, one function each; they run in the order STEPS names them.
step_facts() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv \
    >>"$LOG" 2>&1
  nvidia-smi -q -d CLOCK,PERFORMANCE >>"$LOG" 2>&1
  grep -A1 "^name" "$LOG" | tail -1 | tee -a "$SUMMARY"
}
step_gpu_tests() {
  step "gpu tests" 90 "$BUILD/bin/test_gpu" "${ptx_args[@]}"
  [ -x "$BUILD/bin/test_e2e_gpu" ] && step "e2e gpu test" 90 "$BUILD/bin/test_e2e_gpu"
}
# (H200, 2026-11-27: 91 s for 33 decoders, ~2.8 s each; 2026-11-28: 150 s for 55, where df11 rows
# that read back kilobytes took <0.1 s each: the read-back and host compare of a decoder's 545 MB
# output are the likely cost. Since then decoded units are compared on the device (run_sweep's
# device.decode_verify), so the 67 decoders should take much less (not yet measured); a cut-off
# run loses the decoders registered last, the newest: the default experiment's decode rows hold
# the shortlist, so a tight budget can put this step last.)
step_decode() {
  step "decode throughput" 200 "$BUILD/bin/run_sweep" experiments/decode_throughput.toml \
    --backend cuda --out "$OUT_DIR/decode" "${ptx_args[@]}"
}
step_sweep() {
  step "default experiment" 240 "$BUILD/bin/run_sweep" experiments/nemo_layer.toml \
    --backend cuda --out "$OUT_DIR/sweep" "${ptx_args[@]}"
}
# The decode rows this run measured: the decode step's (every variant), else the default
# experiment's (its shortlist), whichever ran first in this call.
decode_results() {
  local f
  for f in "$OUT_DIR/decode/results.jsonl" "$OUT_DIR/sweep/results.jsonl"; do
    [ -f "$f" ] && echo "$f" && return
  done
  echo "$OUT_DIR/decode/results.jsonl"
}
# The e2e DF11 runs use the fastest variant of the official layout (the layout of the DF11
# directory they load; the fix64 variants read it too, with an index derived on upload) among
# this call's decode rows (decode_results), unless E2E_VARIANT says otherwise;
# the one e2e run with a count layout (no target; information) the fastest with DF11's tables
# and count bytes, unless E2E_CNT_VARIANT does.
fastest() { /usr/bin/env python3 scripts/device_profile.py --fastest "$(decode_results)" --match "$1"; }
step_e2e() {
  if [ -z "${E2E_VARIANT:-}" ]; then
    E2E_VARIANT=$(fastest '(lut8x4|lut8x4-smem|flat12|multi12|multi12n)\.gap5-(block|warp)\.[a-z0-9-]+\.t512\.b8(\.persist)?|(multi12ng?|multi11w)\.gap5-fix64\.[a-z0-9-]+\.t[0-9]+\.b8\.persist')
    [ -n "$E2E_VARIANT" ] && echo "e2e variant: $E2E_VARIANT (fastest official-layout decode)" | tee -a "$SUMMARY"
  fi
  if [ -z "${E2E_CNT_VARIANT:-}" ]; then
    E2E_CNT_VARIANT=$(fastest '.*\.gap5-w?cnt\..*')
    [ -n "$E2E_CNT_VARIANT" ] && echo "e2e count-layout variant: $E2E_CNT_VARIANT (fastest *.gap5-(w)cnt.* decode)" |
      tee -a "$SUMMARY"
  fi
  # The whole-matrix --overlap runs: the decoder of this call's fastest df11-overlap row at batch 1
  # of DF11's own layout (the default experiment's; a count-layout run would be information only
  # in device_report), unless E2E_OVERLAP_VARIANT says otherwise; without those rows
  # bench_generate's own choice (E2E_VARIANT's .dyn twin).
  if [ -z "${E2E_OVERLAP_VARIANT:-}" ] && [ -f "$OUT_DIR/sweep/results.jsonl" ]; then
    E2E_OVERLAP_VARIANT=$(/usr/bin/env python3 scripts/device_profile.py --fastest "$OUT_DIR/sweep/results.jsonl" \
      --fastest-method df11-overlap --batch 1 --match '.*\.gap5-(block|warp|fix64)\..*')
    [ -n "$E2E_OVERLAP_VARIANT" ] && echo "e2e overlap variant: $E2E_OVERLAP_VARIANT (fastest df11-overlap at batch 1)" |
      tee -a "$SUMMARY"
  fi
  export E2E_VARIANT="${E2E_VARIANT:-}"
  export E2E_CNT_VARIANT="${E2E_CNT_VARIANT:-}"
  export E2E_OVERLAP_VARIANT="${E2E_OVERLAP_VARIANT:-}"
  # 240 s by default (the last run took 213 s for 27 runs; there are 38 now, so the last ones may
  # be cut: each run's line is written as it ends); E2E_LIMIT_S gives it more where the call's
  # budget allows.
  step "e2e generation" "${E2E_LIMIT_S:-240}" harness/e2e/bench_generate.sh "$BUILD/bin/df11" "$OUT_DIR/e2e.jsonl"
}
# compute-sanitizer's tool (memcheck or racecheck) on small cases of every decoder, then on the
# forward pass's own kernels (embedding, RMSNorm, rope, attention, SwiGLU, argmax, synthesis,
# fused decode + GEMV in both decodes, chunked and overlapped slices, offload copies) on the tiny
# config: harness/e2e/sanitize_runs.txt, a few tokens per path, --check on each. API errors are
# not reported there: cuBLAS probes attributes that may fail by design, and the program checks
# every call of its own.
sanitize() {
  local tool=$1 cs
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  if [ ! -x "$cs" ]; then
    echo "compute-sanitizer not found" | tee -a "$SUMMARY"
    return
  fi
  local small=("$BUILD/bin/test_gpu" --small)
  [ "$tool" = racecheck ] && small+=(--no-damaged)
  step "$tool (small)" 75 "$cs" --tool "$tool" --error-exitcode 3 "${small[@]}"
  # 44 s for racecheck's 6 runs on the 2026-11-28 H200; sanitize_runs.txt has 7 now.
  step "$tool (e2e tiny)" 90 "$cs" --tool "$tool" --error-exitcode 3 --report-api-errors no \
    "$BUILD/bin/df11" generate --synthetic tiny --backend cuda --json --runs harness/e2e/sanitize_runs.txt
}
step_none() { :; }  # the preflight alone
step_memcheck() { sanitize memcheck; }
step_racecheck() { sanitize racecheck; }
step_profile() {
  local profile_methods plimit
  # One list however it was written: the README's runbook spreads it over lines.
  read -r -a profile_methods <<<"$(printf '%s' "${PROFILE_METHODS:-}" | tr '\n\t' '  ')"
  # The script stops starting methods 10 s before the step's limit (90 s, or what is left).
  plimit=$((BUDGET_S - (SECONDS - start)))
  [ "$plimit" -gt 90 ] && plimit=90
  # The reports and runs stay in a temporary folder (PROFILE_WORK names one; a device call
  # returns 8 files at most); the raw pages come back packed in $OUT_DIR/profile_raw.tar.gz.
  step "ncu profile" 90 /usr/bin/env python3 scripts/device_profile.py --build "$BUILD" --out "$OUT_DIR" \
    ${PROFILE_WORK:+--work "$PROFILE_WORK"} --budget $((plimit - 10)) --decode-results "$(decode_results)" \
    "${ptx_args[@]}" "${profile_methods[@]}"
  # Its table, and why nothing was measured where so, in the summary; the file itself goes (a
  # device call brings back at most 8 files, and the summary holds it now).
  if [ -f "$OUT_DIR/profile.txt" ]; then
    cat "$OUT_DIR/profile.txt" >>"$SUMMARY"
    rm -f "$OUT_DIR/profile.txt"
  fi
  # ncu's own output the same way, into the log.
  if [ -f "$OUT_DIR/profile.log" ]; then
    { echo "== profile.log (ncu's output)"; cat "$OUT_DIR/profile.log"; } >>"$LOG"
    rm -f "$OUT_DIR/profile.log"
  fi
  return 0
}
step_bench() {
  [ -x "$BUILD/bin/df11_bench" ] || return 0
  DF11_OFFICIAL_PTX="${OFFICIAL_PTX:-}" step "gpu micro-benchmarks" 90 \
    "$BUILD/bin/df11_bench" --benchmark_filter=gpu_ --benchmark_min_time=0.05 \
    --benchmark_out="$OUT_DIR/gpu_bench.json" --benchmark_out_format=json
  # df11_bench reports a failed benchmark (a decode that differs from its source, a launch error)
  # as an error in its JSON and still exits 0: any such error is a failure too.
  [ -f "$OUT_DIR/gpu_bench.json" ] || return 0
  if ! /usr/bin/env python3 - "$OUT_DIR/gpu_bench.json" >>"$LOG" 2>&1 <<'PY'; then
import json, sys
try:
    benchmarks = json.load(open(sys.argv[1])).get("benchmarks", [])
except ValueError as e:  # cut short: the file is incomplete
    sys.exit(f"gpu_bench.json: {e}")
errors = [b for b in benchmarks if b.get("error_occurred")]
# The published kernel is not ours: a decode.ptx the driver will not load is said (the decode
# step's table says it too), not counted as a failure of this step.
bad = [b for b in errors if not b.get("name", "").startswith("gpu_decode/official-ptx")]
for b in errors:
    print(f"{'benchmark' if b in bad else 'note: benchmark'} {b.get('name')}: {b.get('error_message')}")
sys.exit(1 if bad else 0)
PY
    printf '%-22s %-16s\n' "gpu micro-benchmarks" "FAILED (errors)" | tee -a "$SUMMARY"
    failed=$((failed + 1))
  fi
}

for s in $STEPS; do
  "step_$s"
done

# Short table last: decode GB/s per variant against the copy of the same run.
/usr/bin/env python3 - "$(decode_results)" <<'PY' | tee -a "$SUMMARY"
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
except OSError:
    sys.exit(0)
rows = [r for r in rows if "case" in r]
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
echo "total $((SECONDS - start))s of a ${BUDGET_S}s budget; $failed step(s) failed" | tee -a "$SUMMARY"
# The device tool brings back at most 8 files of $OUT: say so here, where the next call's STEPS
# can still be split, rather than find files missing afterwards.
n_out=$(find "$OUT_DIR" -type f | wc -l)
if [ "$n_out" -gt 8 ]; then
  echo "WARNING: $OUT_DIR holds $n_out files; a device call brings back 8: split STEPS over more calls" |
    tee -a "$SUMMARY"
fi
exit $((failed > 0))
