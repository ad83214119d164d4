#!/usr/bin/env bash
# `df11 generate` (CPU) against an independent float64 numpy Mistral (tests/e2e/reference_mistral.py,
# written from HF's modeling_mistral.py): every step's logits within 2e-4 of the logit scale and
# the same greedy tokens, on the synthetic tiny model and on two checkpoints whose shapes the tiny
# one does not have (head_dim other than hidden / heads, 3 query heads per KV head, 1 KV head,
# tied embeddings, other eps and rope_theta, a 40-token prompt); then the same model compressed to
# DF11 gives the very same logits, bit for bit. (Measured: ~3e-6 of the scale; a wrong rotary
# pairing or KV-head mapping in either implementation is ~1.)
# Usage: test_reference_forward.sh SOURCE_DIR DF11_BINARY
set -uo pipefail
src=${1:?usage: test_reference_forward.sh SOURCE_DIR DF11_BINARY}
df11=${2:?usage: test_reference_forward.sh SOURCE_DIR DF11_BINARY}
ref="$src/tests/e2e/reference_mistral.py"
py=/usr/bin/python3  # Debian's, with python3-numpy (scripts/setup)
# shellcheck source=script_lib.sh
. "$src/tests/e2e/script_lib.sh" reference

# check NAME PROMPT_IDS BATCH: BF16 logits against the reference, then DF11's against BF16's.
check() {
  local m="$work/$1" ids=$2 batch=$3
  if ! "$df11" generate --model "$m" --prompt-ids "$ids" --max-new-tokens 12 --batch "$batch" --backend cpu \
    --weights bf16 --dump-logits "$m.bf16.jsonl" >"$m.log" 2>&1; then
    fail "$1: generate: $(tail -2 "$m.log")"
    return
  fi
  "$py" "$ref" compare "$m" "$m.bf16.jsonl" --prompt-ids "$ids" --batch "$batch" || fail "$1: against the reference"
  "$df11" compress "$m" "$m.df11" >/dev/null 2>&1 || fail "$1: compress"
  "$df11" generate --model "$m.df11" --prompt-ids "$ids" --max-new-tokens 12 --batch "$batch" --backend cpu \
    --weights df11 --dump-logits "$m.df11.jsonl" >"$m.log" 2>&1 || fail "$1: generate df11: $(tail -2 "$m.log")"
  cmp -s "$m.bf16.jsonl" "$m.df11.jsonl" || fail "$1: DF11's logits differ from BF16's"
}

"$df11" synth --arch tiny "$work/tiny" >/dev/null || fail "synth"
check tiny 5,6,7 2
"$py" "$ref" make "$work/gqa3" --hidden 128 --heads 6 --kv-heads 2 --head-dim 48 --layers 3 --eps 1e-4 \
  --theta 1e4 --vocab 400 --seed 2 || fail "make gqa3"
check gqa3 3,1,4,1,5,9,2,6 3
"$py" "$ref" make "$work/tied" --hidden 96 --heads 3 --kv-heads 1 --eps 1e-6 --theta 5e5 --vocab 300 --tie \
  --seed 3 || fail "make tied"
check tied "$(seq -s, 10 49)" 1

# The comparison can fail: a dump of other logits does.
sed 's/"rows": \[\[/"rows": [[9.5, /' "$work/tiny.bf16.jsonl" | sed 's/, [-0-9.e]*\]/]/' >"$work/bad.jsonl"
"$py" "$ref" compare "$work/tiny" "$work/bad.jsonl" --prompt-ids 5,6,7 --batch 2 >/dev/null &&
  fail "the comparison passed logits shifted by one place"

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "reference_forward: three models' logits match the independent reference, and DF11's match BF16's"
