#!/usr/bin/env bash
# `df11 generate` end to end on the tiny synthetic model (CPU): the BF16-vs-DF11 check passes and
# says so, the JSON form parses with the fields benchmark scripts read, the tokenizer options work,
# and user errors exit non-zero with a message naming the problem.
# Usage: test_generate_cli.sh DF11_BINARY
set -uo pipefail

df11=${1:?usage: test_generate_cli.sh DF11_BINARY}
data=$(dirname "$(realpath "$0")")/data
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

out=$("$df11" generate --synthetic tiny --prompt-ids 1,2,3 --max-new-tokens 16 --batch 4 --weights df11 --check \
  --backend cpu --threads 2 2>&1) || fail "generate --check exited $?: $out"
grep -q "check: passed" <<<"$out" || fail "no 'check: passed' in: $out"
[[ $(grep -c "^row [0-3]: " <<<"$out") == 4 ]] || fail "expected 4 rows of tokens in: $out"
grep -q "^prefill: 12 tokens" <<<"$out" || fail "prefill line: $out"
grep -q "^decode: 60 tokens" <<<"$out" || fail "decode line: $out"

json=$("$df11" generate --synthetic tiny --prompt-len 9 --max-new-tokens 5 --batch 2 --weights bf16 --check \
  --backend cpu --threads 2 --json 2>/dev/null) || fail "generate --json exited $?"
python3 - "$json" <<'PY' || fail "JSON output: $json"
import json, sys
j = json.loads(sys.argv[1])
assert j["check"] == "passed" and j["check_steps"] == 5, j
assert j["batch"] == 2 and j["prompt_len"] == 9 and len(j["tokens"]) == 2 and len(j["tokens"][0]) == 5
for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "peak_device_bytes", "peak_host_rss_bytes", "chunk_bytes", "fused_gemv"):
    assert k in j, k
assert j["prefill_tokens_per_s"] > 0 and j["decode_tokens_per_s"] > 0
PY

# Same tokens from the CLI's three weight paths on the CPU (bf16, df11, a decoder variant).
a=$("$df11" generate --synthetic tiny --prompt-ids 5,6,7 --max-new-tokens 6 --weights bf16 --backend cpu | grep "^row 0")
b=$("$df11" generate --synthetic tiny --prompt-ids 5,6,7 --max-new-tokens 6 --weights df11 --backend cpu | grep "^row 0")
c=$("$df11" generate --synthetic tiny --prompt-ids 5,6,7 --max-new-tokens 6 --weights df11 --backend cpu \
  --variant flat12.gap5-warp.smem-out.t512.b8 | grep "^row 0")
[[ -n $a && $a == "$b" && $a == "$c" ]] || fail "tokens differ: '$a' '$b' '$c'"

# --runs: several runs in one process from one model load; each line's options on top of the
# command line's; a failing run leaves an error line and the others go on (exit 1); the tokens
# of a run equal those of the same options run alone.
runs=$(mktemp)
cat >"$runs" <<'RUNS'
# a comment, then a blank line

--weights bf16 --batch 2 --max-new-tokens 4
--weights df11 --check --prompt-ids 5,6,7 --max-new-tokens 3
--weights cpu-offload
--weights df11 --variant flat12.gap5-warp.smem-out.t512.b8 --max-new-tokens 4 --batch 2
RUNS
json=$("$df11" generate --synthetic tiny --prompt-len 6 --backend cpu --threads 2 --json --runs "$runs" 2>/dev/null)
rc=$?
[[ $rc == 1 ]] || fail "--runs with a failing run exited $rc, expected 1"
alone=$("$df11" generate --synthetic tiny --prompt-len 6 --backend cpu --threads 2 --json --weights bf16 --batch 2 \
  --max-new-tokens 4 2>/dev/null)
