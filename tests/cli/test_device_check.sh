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
# The published kernel's decode.ptx failing to load is a note, not a failure of the step.
mkdir -p "$scratch/fakebench/bin"
cat >"$scratch/fakebench/bin/df11_bench" <<'SH'
#!/usr/bin/env bash
for a in "$@"; do case "$a" in --benchmark_out=*) out=${a#--benchmark_out=} ;; esac; done
printf '{"benchmarks": [{"name": "gpu_copy/manual_time"}, {"name": "gpu_decode/official-ptx/manual_time", "error_occurred": true, "error_message": "PTX JIT failed"}]}' >"$out"
SH
chmod +x "$scratch/fakebench/bin/df11_bench"
STEPS="bench" BUILD="$scratch/fakebench" "$src/scripts/device_check.sh" "$scratch/e2" >/dev/null 2>&1 ||
  fail "an official-ptx load error alone should not fail the bench step: $(cat "$scratch/e2/summary.txt")"
grep -q "note: benchmark gpu_decode/official-ptx/manual_time: PTX JIT failed" "$scratch/e2/device_check.log" ||
  fail "the official-ptx error is not said"

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
  row multi12.gap5-cnt.exp-smem-v16.t512.b8.persist 0.0003 passed
  row multi12.gap5-cnt.exp-smem-v16.t256.b16.persist 0.00025 passed
  row multi12c.gap4-cnt.exp-smem-v16.t256.b16.persist 0.0001 passed
  row lut8x4.gap5-block.direct.t512.b8 0.0001 incorrect
  echo '{"cut off'
} >"$scratch/d/decode/results.jsonl"
# e2e_choice DIR VARIANT COUNT_VARIANT: the e2e step (skipped for budget) over the results under
# DIR names these two decoders.
e2e_choice() {
  STEPS="e2e" BUDGET_S=5 MIN_STEP_S=30 BUILD="$build" "$src/scripts/device_check.sh" "$1" >/dev/null 2>&1 ||
    fail "an e2e run skipped for budget should exit 0"
  grep -q "^e2e variant: $2 " "$1/summary.txt" || fail "e2e variant $2 not chosen: $(cat "$1/summary.txt")"
  grep -q "^e2e count-layout variant: $3 " "$1/summary.txt" ||
    fail "count-layout variant $3 not chosen: $(cat "$1/summary.txt")"
}
# The count-layout run's decoder: the fastest with DF11's tables (gap5), not the canonical one.
e2e_choice "$scratch/d" multi12.gap5-warp.exp-smem-v16.t512.b8.persist multi12.gap5-cnt.exp-smem-v16.t256.b16.persist
# Without decode-step results, the default experiment's decode rows (its shortlist) choose, and
# rows of other methods there do not count.
mkdir -p "$scratch/f/sweep"
{
  row multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist 0.00033 passed
  row multi12n.gap5-fix64.exp-smem-late-v16.t512.b8.persist 0.00030 passed
  row multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.persist 0.00034 passed
  printf '{"case": {"method": "df11", "variant": "multi12.gap5-warp.keep-v16.t512.b8"}, "summary": {"median_s": 0.00001}, "disposition": "passed"}\n'
} >"$scratch/f/sweep/results.jsonl"
e2e_choice "$scratch/f" multi12n.gap5-fix64.exp-smem-late-v16.t512.b8.persist \
  multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.persist
# The wide-root fix64 decoder (DF11's layout) is a candidate too; its dyn twin is not (the e2e
# whole-block runs take persist variants, the overlap runs the dyn twin of the one chosen).
mkdir -p "$scratch/g/sweep"
{
  row multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist 0.00033 passed
  row multi11w.gap5-fix64.exp-smem-v16.t512.b8.persist 0.00029 passed
  row multi11w.gap5-fix64.exp-smem-v16.t512.b8.dyn 0.00028 passed
  row multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.persist 0.00034 passed
} >"$scratch/g/sweep/results.jsonl"
e2e_choice "$scratch/g" multi11w.gap5-fix64.exp-smem-v16.t512.b8.persist \
  multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.persist
grep -q "^e2e overlap variant:" "$scratch/g/summary.txt" &&
  fail "an overlap variant chosen without df11-overlap rows: $(cat "$scratch/g/summary.txt")"
