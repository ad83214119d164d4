#!/usr/bin/env bash
# End-to-end test of `df11 gate` on the small JSONL files in tests/gate/data/: the exit code and
# the telling part of the output of each situation (same, slow, worse, other device, bad input).
# Usage: test_gate_cli.sh DF11_BINARY DATA_DIR
set -uo pipefail

df11=${1:?usage: test_gate_cli.sh DF11_BINARY DATA_DIR}
data=${2:?usage: test_gate_cli.sh DF11_BINARY DATA_DIR}
[[ -x $df11 ]] || { echo "no df11 binary at $df11"; exit 1; }

failures=0
# expect CODE "needle" ARGS...: df11 gate ARGS exits with CODE and prints needle (stdout or stderr).
expect() {
  local code=$1 needle=$2
  shift 2
  local out rc
  out=$("$df11" gate "$@" 2>&1)
  rc=$?
  if [[ $rc != "$code" ]]; then
    echo "FAIL: df11 gate $* exited $rc, expected $code"
    echo "$out"
    failures=$((failures + 1))
  elif [[ $out != *"$needle"* ]]; then
    echo "FAIL: df11 gate $* output lacks '$needle'"
    echo "$out"
    failures=$((failures + 1))
  else
    echo "ok: df11 gate $* -> $rc"
  fi
}

b=$data/baseline.jsonl
TMPDIR_GATE=$(mktemp -d)
trap 'rm -rf "$TMPDIR_GATE"' EXIT
expect 0 "gate: PASS (5 cases, 5 matched: 5 SAME; threshold 3.0%)" "$b" "$b"
expect 0 "+1.0%" "$b" "$data/candidate_same.jsonl"
expect 1 "SLOW" "$b" "$data/candidate_slow.jsonl"
expect 1 "gate: FAIL" "$b" "$data/candidate_slow.jsonl"
expect 0 "SAME" "$b" "$data/candidate_slow.jsonl" --threshold 0.2
expect 1 "WORSE (passed -> incorrect): mismatch at element 17" "$b" "$data/candidate_worse.jsonl"
expect 2 "refusing to compare results of different devices" "$b" "$data/candidate_h200.jsonl"
expect 0 "warning: devices differ" "$b" "$data/candidate_h200.jsonl" --ignore-device
expect 3 "malformed.jsonl:2: malformed JSON" "$b" "$data/malformed.jsonl"
expect 3 "schema_v0.jsonl:2: schema_version 0 is not supported" "$data/schema_v0.jsonl" "$b"
expect 3 "nonexistent.jsonl: cannot open" "$b" "$data/nonexistent.jsonl"
expect 3 "threshold must be in [0, 1]" "$b" "$b" --threshold 3
# A bad option or a missing argument exits 3 as well (not CLI11's own codes).
expect 3 "" "$b" "$b" --no-such-option
expect 3 "" "$b"
expect 3 "" "$b" "$b" --threshold abc
expect 0 "--allow-missing" --help
# A candidate missing a baseline case fails unless allowed.
head -n 4 "$b" >"$TMPDIR_GATE/four.jsonl"
expect 1 "FAIL: 1 case(s) of the baseline are missing" "$b" "$TMPDIR_GATE/four.jsonl"
expect 0 "gate: PASS" "$b" "$TMPDIR_GATE/four.jsonl" --allow-missing

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all gate CLI checks passed"
