#!/usr/bin/env bash
# End-to-end benchmark of `df11 generate` on a GPU machine: synthetic Mistral-Nemo (full size),
# BF16 vs DF11 vs CPU-offload at batch 1, 8 and 64, plus a 2048-token prefill; one JSON object
# per run appended to OUT (JSON Lines). The first run also checks DF11 against BF16 bit for bit.
# The model is synthesized and compressed once (`df11 synth`, `df11 compress`: a 16.6 GB DF11
# directory under E2E_WORK_DIR, default $TMPDIR or /tmp, removed at the end); every run loads
# it (BF16 runs decode it on the host). If that fails (disk), runs synthesize in memory.
# E2E_VARIANT names the DF11 decoder variant of every DF11 run (default: df11 generate's own,
# kDefaultCudaVariant); scripts/device_check.sh sets it to the fastest variant of the official
# layout its decode step measured. The --fused-gemv runs (fused decode + GEMV at batch <= 16) take
# it only when it is a multi12.gap5 variant (the fused kernels read that decoder's image), else
# df11 generate's kDefaultFusedVariant.
# Usage: bench_generate.sh DF11_BINARY OUT.jsonl [NEW_TOKENS] [PROMPT_LEN]
set -uo pipefail

df11=${1:?usage: bench_generate.sh DF11_BINARY OUT.jsonl [NEW_TOKENS] [PROMPT_LEN]}
out=${2:?usage: bench_generate.sh DF11_BINARY OUT.jsonl [NEW_TOKENS] [PROMPT_LEN]}
new=${3:-32}
plen=${4:-128}
failures=0
vargs=()
[ -n "${E2E_VARIANT:-}" ] && vargs=(--variant "$E2E_VARIANT") && echo "+ DF11 runs use variant $E2E_VARIANT" >&2
fargs=()
case "${E2E_VARIANT:-}" in multi12.gap5*) fargs=(--variant "$E2E_VARIANT") ;; esac

work=${E2E_WORK_DIR:-${TMPDIR:-/tmp}}/df11_e2e_nemo.$$
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT  # the device check's time limit: still remove the 16.6 GB
source_args=(--synthetic nemo)
mkdir -p "$work"
echo "+ df11 synth ${E2E_SYNTH_ARGS:---arch mistral-nemo}, df11 compress (once)" >&2
# E2E_SYNTH_ARGS / E2E_BACKEND: a small dry run elsewhere (e.g. "--arch tiny" and cpu).
if "$df11" synth ${E2E_SYNTH_ARGS:---arch mistral-nemo} "$work/bf16" >&2 && "$df11" compress "$work/bf16" "$work/df11" >&2; then
  source_args=(--model "$work/df11")
else
  echo "synth/compress failed: every run synthesizes the model in memory" >&2
fi
rm -rf "$work/bf16"

run() {
  echo "+ df11 generate ${source_args[*]} $*" >&2
  if ! "$df11" generate "${source_args[@]}" --backend "${E2E_BACKEND:-cuda}" --json "$@" >>"$out"; then
    echo "FAILED: df11 generate $*" >&2
    failures=$((failures + 1))
  fi
}

# Runs in order of importance, each appended as it finishes, so a run cut short by the device
# check's budget still leaves the first answers. Bit-identity on the real shapes first (two
# models on the device: BF16 24.5 GB + DF11 ~17 GB), then batch 1 (BF16, DF11, chunked DF11,
# the chunked check), then per batch (1, the 2048-token prefill, 8, 64) what is left of BF16,
# DF11 and CPU offload, then the fused runs. CPU offload moves all 24.5 GB over PCIe per token:
# a few tokens suffice.
run --weights df11 "${vargs[@]}" --check --batch 8 --prompt-len "$plen" --max-new-tokens 8
# Batch 1, whole blocks and chunked (each block GEMM in L2-sized row slices decoded just before
# it: half an H100 L2), then the chunked bit-identity check.
chunk=${CHUNK_BYTES:-25000000}
run --weights bf16 --batch 1 --prompt-len "$plen" --max-new-tokens "$new"
run --weights df11 "${vargs[@]}" --batch 1 --prompt-len "$plen" --max-new-tokens "$new"
run --weights df11 "${vargs[@]}" --chunk-bytes "$chunk" --batch 1 --prompt-len "$plen" --max-new-tokens "$new"
run --weights df11 "${vargs[@]}" --check --chunk-bytes "$chunk" --batch 1 --prompt-len "$plen" --max-new-tokens 4
for batch in 1 prefill 8 64; do
  for w in bf16 df11 cpu-offload; do
    [ "$batch" = 1 ] && [ "$w" != cpu-offload ] && continue  # done above
    n=$new
    [ "$w" = cpu-offload ] && n=4
    extra=()
    [ "$w" = df11 ] && extra=("${vargs[@]}")
    if [ "$batch" = prefill ]; then
      run --weights "$w" "${extra[@]}" --batch 1 --prompt-len 2048 --max-new-tokens 2
    else
      run --weights "$w" "${extra[@]}" --batch "$batch" --prompt-len "$plen" --max-new-tokens "$n"
    fi
  done
done
# Last (no issue sets a target for them): the fused decode + GEMV kernels (DF11 read once, never
# written out as BF16) at batch 1, their check against the same kernels on BF16 words (BF16
# 24.5 GB + the DF11 model ~17 GB on the device), batch 8.
run --weights df11 "${fargs[@]}" --fused-gemv --batch 1 --prompt-len "$plen" --max-new-tokens "$new"
run --weights df11 "${fargs[@]}" --fused-gemv --check --batch 1 --prompt-len "$plen" --max-new-tokens 4
run --weights df11 "${fargs[@]}" --fused-gemv --batch 8 --prompt-len "$plen" --max-new-tokens "$new"
echo "$failures failed run(s); results in $out" >&2
exit $((failures > 0))