# The whole-matrix --overlap runs' decoder: the fastest passed df11-overlap row at batch 1 of the
# default experiment (not a faster one at another batch, nor one that failed).
mkdir -p "$scratch/h/sweep"
orow() { printf '{"case": {"method": "df11-overlap", "variant": "%s", "batch": %s}, "summary": {"median_s": %s}, "disposition": "%s"}\n' "$@"; }
{
  row multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist 0.00033 passed
  row multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.persist 0.00034 passed
  orow multi12n.gap5-fix64.exp-smem-v16.t512.b8.dyn 1 0.00058 passed
  orow multi12n.gap5-fix64.exp-smem-nh-v16.t512.b8 1 0.00045 passed
  orow multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.dyn 1 0.00040 incorrect
  orow multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.dyn 2 0.00030 passed
} >"$scratch/h/sweep/results.jsonl"
e2e_choice "$scratch/h" multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist \
  multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.persist
grep -q "^e2e overlap variant: multi12n.gap5-fix64.exp-smem-nh-v16.t512.b8 " "$scratch/h/summary.txt" ||
  fail "overlap variant not the fastest df11-overlap at batch 1: $(cat "$scratch/h/summary.txt")"
# Steps run in the order STEPS names them (a tight budget then cuts the last ones), and a name
# that is no step ends the run before the preflight, so a typo cannot spend a lent GPU's call.
STEPS="decode gpu_tests" BUILD="$build" "$src/scripts/device_check.sh" "$scratch/o" >/dev/null 2>&1 &&
  fail "decode and gpu_tests without a device should fail the run"
[ "$(grep '^== ' "$scratch/o/device_check.log" | cut -d' ' -f2-3 | tr '\n' ,)" = "decode throughput,gpu tests,e2e gpu," ] ||
  fail "steps not in STEPS order: $(grep '^== ' "$scratch/o/device_check.log")"
set +e
STEPS="gpu_test sweep" BUILD="$build" "$src/scripts/device_check.sh" "$scratch/u" >"$scratch/u.out" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || fail "an unknown step should end the run with 2, got $rc"
grep -q "unknown step 'gpu_test'" "$scratch/u.out" || fail "the unknown step is not named: $(cat "$scratch/u.out")"
grep -qs "^== " "$scratch/u/device_check.log" && fail "a step ran although STEPS named an unknown one"
# The profile step with a stand-in ncu (DF11_NCU): it writes the report run_sweep's launches
# would have made, and its import prints tests/gate/data/ncu_raw.csv. Every default method is
# profiled (no decode results, no decode.ptx: five), and the table reaches the summary.
cat >"$scratch/ncu" <<'SH'
#!/usr/bin/env bash
case "${FAKE_NCU:-ok}" in
  nocounters) echo "==ERROR== Failed to initialize the profiler: LibraryNotLoaded" >&2; exit 1 ;;
  broken) echo "$*" >>"$FAKE_NCU_ARGS.broken"; echo "==ERROR== something else" >&2; exit 1 ;;
esac
if [ "$1" = "--import" ]; then cat "$FAKE_NCU_CSV"; exit 0; fi
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && : >"$2.ncu-rep"; echo "$1" >>"$FAKE_NCU_ARGS"; shift; done
SH
chmod +x "$scratch/ncu"
export FAKE_NCU_CSV="$src/tests/gate/data/ncu_raw.csv" FAKE_NCU_ARGS="$scratch/ncu_args"
PROFILE_WORK="$scratch/pw" DF11_NCU="$scratch/ncu" STEPS="profile" BUILD="$build" "$src/scripts/device_check.sh" \
  "$scratch/p" >/dev/null 2>&1 ||
  fail "profile with a working ncu should pass: $(cat "$scratch/p/summary.txt")"
grep -q "^ncu profile *ok" "$scratch/p/summary.txt" || fail "profile step not reported ok"
grep -q "^decode:lut8x4.gap5-block.smem-out.t512.b8 *gap_decode_persistent_kernel" "$scratch/p/summary.txt" ||
  fail "profile table not in the summary: $(cat "$scratch/p/summary.txt")"
[ "$(wc -l <"$scratch/p/profile.jsonl")" = 10 ] || fail "expected 5 methods x 2 kernels in profile.jsonl"
# What comes back from the device: the raw pages and experiments in one archive, no folder of
# per-method files (a device call returns 8 files at most).
[ ! -e "$scratch/p/profile" ] || fail "per-method files under the output folder"
# What comes back is at most 8 files: the table and ncu's output are folded into the summary and
# the log, not left as files of their own.
[ ! -e "$scratch/p/profile.txt" ] && [ ! -e "$scratch/p/profile.log" ] ||
  fail "profile.txt or profile.log left in the output folder: $(ls "$scratch/p")"