python3 - "$json" "$alone" <<'PY' || fail "--runs JSON lines: $json"
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
alone = json.loads(sys.argv[2])
assert len(rows) == 4, rows
assert [r["run"].split()[1] for r in rows] == ["bf16", "df11", "cpu-offload", "df11"], rows
assert rows[0]["batch"] == 2 and rows[0]["prompt_len"] == 6 and rows[0]["tokens"] == alone["tokens"], rows[0]
assert rows[1]["check"] == "passed" and rows[1]["prompt_len"] == 3 and rows[1]["new_tokens"] == 3, rows[1]
assert "error" in rows[2] and "needs --backend cuda" in rows[2]["error"], rows[2]
assert rows[3]["tokens"] == alone["tokens"] and "flat12" in rows[3]["method"], rows[3]
assert rows[3]["variant"] == "flat12.gap5-warp.smem-out.t512.b8" and rows[0]["variant"] == "", (rows[0], rows[3])
# Only CUDA models keep device weights between runs; every run says whether it reused them.
assert [r.get("weights_reused") for r in rows] == [False, False, None, False] and alone["weights_reused"] is False, rows
# setup_s split: the units' host bits are made once (the first run), DF11 encoded once (the
# first df11 run; the flat12 variant reads the same layout), and both are parts of setup_s.
for r in (rows[0], rows[1], rows[3], alone):
    assert 0 <= r["setup_host_bits_s"] and 0 <= r["setup_encode_s"], r
    assert r["setup_host_bits_s"] + r["setup_encode_s"] <= r["setup_s"] + 1e-9, r
assert rows[0]["setup_host_bits_s"] > 0 and rows[0]["setup_encode_s"] == 0, rows[0]
assert rows[1]["setup_host_bits_s"] == 0 and rows[1]["setup_encode_s"] > 0, rows[1]
assert rows[3]["setup_host_bits_s"] == 0 and rows[3]["setup_encode_s"] == 0, rows[3]
PY
printf -- '--weights bf16\n--wieghts df11\n' >"$runs"
expect_runs_error() {
  local err
  if err=$("$df11" generate --synthetic tiny --prompt-len 4 --backend cpu --runs "$runs" 2>&1 >/dev/null); then
    fail "--runs with a bad line succeeded"
  elif ! grep -qF -- "$1" <<<"$err"; then
    fail "--runs: no '$1' in: $err"
  fi
}
expect_runs_error "line '--wieghts df11'"
# A line's --fused-mma is checked as the command line's would be (CLI11's range is not there).
printf -- '--weights df11 --fused-gemv --fused-mma --fused-max-rows 65\n--fused-mma\n' >"$runs"
expect_runs_error "--fused-max-rows must be in [0, 64] with --fused-mma, got 65"
expect_runs_error "--fused-mma says which fused kernels --fused-gemv runs"
: >"$runs"
expect_runs_error "holds no run"
printf -- '--weights bf16\n' >"$runs"
if err=$("$df11" generate --synthetic tiny --prompt-len 4 --backend cpu --runs "$runs" --dump-logits "$runs.l" 2>&1); then
  fail "--dump-logits with --runs succeeded"
else
  grep -qF -- "--dump-logits writes one run's logits: not with --runs" <<<"$err" || fail "--dump-logits --runs: $err"
fi
[[ ! -e $runs.l ]] && ! compgen -G "$runs.l.tmp-*" >/dev/null || fail "--dump-logits left a file behind a refusal"
rm -f "$runs"

# The device check's compute-sanitizer runs (harness/e2e/sanitize_runs.txt) parse: on the cpu
# backend the first (DF11 --check) passes and every CUDA-only run fails for its backend alone.
sruns=$(dirname "$(realpath "$0")")/../../harness/e2e/sanitize_runs.txt
json=$("$df11" generate --synthetic tiny --backend cpu --threads 2 --json --runs "$sruns" 2>/dev/null)
python3 - "$json" <<'PY' || fail "sanitize_runs.txt on cpu: $json"
import json, sys
lines = [json.loads(l) for l in sys.argv[1].splitlines()]
assert len(lines) >= 5, lines
assert lines[0].get("check") == "passed", lines[0]
for l in lines[1:]:
    assert "cuda" in l.get("error", "").lower() or "CUDA" in l.get("error", ""), l
PY

# Tokenizer: text in, text out (the fixture tokenizer has 4000 ids, so the model gets 4000).
out=$("$df11" generate --synthetic tiny --vocab 4000 --tokenizer "$data/tekken_small.json" --prompt "Hello world" \
  --max-new-tokens 3 --backend cpu 2>&1) || fail "generate --prompt exited $?: $out"
grep -qE "^prompt: [0-9]+ tokens: 1 " <<<"$out" || fail "prompt line: $out"
grep -q "^row 0 text: " <<<"$out" || fail "no decoded text: $out"
# A model vocabulary larger than the tokenizer's (padded): ids past it print as [id N], said up
# front, and the run succeeds (it used to fail after generating, at the text).
out=$("$df11" generate --synthetic tiny --vocab 8000 --tokenizer "$data/tekken_small.json" --prompt-ids 7000,7500 \
  --max-new-tokens 6 --backend cpu 2>&1) || fail "generate with a larger model vocabulary exited $?: $out"
