#!/usr/bin/env bash
# scripts/device_check.sh on this GPU-less machine, against the release build: the steps that
# need a device fail (the test binaries' "no GPU" exit 77 counts as a failure there), the budget
# skips what does not fit, a stale carry is named, a missing library stops the run before any
# step, benchmark errors fail the bench step, and the summary, the log and the exit status say
# so. Keeps the one script a lent GPU runs from failing on itself.
# Usage: test_device_check.sh SOURCE_DIR BUILD_DIR SCRATCH
set -euo pipefail
src=$1 build=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch"
fail() { echo "FAIL: $*" >&2; exit 1; }

# The GPU tests alone: both binaries exit 77 without a device, which on the device machine this
# script is for means the GPU was not seen: two failures, and the log says why.
if STEPS="gpu_tests" BUILD="$build" "$src/scripts/device_check.sh" "$scratch/a" >/dev/null 2>&1; then
  fail "gpu_tests without a device should fail the run"
fi
grep -q "^gpu tests *FAILED (no GPU)" "$scratch/a/summary.txt" || fail "gpu tests not reported as failed"
grep -q "^e2e gpu test *FAILED (no GPU)" "$scratch/a/summary.txt" || fail "e2e gpu test not reported as failed"
grep -q "2 step(s) failed" "$scratch/a/summary.txt" || fail "summary line missing"
grep -q "cudaGetDeviceCount: " "$scratch/a/device_check.log" || fail "the log does not say why CUDA saw no device"
grep -q "BUILD_INFO is missing" "$scratch/a/summary.txt" || fail "a carry without BUILD_INFO not named"

# A carry whose BUILD_INFO names other sources is named stale; one that matches is not.
mkdir -p "$scratch/carry/bin"
ln -s "$build/bin/test_gpu" "$scratch/carry/bin/test_gpu"
printf 'commit x\nsource_hash 0000000000000000\n' >"$scratch/carry/BUILD_INFO"
STEPS="none" BUILD="$scratch/carry" "$src/scripts/device_check.sh" "$scratch/s1" >/dev/null 2>&1 || fail "preflight only"
grep -q "WARNING: the carry was built from other sources" "$scratch/s1/summary.txt" || fail "stale carry not named"
printf 'commit x\nsource_hash %s\n' "$("$src/scripts/source_hash")" >"$scratch/carry/BUILD_INFO"
STEPS="none" BUILD="$scratch/carry" "$src/scripts/device_check.sh" "$scratch/s2" >/dev/null 2>&1 || fail "preflight only"
grep -q "WARNING" "$scratch/s2/summary.txt" && fail "a matching carry called stale: $(cat "$scratch/s2/summary.txt")"
grep -q "^carry: commit x" "$scratch/s2/summary.txt" || fail "BUILD_INFO not in the summary"

# A carried binary whose library is missing stops the run before any step (exit 2).
(cd "$scratch" && echo 'int f(void) { return 0; }' >f.c && cc -shared -fPIC -o libdf11gone.so f.c &&
  echo 'int f(void); int main(void) { return f(); }' >m.c && cc m.c -L. -ldf11gone -o carry/bin/needs_gone &&
  rm libdf11gone.so) || fail "could not build the test binary"
set +e
STEPS="gpu_tests" BUILD="$scratch/carry" "$src/scripts/device_check.sh" "$scratch/s3" >/dev/null 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || fail "a missing library should end the run with 2, got $rc"
grep -q "preflight FAILED: libraries not found" "$scratch/s3/summary.txt" || fail "missing library not reported"
grep -q "needs_gone: .*libdf11gone.so" "$scratch/s3/summary.txt" || fail "the binary and library not named"
grep -q "^== " "$scratch/s3/device_check.log" && fail "a step ran after the preflight failed"

# Benchmarks that report errors (here: no device) fail the bench step although df11_bench exits 0.
if STEPS="bench" BUILD="$build" "$src/scripts/device_check.sh" "$scratch/e" >/dev/null 2>&1; then
  fail "bench errors should fail the run"
fi
grep -q "^gpu micro-benchmarks *FAILED (errors)" "$scratch/e/summary.txt" || fail "bench errors not reported"

# A budget too small for any step: every selected step is skipped, none runs.
STEPS="gpu_tests decode sweep" BUDGET_S=5 MIN_STEP_S=30 BUILD="$build" \
  "$src/scripts/device_check.sh" "$scratch/b" >/dev/null 2>&1 || fail "an all-skipped run should exit 0"
[ "$(grep -c 'SKIPPED (budget)' "$scratch/b/summary.txt")" -ge 3 ] || fail "budget skips not reported"
grep -q "^== " "$scratch/b/device_check.log" && fail "a step ran although the budget was spent"

# A step that fails (the cuda backend without a device) makes the run fail, and the log says why.
if STEPS="decode" BUILD="$build" "$src/scripts/device_check.sh" "$scratch/c" >/dev/null 2>&1; then
  fail "decode without a device should fail the run"
fi
grep -q "^decode throughput *FAILED" "$scratch/c/summary.txt" || fail "failed step not reported"
grep -qi "no CUDA device" "$scratch/c/device_check.log" || fail "log does not say why"
# The e2e step's variant: the fastest passed decode of the official layout in this run's decode
# results (a faster variant of another layout and a failed one do not count).
mkdir -p "$scratch/d/decode"
row() { printf '{"case": {"method": "decode", "variant": "%s"}, "summary": {"median_s": %s}, "disposition": "%s"}\n' "$@"; }
{
  row flat12.gap5-warp.smem-out.t512.b8 0.0009 passed
  row multi12.gap5-warp.exp-smem-v16.t512.b8.persist 0.0004 passed
  row multi12c.gap4-tpos.exp-smem-v16.t256.b16 0.0002 passed
  row lut8x4.gap5-block.direct.t512.b8 0.0001 incorrect
  echo '{"cut off'
} >"$scratch/d/decode/results.jsonl"
STEPS="e2e" BUDGET_S=5 MIN_STEP_S=30 BUILD="$build" "$src/scripts/device_check.sh" "$scratch/d" >/dev/null 2>&1 ||
  fail "an e2e run skipped for budget should exit 0"
grep -q "^e2e variant: multi12.gap5-warp.exp-smem-v16.t512.b8.persist " "$scratch/d/summary.txt" ||
  fail "e2e variant not chosen from the decode results: $(cat "$scratch/d/summary.txt")"
echo "device_check.sh: skip, budget and failure paths ok"