grep -q "^== profile.log (ncu's output)" "$scratch/p/device_check.log" || fail "ncu's output not in device_check.log"
[ "$(find "$scratch/p" -type f | wc -l)" -le 8 ] || fail "more than 8 files: $(ls "$scratch/p")"
grep -q "WARNING: .* holds .* files" "$scratch/p/summary.txt" && fail "a warning about files where there are few"
[ "$(tar -tzf "$scratch/p/profile_raw.tar.gz" | grep -c '\.csv$')" = 5 ] || fail "profile_raw.tar.gz lacks the 5 raw pages"
mkdir -p "$scratch/p/raw" && tar -xzf "$scratch/p/profile_raw.tar.gz" -C "$scratch/p/raw"
cmp -s "$scratch/p/raw/3.toml" "$scratch/pw/3.toml" || fail "the archive's experiment differs from the work folder's"
grep -q '^batches = \[1\]' "$scratch/p/raw/3.toml" || fail "df11-fused@1 not profiled at batch 1"
grep -q '"df11-fused:multi12.gap5-cnt.exp-smem-v16.t256.b16.persist"' "$scratch/p/raw/4.toml" ||
  fail "the one-pass fused decode not profiled"
# The experiments it writes are valid for run_sweep, here on the cpu backend: df11-fused@1 as
# written (not_supported there), a decode one with the CPU's own decoder in place of the GPU
# variant (which the cpu backend does not know).
sed 's/"decode:[^"]*"/"decode:cpu"/' "$scratch/p/raw/0.toml" >"$scratch/p/cpu0.toml"
for t in "$scratch/p/cpu0.toml" "$scratch/p/raw/3.toml" "$scratch/p/raw/4.toml"; do
  "$build/bin/run_sweep" "$t" --backend cpu --quick --out "$t.run" >/dev/null 2>&1 || fail "run_sweep refuses $t"
  grep -q '"disposition":"\(passed\|not_supported\)"' "$t.run/results.jsonl" || fail "$t: no case row"
done
grep -qx -- "--clock-control" "$FAKE_NCU_ARGS" && grep -qx "none" "$FAKE_NCU_ARGS" || fail "ncu must leave the clocks alone"
# PROFILE_METHODS written over lines, as the README's runbook writes it: every method is profiled
# (read as one line, only the first line's were).
PROFILE_METHODS=$'decode:multi12.gap5-warp.exp-smem-v16.t512.b8\n     decode:flat12.gap5-warp.smem-out.t512.b8' \
  PROFILE_WORK="$scratch/pw5" DF11_NCU="$scratch/ncu" STEPS="profile" BUILD="$build" "$src/scripts/device_check.sh" \
  "$scratch/p5" >/dev/null 2>&1 || fail "profile with methods over lines should pass: $(cat "$scratch/p5/summary.txt")"
[ "$(tar -tzf "$scratch/p5/profile_raw.tar.gz" | grep -c '\.csv$')" = 2 ] || fail "methods over lines: not both profiled"
grep -q '"decode:flat12.gap5-warp.smem-out.t512.b8"' "$scratch"/pw5/*.toml || fail "the second line's method not profiled"
# No counters on this runtime (gVisor): said, and the step passes; another ncu error fails it.
FAKE_NCU=nocounters DF11_NCU="$scratch/ncu" STEPS="profile" BUILD="$build" "$src/scripts/device_check.sh" \
  "$scratch/p2" >/dev/null 2>&1 || fail "a runtime without counters should not fail the run"
grep -q "cannot read the hardware counters here: Failed to initialize the profiler" "$scratch/p2/summary.txt" ||
  fail "missing counters not said: $(cat "$scratch/p2/summary.txt")"
if PROFILE_WORK="$scratch/pw3" FAKE_NCU=broken DF11_NCU="$scratch/ncu" STEPS="profile" BUILD="$build" "$src/scripts/device_check.sh" \
  "$scratch/p3" >/dev/null 2>&1; then
  fail "an ncu failure should fail the profile step"
fi
grep -q "^ncu profile *FAILED" "$scratch/p3/summary.txt" || fail "profile failure not reported"
# Each method was tried with fewer named metrics, then the sections alone, then --set basic, each
# time into a fresh run directory.
[ "$(grep -c -- "--out $scratch/pw3/0_run" "$FAKE_NCU_ARGS.broken")" = 4 ] || fail "not four attempts"
grep -q -- "--set basic .*--out $scratch/pw3/0_run3" "$FAKE_NCU_ARGS.broken" || fail "no --set basic attempt"
DF11_NCU="$scratch/none" STEPS="profile" BUILD="$build" "$src/scripts/device_check.sh" "$scratch/p4" >/dev/null 2>&1 ||
  fail "no ncu should not fail the run"
grep -q "no ncu on this machine" "$scratch/p4/summary.txt" || fail "missing ncu not said"
echo "device_check.sh: skip, budget, failure and profile paths ok"