grep -q "^note: the model's vocabulary (8000) is larger than the tokenizer's (4000)" <<<"$out" || fail "no note: $out"
grep -qE "^row 0 text: .*\[id [4-7][0-9]{3}\]" <<<"$out" || fail "no [id N] for an id past the tokenizer: $out"

# expect_error "needle" ARGS...: df11 generate ARGS must exit non-zero with needle on stderr.
expect_error() {
  local needle=$1
  shift
  local err
  if err=$("$df11" generate "$@" 2>&1 >/dev/null); then
    fail "generate $* succeeded"
  elif ! grep -qF -- "$needle" <<<"$err"; then
    fail "generate $*: no '$needle' in: $err"
  fi
}
expect_error "exactly one of --prompt-ids" --synthetic tiny --max-new-tokens 2
expect_error "--prompt-len must be 0 or more, got -3" --synthetic tiny --prompt-len -3 --backend cpu
expect_error "--prompt-ids: '' is not a non-negative integer" --synthetic tiny --prompt-ids 1,2, --backend cpu
# Sizes past what a run can hold are refused naming the option (they ended in std::bad_alloc, a
# wrapped position count, or a run over every layer first); memory that runs out anyway says so.
expect_error "--batch must be in [1, 65535], got 100000" --synthetic tiny --prompt-len 4 --batch 100000 --backend cpu
expect_error "--max-new-tokens 2147483647 and a prompt of 4 tokens: a row holds at most 1048576 positions" \
  --synthetic tiny --prompt-len 4 --max-new-tokens 2147483647 --backend cpu
expect_error "--prompt-len must be 0 or more, got -4" --synthetic tiny --prompt-ids 1,2 --prompt-len -4 --backend cpu
expect_error "--layers: Value 5000 not in range 1 to 4096" --synthetic tiny --prompt-len 4 --layers 5000 --backend cpu
expect_error "--vocab: Value 100000000 not in range 1 to 67108864" --synthetic tiny --prompt-len 4 --vocab 100000000 --backend cpu
expect_error "--threads: Value 5000 not in range 0 to 4096" --synthetic tiny --prompt-len 4 --threads 5000 --backend cpu
expect_error "--seed: '-3' is not an integer" --synthetic tiny --prompt-len 4 --seed -3 --backend cpu
if err=$( (ulimit -v 4000000 2>/dev/null; "$df11" generate --synthetic tiny --prompt-len 4 --batch 60000 --max-new-tokens 1000 \
  --backend cpu) 2>&1 >/dev/null); then
  fail "a run past an address-space limit succeeded"
elif ! grep -qF "generate: out of host memory for this run (--batch 60000, --max-new-tokens 1000)" <<<"$err"; then
  fail "out of memory, but: $err"
fi
# Threads the system refuses (1000 stacks of 8 MB in 4 GB) leave the work to those that started
# (the pool hung in its constructor's unwinding).
out=$( (ulimit -v 4000000 2>/dev/null; timeout 60 "$df11" generate --synthetic tiny --prompt-len 4 --max-new-tokens 2 \
  --threads 1000 --backend cpu) 2>&1) || fail "generate with threads the system refuses exited $?: $out"
grep -q "^row 0" <<<"$out" || fail "generate with refused threads printed no tokens: $out"
expect_error "needs --tokenizer" --synthetic tiny --prompt "hi"
expect_error "needs --backend cuda" --synthetic tiny --prompt-ids 1 --weights cpu-offload --backend cpu
expect_error "outside the model's vocabulary" --synthetic tiny --prompt-ids 1,5000 --backend cpu
expect_error "not a non-negative integer" --synthetic tiny --prompt-ids 1,x --backend cpu
expect_error "no decoder variant 'nope'" --synthetic tiny --prompt-ids 1 --weights df11 --variant nope --backend cpu
expect_error "not a directory" --model /nonexistent --prompt-ids 1 --backend cpu
expect_error "--config gives a --model DIR its architecture" --synthetic tiny --prompt-ids 1 --config /nonexistent \
  --backend cpu
expect_error "chunked GEMMs (--chunk-bytes) are a CUDA method" --synthetic tiny --prompt-ids 1 --chunk-bytes 4096 \
  --backend cpu
