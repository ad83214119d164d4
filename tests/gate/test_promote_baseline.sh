#!/usr/bin/env bash
# scripts/promote_baseline in a scratch copy of the repository layout (it writes
# reports/baselines/ beside itself): a clean fake run is promoted; a run with incorrect rows is
# refused, naming them, with --force too, and promoted with --allow-incorrect; a dirty tree's run
# still needs --force. Usage: test_promote_baseline.sh SOURCE_DIR SCRATCH_DIR
set -uo pipefail
src=$(realpath "${1:?usage: test_promote_baseline.sh SOURCE_DIR SCRATCH_DIR}")
scratch=${2:?usage: test_promote_baseline.sh SOURCE_DIR SCRATCH_DIR}
py=/usr/bin/python3
rm -rf "$scratch" && mkdir -p "$scratch/scripts" "$scratch/reports"
cp "$src/scripts/promote_baseline" "$scratch/scripts/"
cd "$scratch" || exit 1
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
baseline=reports/baselines/h100-80gb-hbm3.jsonl
clean=reports/20261127T000000Z_h100-80gb-hbm3_nemo_layer
wrong=reports/20261128T000000Z_h100-80gb-hbm3_nemo_layer
"$py" "$src/tests/gate/make_fake_results.py" "$clean" >/dev/null || exit 1
"$py" "$src/tests/gate/make_fake_results.py" "$wrong" --incorrect >/dev/null || exit 1

"$py" scripts/promote_baseline "$clean" >"$scratch/out" 2>&1 || fail "a clean run was refused: $(cat "$scratch/out")"
cmp -s "$clean/results.jsonl" "$baseline" || fail "the clean run is not the baseline"

for flags in "" "--force"; do
  # shellcheck disable=SC2086  # no flags, or one
  if "$py" scripts/promote_baseline "$wrong" $flags >"$scratch/out" 2>&1; then
    fail "a run with an incorrect row was promoted (flags: '$flags')"
  fi
  grep -qF "refusing: 1 row(s) incorrect (lm_head df11:lut8x4.gap5-block.smem-out.t512.b8@1024)" "$scratch/out" ||
    fail "the refusal does not name the incorrect row (flags: '$flags'): $(cat "$scratch/out")"
  grep -qF "pass --allow-incorrect to promote anyway" "$scratch/out" ||
    fail "the refusal does not name --allow-incorrect (flags: '$flags'): $(cat "$scratch/out")"
  cmp -s "$clean/results.jsonl" "$baseline" || fail "a refused run replaced the baseline (flags: '$flags')"
done
"$py" scripts/promote_baseline "$wrong" --allow-incorrect >"$scratch/out" 2>&1 ||
  fail "--allow-incorrect did not promote: $(cat "$scratch/out")"
grep -qF "warning: 1 row(s) incorrect" "$scratch/out" || fail "--allow-incorrect promoted without a warning"
cmp -s "$wrong/results.jsonl" "$baseline" || fail "--allow-incorrect: the run is not the baseline"

# A dirty tree's run with an incorrect row: each flag accepts its own problem only.
dirty=reports/20261129T000000Z_h100-80gb-hbm3_nemo_layer
mkdir -p "$dirty"
sed 's/"git_dirty": false/"git_dirty": true/' "$wrong/results.jsonl" >"$dirty/results.jsonl"
"$py" scripts/promote_baseline "$dirty" --allow-incorrect >"$scratch/out" 2>&1 &&
  fail "a dirty tree's run was promoted without --force"
grep -qF "pass --force to promote anyway" "$scratch/out" || fail "dirty and --allow-incorrect: $(cat "$scratch/out")"
"$py" scripts/promote_baseline "$dirty" >"$scratch/out" 2>&1 && fail "a dirty run with incorrect rows was promoted"
grep -qF "pass --force and --allow-incorrect to promote anyway" "$scratch/out" ||
  fail "dirty with incorrect rows, no flag: $(cat "$scratch/out")"
"$py" scripts/promote_baseline "$dirty" --force --allow-incorrect >"$scratch/out" 2>&1 ||
  fail "--force --allow-incorrect did not promote: $(cat "$scratch/out")"

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "promote_baseline: refusals and their flags ok"
