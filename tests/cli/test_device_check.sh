#!/usr/bin/env bash
# scripts/device_check.sh on this GPU-less machine, against the release build: the steps that
# need a device skip (rc 77) or fail, the budget skips what does not fit, and the summary, the
# log and the exit status say so. Keeps the one script a lent GPU runs from failing on itself.
# Usage: test_device_check.sh SOURCE_DIR BUILD_DIR SCRATCH
set -euo pipefail
src=$1 build=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch"
fail() { echo "FAIL: $*" >&2; exit 1; }

# The GPU tests alone: both binaries skip without a device; nothing fails.
STEPS="gpu_tests" BUILD="$build" "$src/scripts/device_check.sh" "$scratch/a" >/dev/null 2>&1 ||
  fail "gpu_tests without a device should exit 0"
grep -q "^gpu tests *SKIPPED (rc 77)" "$scratch/a/summary.txt" || fail "gpu tests not reported as skipped"
grep -q "^e2e gpu test *SKIPPED (rc 77)" "$scratch/a/summary.txt" || fail "e2e gpu test not reported as skipped"
grep -q "0 step(s) failed" "$scratch/a/summary.txt" || fail "summary line missing"

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