expect_error "run on the CUDA backend only" --synthetic tiny --prompt-ids 1 --fused-gemv --backend cpu
expect_error "--overlap decodes (or copies) weights on a second CUDA stream" --synthetic tiny --prompt-ids 1 --overlap \
  --backend cpu
expect_error "not cpu-offload" --synthetic tiny --prompt-ids 1 --fused-gemv --weights cpu-offload --backend cpu
expect_error "'normal' needs --chunk-bytes" --synthetic tiny --prompt-ids 1 --slice-l2 normal --backend cpu
expect_error "--slice-l2" --synthetic tiny --prompt-ids 1 --chunk-bytes 4096 --slice-l2 pinned --backend cpu
expect_error "'serial' needs --chunk-bytes" --synthetic tiny --prompt-ids 1 --slice-start serial --backend cpu
expect_error "--slice-start" --synthetic tiny --prompt-ids 1 --chunk-bytes 4096 --slice-start later --backend cpu
expect_error "--decode-order orders the units" --synthetic tiny --prompt-ids 1 --decode-order descending --backend cpu
expect_error "--decode-order" --synthetic tiny --prompt-ids 1 --decode-order backwards --backend cpu
expect_error "--kernel-times traces the GPU's kernels (CUPTI): it needs --backend cuda" --synthetic tiny --prompt-ids 1 \
  --max-new-tokens 3 --kernel-times 2 --backend cpu
expect_error "a generation of --max-new-tokens 3 has 2 decode steps to trace" --synthetic tiny --prompt-ids 1 \
  --max-new-tokens 3 --kernel-times 3 --backend cpu
expect_error "--graphs replays a decode step's kernels as one CUDA graph" --synthetic tiny --prompt-ids 1 --graphs \
  --backend cpu
expect_error "--kernel-times must be 0 or more" --synthetic tiny --prompt-ids 1 --kernel-times -1 --backend cpu
expect_error "it needs --fused-gemv" --synthetic tiny --prompt-ids 1 --fused-max-rows 4 --backend cpu
expect_error "--fused-max-rows" --synthetic tiny --prompt-ids 1 --fused-gemv --fused-max-rows 17 --backend cpu
expect_error "--fused-mma says which fused kernels --fused-gemv runs" --synthetic tiny --prompt-ids 1 --fused-mma \
  --backend cpu
expect_error "run on the CUDA backend only" --synthetic tiny --prompt-ids 1 --fused-gemv --fused-mma --backend cpu
expect_error "--fused-max-rows must be in [0, 16] (with --fused-mma: up to 64), got 17" --synthetic tiny --prompt-ids 1 --fused-gemv \
  --fused-max-rows 17 --backend cpu
expect_error "--fused-max-rows: Value 65 not in range 0 to 64" --synthetic tiny --prompt-ids 1 \
  --fused-gemv --fused-mma --fused-max-rows 65 --backend cpu
expect_error "not a Tekken tokenizer" --synthetic tiny --tokenizer "$data/tekken_small_cases.json" --prompt x \
  --backend cpu
expect_error "--synthesize-on applies to --synthetic only" --model /nonexistent --prompt-ids 1 --synthesize-on host \
  --backend cpu
if ! "$df11" generate --synthetic tiny --prompt-ids 1 --max-new-tokens 1 --backend cuda >/dev/null 2>&1; then
  expect_error "--backend cuda" --synthetic tiny --prompt-ids 1 --backend cuda
  expect_error "--synthesize-on cuda: " --synthetic tiny --prompt-ids 1 --backend cpu --synthesize-on cuda
else
  # With a device: --runs keeps a run's device weights for the next runs that use the same ones
  # (chunked and overlapped runs too: overlapped slices, then whole matrices each decoded on the
  # second stream) and drops those the next run does not use; reused weights give the same
  # tokens, pass the check and count in the run's peak.
  runs=$(mktemp)
  cat >"$runs" <<'RUNS'
