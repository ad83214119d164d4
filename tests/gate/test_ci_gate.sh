#!/usr/bin/env bash
# Tests scripts/ci_gate in a scratch copy of the repository layout (its own throwaway git
# repository, never the project's): no baselines, a SLOW committed run, an uncommitted run,
# kernel resource growth with and without a baseline update in the same commit, spills, and
# outside git. Usage: test_ci_gate.sh SOURCE_DIR DF11_BINARY SCRATCH_DIR
set -uo pipefail

src=$(realpath "${1:?usage: test_ci_gate.sh SOURCE_DIR DF11_BINARY SCRATCH_DIR}")
df11=$(realpath "${2:?usage: test_ci_gate.sh SOURCE_DIR DF11_BINARY SCRATCH_DIR}")
scratch=${3:?usage: test_ci_gate.sh SOURCE_DIR DF11_BINARY SCRATCH_DIR}
py=/usr/bin/python3
rm -rf "$scratch"
mkdir -p "$scratch/repo"
repo=$(realpath "$scratch/repo")
cd "$repo" || exit 1

failures=0
# expect CODE "needle" [label]: scripts/ci_gate exits CODE and prints needle.
expect() {
  local code=$1 needle=$2 label=$3 out rc
  out=$(scripts/ci_gate 2>&1)
  rc=$?
  if [[ $rc != "$code" || $out != *"$needle"* ]]; then
    echo "FAIL ($label): exit $rc (expected $code), looked for '$needle' in:"
    echo "$out" | grep -v '^[a-z_]* [a-z.0-9]* ' | sed 's/^/  | /'
    failures=$((failures + 1))
  else
    echo "ok: $label"
  fi
}
gitq() { git -c user.name=test -c user.email=test@example.com -c commit.gpgsign=false "$@" >/dev/null; }

mkdir -p scripts reports/baselines build/release/bin
cp "$src/scripts/ci_gate" "$src/scripts/kernel_resources.py" "$src/scripts/promote_baseline" scripts/
ln -s "$df11" build/release/bin/df11
echo "/build/" >.gitignore
# Two made-up kernels as ptxas would report them.
write_resources() {  # FILE REGISTERS_OF_K0 SPILL_STORES_OF_K1
  cat >"$1" <<EOF
{"schema_version": 1, "kernels": [
 {"mangled": "_Z2k0v", "name": "k0()", "arch": "sm_90", "registers": $2, "stack_bytes": 0, "spill_store_bytes": 0,
  "spill_load_bytes": 0, "static_smem_bytes": 1024, "cmem0_bytes": 0, "object": "k.cu.o"},
 {"mangled": "_Z2k1v", "name": "k1()", "arch": "sm_90", "registers": 64, "stack_bytes": 0, "spill_store_bytes": $3,
  "spill_load_bytes": 0, "static_smem_bytes": 0, "cmem0_bytes": 0, "object": "k.cu.o"}]}
EOF
}
fake() { "$py" "$src/tests/gate/make_fake_results.py" "$@" >/dev/null || exit 1; }

gitq init -q .
write_resources build/release/kernel_resources.json 32 0
write_resources reports/baselines/kernel_resources.json 32 0
fake reports/20261127T000000Z_h100-80gb-hbm3_nemo_layer --seed 1
gitq add -A && gitq commit -qm "first"
expect 0 "no GPU baselines yet" "no baselines: passes (first commit, no HEAD~1)"

scripts/promote_baseline reports/20261127T000000Z_h100-80gb-hbm3_nemo_layer >/dev/null || exit 1
gitq add -A && gitq commit -qm "baseline"
expect 0 "gate: PASS" "the baseline's own run: SAME"

fake reports/20261128T000000Z_h100-80gb-hbm3_nemo_layer --seed 2 --scale 1.1
expect 0 "20261127T000000Z_h100-80gb-hbm3_nemo_layer against" "a newer uncommitted run is ignored"
gitq add -A && gitq commit -qm "slow run"
expect 1 "SLOW" "a newer committed 10% slower run fails"
# A run directory named after the backend is still matched by the device in its rows.
fake reports/20261129T000000Z_cuda_nemo_layer --seed 3
gitq add -A && gitq commit -qm "cuda-named run"
expect 0 "20261129T000000Z_cuda_nemo_layer against" "runs are matched by the device of their rows"
fake reports/20261130T000000Z_h200_nemo_layer --seed 4 --device "NVIDIA H200"
gitq add -A && gitq commit -qm "other device"
expect 0 "20261129T000000Z_cuda_nemo_layer against" "another device's run is not compared"
# A device check commits runs of several experiments at once; only the baseline's experiment is
# compared with it, however the directories sort.
fake reports/20261130T000000Z_h100-80gb-hbm3_zz_decode --seed 6 --scale 1.5 --experiment decode_throughput
gitq add -A && gitq commit -qm "another experiment, newer by name"
expect 0 "20261129T000000Z_cuda_nemo_layer against reports/baselines/h100-80gb-hbm3.jsonl (nemo_layer)" \
  "a newer run of another experiment is not compared"

write_resources build/release/kernel_resources.json 40 0
expect 1 "registers 40 > baseline 32" "register growth without a baseline update fails"
write_resources reports/baselines/kernel_resources.json 40 0
gitq add -A && gitq commit -qm "kernel change with its baseline"
expect 0 "growth over the previous baseline (accepted)" "register growth with the baseline updated in the commit"
write_resources build/release/kernel_resources.json 40 16
expect 1 "spills 16 B stores" "spills fail"
write_resources build/release/kernel_resources.json 40 0

# Outside git every run directory counts (committed or not), and no baseline history is read.
fake reports/20261201T000000Z_h100-80gb-hbm3_nemo_layer --seed 5 --scale 1.1
expect 0 "20261129T000000Z_cuda_nemo_layer against" "uncommitted again"
mkdir -p "$scratch/plain"
tar --exclude=.git -cf - . | (cd "$scratch/plain" && tar xf -)
cd "$scratch/plain" || exit 1
# The scratch space may lie inside the project's checkout (the build dir): do not find that.
GIT_CEILING_DIRECTORIES=$(realpath "$scratch")
export GIT_CEILING_DIRECTORIES
expect 1 "20261201T000000Z_h100-80gb-hbm3_nemo_layer against" "outside git, the uncommitted run counts"
# device_report.py names runs by date (2026-12-02_...), run_sweep by date and time: the two
# forms order by time, not as strings (where '2026-' sorted before every '2026112...').
fake reports/2026-11-26_h100-80gb-hbm3_nemo_layer --seed 7 --scale 1.5
expect 1 "20261201T000000Z_h100-80gb-hbm3_nemo_layer against" "an older dash-dated run is not the newest"
fake reports/2026-12-02_h100-80gb-hbm3_nemo_layer --seed 8
expect 0 "2026-12-02_h100-80gb-hbm3_nemo_layer against" "a newer dash-dated run is the newest"
rm reports/baselines/*.jsonl
rm -f build/release/kernel_resources.json
expect 0 "built without CUDA" "no kernel_resources.json, no baselines"

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all ci_gate checks passed"
