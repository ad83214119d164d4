#!/usr/bin/env bash
# run_sweep's run directory: the experiment's copy there is always this run's, a run that fails
# before any result leaves neither copy nor directory, and a finished run's directory is never
# reused. Usage: RUN_SWEEP EXPERIMENT SCRATCH
set -euo pipefail
bin=$1
experiment=$2
scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
fail() { echo "FAIL: $*"; exit 1; }

# An experiment that parses but fails when it runs (its checkpoint unit's directory is missing).
bad="$scratch/exp.toml"
cp "$experiment" "$bad"
printf '\n[[units]]\nkind = "checkpoint"\npath = "%s/nowhere"\nunit = "model.layers.0"\n' "$scratch" >>"$bad"
rc=0
"$bin" "$bad" --quick --backend cpu --out "$scratch/run" >"$scratch/out1" 2>"$scratch/err1" || rc=$?
[ "$rc" -eq 1 ] || fail "a run with a missing checkpoint exited $rc (expected 1): $(cat "$scratch/err1")"
grep -q "nowhere" "$scratch/err1" || fail "the error does not name the missing checkpoint: $(cat "$scratch/err1")"
[ ! -e "$scratch/run" ] || fail "the failed run left $(ls -A "$scratch/run")"

# Into a directory that exists, a failed run leaves what was there and nothing of its own.
mkdir -p "$scratch/kept"
touch "$scratch/kept/mine"
"$bin" "$bad" --quick --backend cpu --out "$scratch/kept" >/dev/null 2>&1 && fail "the bad run succeeded"
[ "$(ls -A "$scratch/kept")" = "mine" ] || fail "the failed run left $(ls -A "$scratch/kept") in an existing directory"

# --out the experiment's own directory, and a run that fails: the experiment stays (it is the
# "copy" the run found there, so not the run's to remove); likewise an identical copy the user
# keeps in the run directory.
mkdir -p "$scratch/own"
cp "$bad" "$scratch/own/exp.toml"
ln "$scratch/own/exp.toml" "$scratch/own/link.toml"
(cd "$scratch/own" && "$bin" exp.toml --quick --backend cpu --out . >/dev/null 2>&1) && fail "the bad run succeeded"
cmp -s "$bad" "$scratch/own/exp.toml" || fail "a failed run with --out the experiment's directory removed the experiment"
[ "$scratch/own/exp.toml" -ef "$scratch/own/link.toml" ] || fail "the experiment was replaced (its hard link broke)"
mkdir -p "$scratch/keepcopy"
cp "$bad" "$scratch/keepcopy/exp.toml"
"$bin" "$bad" --quick --backend cpu --out "$scratch/keepcopy" >/dev/null 2>&1 && fail "the bad run succeeded"
cmp -s "$bad" "$scratch/keepcopy/exp.toml" || fail "a failed run removed an identical copy that was there before it"

# The corrected experiment, under the same name and into the same directory: its copy is what ran.
cp "$experiment" "$bad"
"$bin" "$bad" --quick --backend cpu --out "$scratch/kept" >"$scratch/out2" 2>"$scratch/err2" ||
  fail "the corrected run failed: $(cat "$scratch/err2")"
cmp -s "$bad" "$scratch/kept/exp.toml" || fail "the run directory's copy is not the experiment that ran"
[ -s "$scratch/kept/results.jsonl" ] || fail "no results"
ls "$scratch/kept" | grep -q '\.tmp$' && fail "a temporary copy was left: $(ls "$scratch/kept")"

# A finished run's directory is refused, and its copy stays as it was.
printf '\n# edited\n' >>"$bad"
rc=0
"$bin" "$bad" --quick --backend cpu --out "$scratch/kept" >/dev/null 2>"$scratch/err3" || rc=$?
[ "$rc" -eq 1 ] || fail "a rerun into a finished run's directory exited $rc"
grep -q "already exists" "$scratch/err3" || fail "no 'already exists': $(cat "$scratch/err3")"
cmp -s "$experiment" "$scratch/kept/exp.toml" || fail "the refused rerun changed the finished run's copy"
# A file of the experiment's name in --out that is not this experiment is the user's: refused.
mkdir -p "$scratch/user"
echo "MY NOTES" >"$scratch/user/$(basename "$experiment")"
rc=0
"$bin" "$experiment" --quick --backend cpu --out "$scratch/user" >/dev/null 2>"$scratch/err4" || rc=$?
[ "$rc" -eq 1 ] && grep -q "exists and is not this experiment" "$scratch/err4" ||
  fail "a user's file of the experiment's name: rc $rc, $(cat "$scratch/err4")"
[ "$(cat "$scratch/user/$(basename "$experiment")")" = "MY NOTES" ] || fail "the user's file was replaced"
[ ! -e "$scratch/user/results.jsonl" ] || fail "the refused run wrote results"

# --out naming a file.
touch "$scratch/afile"
rc=0
"$bin" "$experiment" --quick --backend cpu --out "$scratch/afile" >/dev/null 2>"$scratch/err5" || rc=$?
[ "$rc" -eq 1 ] && grep -q "afile: exists and is not a directory" "$scratch/err5" ||
  fail "--out naming a file: rc $rc, $(cat "$scratch/err5")"

# Past a file-size limit (ulimit -f, in KiB): an error, and the results file cut back to whole lines.
rc=0
(ulimit -f 8; "$bin" "$experiment" --quick --backend cpu --out "$scratch/small" >/dev/null 2>"$scratch/err6") || rc=$?
[ "$rc" -eq 1 ] && grep -q "write failed: File too large; the file keeps its" "$scratch/err6" ||
  fail "past ulimit -f: rc $rc, $(tail -c 300 "$scratch/err6")"
/usr/bin/python3 - "$scratch/small/results.jsonl" <<'PY' || fail "past ulimit -f: results.jsonl is not whole lines"
import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
assert text and text.endswith("\n"), "empty, or a cut last line"
assert all(json.loads(l)["schema_version"] == 1 for l in text.splitlines())
PY
echo "ok: run directories hold the experiment that ran, and nothing of a failed run"