--weights df11 --check
--weights df11 --check
--weights df11 --check --chunk-bytes 65536 --overlap
--weights df11 --check --overlap
--weights bf16
--weights df11
RUNS
  json=$("$df11" generate --synthetic tiny --prompt-len 6 --batch 2 --max-new-tokens 4 --backend cuda --json \
    --runs "$runs" 2>/dev/null) || fail "--runs on cuda exited $?"
  rm -f "$runs"
  python3 - "$json" <<'PY' || fail "--runs on cuda, reused weights: $json"
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
assert len(rows) == 6 and all("error" not in r for r in rows), rows
assert [r["weights_reused"] for r in rows] == [False, True, True, True, True, False], [r["weights_reused"] for r in rows]
assert all(r["check"] == "passed" for r in rows[:4]), [r["check"] for r in rows]
# Whole matrices overlapped run whole-block GEMMs: the same tokens as plain DF11 and BF16.
assert rows[1]["tokens"] == rows[0]["tokens"] == rows[3]["tokens"] == rows[4]["tokens"] == rows[5]["tokens"], rows
assert rows[3]["overlap"] and not rows[3]["chunk_bytes"], rows[3]
for r in rows:
    assert r["peak_device_bytes"] >= r["weight_bytes"], r
PY
fi
# Stop ids: a row ends at its first (its tokens a prefix of the full run's), --check still
# passes, the JSON says how many rows stopped; --stop-at-eos reads a checkpoint's config.json.
full=$("$df11" generate --synthetic tiny --prompt-len 4 --max-new-tokens 10 --batch 2 --backend cpu --json 2>/dev/null)
stop=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tokens"][0][3])' "$full")
out=$("$df11" generate --synthetic tiny --prompt-len 4 --max-new-tokens 10 --batch 2 --backend cpu --json --check \
  --eos-id "$stop" 2>/dev/null) || fail "generate --eos-id exited $?: $out"
python3 - "$full" "$out" "$stop" <<'PY' || fail "--eos-id: $out"
import json, sys
full, got, stop = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
assert got["check"] == "passed" and got["stop_ids"] == [stop], got
for f, g in zip(full["tokens"], got["tokens"]):
    n = f.index(stop) + 1 if stop in f else len(f)
    assert g == f[:n], (f, g)
assert got["rows_stopped"] == sum(stop in f for f in full["tokens"]) >= 1, got
assert got["timing"]["decode_tokens"] == sum(len(g) - 1 for g in got["tokens"]), got
PY
out=$("$df11" generate --synthetic tiny --prompt-len 4 --max-new-tokens 3 --backend cpu --stop-at-eos 2>&1) ||
  fail "generate --stop-at-eos exited $?: $out"
grep -q "^stop ids 2: " <<<"$out" || fail "--stop-at-eos on --synthetic: no 'stop ids 2' in: $out"
expect_error "--eos-id: 'x' is not a list of token ids" --synthetic tiny --prompt-len 4 --eos-id x --backend cpu
expect_error "--eos-id: '' is not a list of token ids" --synthetic tiny --prompt-len 4 --eos-id "" --backend cpu
expect_error "stop id 5000 (--eos-id, --stop-at-eos) is outside the model's vocabulary [0, 1024)" --synthetic tiny \
  --prompt-len 4 --eos-id 5000 --backend cpu
eosdir=$(mktemp -d)
if "$df11" synth --arch tiny "$eosdir/m" >/dev/null 2>&1; then
  out=$("$df11" generate --model "$eosdir/m" --prompt-ids 1,2 --max-new-tokens 2 --backend cpu --stop-at-eos 2>&1) ||
    fail "--stop-at-eos with a checkpoint exited $?: $out"
  grep -q "^stop ids 2: " <<<"$out" || fail "--stop-at-eos did not read config.json's eos_token_id: $out"
  python3 - "$eosdir/m/config.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
j["eos_token_id"] = [2, 7]
json.dump(j, open(sys.argv[1], "w"))
PY
  out=$("$df11" generate --model "$eosdir/m" --prompt-ids 1,2 --max-new-tokens 2 --backend cpu --stop-at-eos 2>&1)
  grep -q "^stop ids 2,7: " <<<"$out" || fail "--stop-at-eos with a list of eos ids: $out"
  python3 - "$eosdir/m/config.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
del j["eos_token_id"]
json.dump(j, open(sys.argv[1], "w"))
PY
  expect_error "config.json names no eos_token_id; give --eos-id or --tokenizer" --model "$eosdir/m" --prompt-ids 1,2 \
    --max-new-tokens 2 --backend cpu --stop-at-eos
  rm "$eosdir/m/config.json"
  expect_error "--stop-at-eos: cannot read $eosdir/m/config.json (its eos_token_id); give --eos-id" --model "$eosdir/m" \
    --prompt-ids 1,2 --max-new-tokens 2 --backend cpu --stop-at-eos
else
  fail "df11 synth of the tiny model failed"
fi
rm -rf "$eosdir"

