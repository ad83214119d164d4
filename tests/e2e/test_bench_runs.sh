#!/usr/bin/env bash
# The e2e runs a lent GPU will be given, checked here without one: harness/e2e/bench_generate.sh
# (the device check's e2e step) writes its runs for every decoder the device check may pick as
# E2E_VARIANT (scripts/device_check.sh's regex over `df11 variants`) and for the other variables
# it takes, and `df11 generate --dry-run` (through a stand-in that adds the flag) checks each line
# as --backend cuda would and names its decoders; so do the sanitizer runs
# (harness/e2e/sanitize_runs.txt). A flag misspelt, an option combination the CUDA path refuses
# or a decoder without the fused decode a line asks for fails here, not on the GPU.
# Usage: test_bench_runs.sh SOURCE_DIR DF11_BINARY
set -uo pipefail
src=${1:?usage: test_bench_runs.sh SOURCE_DIR DF11_BINARY}
df11=${2:?usage: test_bench_runs.sh SOURCE_DIR DF11_BINARY}
# shellcheck source=script_lib.sh
. "$src/tests/e2e/script_lib.sh" bench_runs

cat >"$work/df11" <<EOF
#!/bin/sh
if [ "\$1" = generate ]; then exec "$df11" "\$@" --dry-run; fi
exec "$df11" "\$@"
EOF
chmod +x "$work/df11"

# bench ENV...: bench_generate.sh with these variables; every run must pass its dry run.
bench() {
  local out="$work/out.jsonl" rc n_runs n_ok
  rm -f "$out"
  env "$@" bash "$src/harness/e2e/bench_generate.sh" "$work/df11" "$out" >"$work/log" 2>&1
  rc=$?
  n_runs=$(sed -n 's/.*(\([0-9]*\) runs)$/\1/p' "$work/log")
  n_ok=$(grep -c '"dry_run"' "$out" 2>/dev/null)
  if [ "$rc" != 0 ] || [ -z "$n_runs" ] || [ "$n_ok" != "$n_runs" ]; then
    fail "bench_generate.sh with $*: rc $rc, $n_ok of ${n_runs:-?} runs pass their dry run"
    grep '"error"' "$out" | head -3
    return
  fi
  checked=$((checked + n_runs))
}

# Every E2E_VARIANT the device check may pick (its regex for the fastest official-layout decoder).
regex=$(sed -n "s/.*E2E_VARIANT=\$(fastest '\([^']*\)').*/\1/p" "$src/scripts/device_check.sh")
[ -n "$regex" ] || fail "no E2E_VARIANT regex found in scripts/device_check.sh"
variants=$("$df11" variants | awk 'NF && $1 !~ /^variant$/ && $0 !~ /^ / {print $1}')
checked=0
picked=0
for v in $variants; do
  if [[ $v =~ ^($regex)$ ]]; then
    bench E2E_VARIANT="$v"
    picked=$((picked + 1))
  fi
done
((picked >= 10)) || fail "only $picked variants match the device check's E2E_VARIANT regex"
# The default decoders, and the other variables.
bench E2E_VARIANT=
bench E2E_CNT_VARIANT=multi12n.gap5-wcnt.exp-smem-reg-v16.t256.b16.persist
bench E2E_CNT_VARIANT=multi12n.gap5-cnt.exp-smem-reg-v16.t256.b16.persist
bench E2E_OVERLAP_VARIANT=multi12n.gap5-fix64.exp-smem-nh-v16.t512.b8
bench E2E_VARIANT=multi12n.gap5-fix64.exp-smem-late-v16.t512.b8.persist E2E_KERNEL_TIMES=0

# A decoder that does not exist is refused, run by run (the test can fail).
rm -f "$work/out.jsonl"
E2E_VARIANT=no.such.variant bash "$src/harness/e2e/bench_generate.sh" "$work/df11" "$work/out.jsonl" >/dev/null 2>&1 &&
  fail "bench_generate.sh with an unknown E2E_VARIANT passed its dry run"
grep -q "no decoder variant 'no.such.variant'" "$work/out.jsonl" ||
  fail "an unknown E2E_VARIANT was not named in the dry run's errors"

# What the cpu backend refuses is refused by the dry run too.
for args in "--weights cpu-offload" "--chunk-bytes 1000" "--weights df11 --variant no.such.variant"; do
  # shellcheck disable=SC2086  # a list of words
  if "$df11" generate --synthetic tiny --backend cpu --prompt-len 4 --max-new-tokens 2 --dry-run $args \
    >"$work/cpu.out" 2>&1; then
    fail "--backend cpu $args passed its dry run: $(cat "$work/cpu.out")"
  fi
  grep -q "^REFUSED (the command line)" "$work/cpu.out" || fail "--backend cpu $args: no REFUSED line: $(cat "$work/cpu.out")"
done
"$df11" generate --synthetic tiny --backend cpu --prompt-len 4 --max-new-tokens 2 --dry-run >"$work/cpu.out" 2>&1 ||
  fail "a plain cpu run did not pass its dry run: $(cat "$work/cpu.out")"
grep -q "^ok      (the command line): cpu df11; decode_cpu" "$work/cpu.out" || fail "cpu dry run: $(cat "$work/cpu.out")"

# The sanitizer runs (tiny config, CUDA).
if ! "$df11" generate --synthetic tiny --backend cuda --json --dry-run \
  --runs "$src/harness/e2e/sanitize_runs.txt" >"$work/san.jsonl" 2>"$work/log"; then
  fail "harness/e2e/sanitize_runs.txt: $(grep -m1 error "$work/san.jsonl")"
fi
[ "$(grep -c '"dry_run"' "$work/san.jsonl")" -ge 5 ] || fail "sanitize_runs.txt: fewer than 5 runs checked"

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "bench_runs: $checked bench_generate runs ($picked E2E_VARIANT choices) and the sanitizer runs pass their dry run"