# A DF11 directory whose stream is damaged where no metadata can tell (three bytes inside layer 0's
# encoded exponents): an error naming the file and the unit at load, before any token, for every
# weight form (a GPU decoder would read the stream unchecked), never garbage tokens.
ckdir=$(mktemp -d)
if "$df11" synth --arch tiny "$ckdir/bf16" >/dev/null 2>&1 && "$df11" compress "$ckdir/bf16" "$ckdir/df11" >/dev/null 2>&1; then
  # --check on the cpu backend with decode_cpu under test: the BF16 partner's words come from the
  # serial reference decoder (the same decoder on both sides would agree whatever it gave); with
  # a --variant (its host emulation under test) or without --check, from decode_cpu.
  out=$("$df11" generate --model "$ckdir/df11" --prompt-ids 1,2 --max-new-tokens 2 --weights df11 --backend cpu --check 2>&1)
  [[ $out == *"(BF16 words by the serial reference decoder)"* && $out == *"check: passed"* ]] ||
    fail "a cpu --check of a DF11 directory does not take its BF16 words from the reference decoder: $out"
  for extra in "" "--check --variant multi12n.gap5-fix64.exp-smem-v16.t256.b8.persist"; do
    # shellcheck disable=SC2086
    out=$("$df11" generate --model "$ckdir/df11" --prompt-ids 1,2 --max-new-tokens 2 --weights df11 --backend cpu $extra 2>&1)
    [[ $out == *"row 0"* && $out != *"reference decoder"* ]] || fail "generate $extra: $out"
  done
  python3 - "$ckdir/df11/model_layers_0.safetensors" <<'PY' || fail "could not damage the stream"
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
lo, hi = json.loads(data[8:8 + n])["model.layers.0.encoded_exponent"]["data_offsets"]
at = 8 + n + lo + (hi - lo) // 3
for k in range(3):
    data[at + k] ^= 0x5A
open(path, "wb").write(data)
PY
  for w in df11 bf16; do
    expect_error "$ckdir/df11/model_layers_0.safetensors: unit model.layers.0: " --model "$ckdir/df11" --prompt-ids 1,2 \
      --max-new-tokens 2 --weights "$w" --backend cpu
  done
  expect_error "$ckdir/df11/model_layers_0.safetensors: unit model.layers.0: " --model "$ckdir/df11" --prompt-ids 1,2 \
    --max-new-tokens 2 --weights df11 --variant multi12n.gap5-fix64.exp-smem-v16.t256.b8.persist --backend cpu
  out=$("$df11" generate --model "$ckdir/df11" --prompt-ids 1,2 --max-new-tokens 2 --weights df11 --backend cpu 2>/dev/null)
  [[ -z $out || $out != *"row 0"* ]] || fail "tokens printed from a damaged checkpoint: $out"
else
  fail "df11 synth/compress of the tiny model failed"
fi
rm -rf "$ckdir"

# --dry-run refuses --fused-gemv for a DF11 model whose decoder's image the fused kernels cannot
# read (they share it: lut8x4 has no multi root), not first when the model is built on a GPU; a
# BF16 model's fused kernels make their own and take the same variant.
out=$("$df11" generate --synthetic nemo --dry-run --backend cuda --weights df11 --fused-gemv \
  --variant lut8x4.gap5-block.smem-out.t512.b8 --prompt-ids 1 --max-new-tokens 2 2>&1) &&
  fail "dry run of a DF11 --fused-gemv on lut8x4 passed: $out"
[[ $out == *"REFUSED"*"multi-symbol and flat tables"* ]] || fail "dry run of a DF11 --fused-gemv on lut8x4: $out"
out=$("$df11" generate --synthetic nemo --dry-run --backend cuda --weights bf16 --fused-gemv \
  --variant lut8x4.gap5-block.smem-out.t512.b8 --prompt-ids 1 --max-new-tokens 2 2>&1) ||
  fail "dry run of a BF16 --fused-gemv on lut8x4 refused: $out"

# Where the weights were generated is part of the model's description; the host's by default on the CPU.
out=$("$df11" generate --synthetic tiny --prompt-ids 1,2 --max-new-tokens 2 --backend cpu --synthesize-on host 2>&1) ||
  fail "generate --synthesize-on host exited $?: $out"
grep -q "^model: synthetic tiny (seed 0): " <<<"$out" || fail "model line: $out"

echo "$failures failure(s)"
[[ $failures == 0 ]]
