#!/usr/bin/env bash
# End-to-end benchmark of `df11 generate` on a GPU machine: synthetic Mistral-Nemo (full size),
# BF16 vs DF11 vs CPU-offload at batch 1, 8 and 64, a 2048-token prefill, chunked and fused DF11;
# one JSON object per run appended to OUT (JSON Lines; a run that fails leaves an "error" line).
# The runs share one process (`df11 generate --runs`): the model is generated once on the GPU
# (the host generator's bits), encoded once on the host with all cores, and kept in host memory
# (BF16 24.5 GB + DF11 16.6 GB; BF16 models regenerate their units in place on the device), and a
# run's device weights (DF11 images, BF16 units, pinned offload buffers) serve the next runs that
# use the same ones (a --fused-gemv run's DF11 weights: the images of the same decoder, the fused
# kernels added), so a run costs its tokens, and its uploads only where the run before it used
# other weights ("weights_reused" in its JSON; "setup_s" is then small). The first three runs check
# DF11 against BF16 bit for bit.
# E2E_VARIANT names the DF11 decoder variant of the DF11 runs (default: df11 generate's own,
# kDefaultCudaVariant), but for the whole-matrix --overlap runs, which take E2E_OVERLAP_VARIANT
# (default: E2E_VARIANT), and the count-layout runs at the end (below); scripts/device_check.sh
# sets it to the fastest variant of the official layout its decode step measured. The --fused-gemv runs (fused decode + GEMV at batch <= 16) take
# it only when it is a multi12.gap5 or multi12n.gap5 variant of the official layout, or a fix64
# one (multi12n/multi12ng/multi11w: the fused kernels then run fix64's lanes over its 2048-element units),
# since the fused kernels read that decoder's image; else df11 generate's kDefaultFusedVariant. The last
# runs (no target: the issue's targets are for DF11's own layout) use E2E_CNT_VARIANT (default
# multi12.gap5-cnt.exp-smem-v16.t256.b16.persist: DF11's tables with a count byte per thread, one
# decode pass; the device check picks the fastest it measured): whole blocks, whole matrices
# overlapped, and its fused kernels with their check.
# E2E_SOURCE_ARGS / E2E_BACKEND: another model or a small dry run elsewhere (default
# "--synthetic nemo" and cuda; e.g. "--synthetic tiny" and cpu, or "--model DIR").
# Usage: bench_generate.sh DF11_BINARY OUT.jsonl [NEW_TOKENS] [PROMPT_LEN]
set -uo pipefail

df11=${1:?usage: bench_generate.sh DF11_BINARY OUT.jsonl [NEW_TOKENS] [PROMPT_LEN]}
out=${2:?usage: bench_generate.sh DF11_BINARY OUT.jsonl [NEW_TOKENS] [PROMPT_LEN]}
new=${3:-32}
plen=${4:-128}
v=""
[ -n "${E2E_VARIANT:-}" ] && v="--variant $E2E_VARIANT" && echo "+ DF11 runs use variant $E2E_VARIANT" >&2
fv=""
case "${E2E_VARIANT:-}" in
  multi12.gap5-warp.* | multi12n.gap5-warp.*) fv=$v ;;
  # The fused kernels over fix64's units: a fused decode exists for each staging of the 2^12 root
  # (exp-smem, -nh, -late) and only for exp-smem of the wide root (fused_decode_for; test_fused).
  multi12n.gap5-fix64.* | multi12ng.gap5-fix64.* | multi11w.gap5-fix64.exp-smem-v16.*) fv=$v ;;
esac
# The tensor-core fused kernel (--fused-mma) runs the fixed decode only: E2E_VARIANT where its
# fused decode is fixed (the 2^12 root's exp-smem fix64 variants), else the default decoder.
mv=""
case "${E2E_VARIANT:-}" in
  multi12n.gap5-fix64.exp-smem-v16.* | multi12ng.gap5-fix64.exp-smem-v16.*) mv=$v ;;
esac
# The whole-matrix --overlap runs (decode on a second stream beside the GEMMs): E2E_OVERLAP_VARIANT,
# else E2E_VARIANT's .dyn twin where one is registered (a persistent decoder's late CUDA blocks
# owe a whole share and end a GEMM later; a dyn one's take less), else E2E_VARIANT.
ov=$v
if [ -n "${E2E_OVERLAP_VARIANT:-}" ]; then
  ov="--variant $E2E_OVERLAP_VARIANT"
elif [ -n "${E2E_VARIANT:-}" ] && [ "${E2E_VARIANT%.persist}" != "$E2E_VARIANT" ]; then
  twin="${E2E_VARIANT%.persist}.dyn"
  # (awk reads to the end: a grep -q that stops at the match could kill the pipe's writer, and
  # pipefail would then read as "no twin")
  "$df11" variants 2>/dev/null | awk -v t="$twin" '$1 == t { f = 1 } END { exit !f }' && ov="--variant $twin"
fi
[ "$ov" != "$v" ] && echo "+ whole-matrix --overlap runs use ${ov#--variant }" >&2
cv=${E2E_CNT_VARIANT:-multi12.gap5-cnt.exp-smem-v16.t256.b16.persist}
# The one-pass fused kernels read the t256.b16 count layout: E2E_CNT_VARIANT when it is one.
case "$cv" in multi12.gap5-cnt.*.t256.b16* | multi12n.gap5-cnt.*.t256.b16*) fcv=$cv ;; *) fcv=multi12.gap5-cnt.exp-smem-v16.t256.b16.persist ;; esac
chunk=${CHUNK_BYTES:-25000000}  # half an H100 L2
# A second slice size for chunked batch 1: one round of fix64 t512's units on 132 SMs (8448
# warps x 2048 weights x 2 bytes), about what a slice decode costs anyway (the sweep's
# nemo_layer.toml runs the same pair); per Nemo block 18 slices instead of 24 at $chunk.
round=${CHUNK_ROUND_BYTES:-34603008}
# Where a decode step's time goes (--kernel-times: its first E2E_KERNEL_TIMES decode steps again,
# traced with CUPTI, after the timed ones): on the timed batch-1 runs of each method and at batch
# 64. CUDA only (a cpu dry run goes without), and only where the runs have that many steps.
kt_steps=${E2E_KERNEL_TIMES:-8}
kt=""
if [ "${E2E_BACKEND:-cuda}" = cuda ] && [ "$kt_steps" -gt 0 ] && [ "$kt_steps" -lt "$new" ]; then
  kt="--kernel-times $kt_steps"
fi

ov_runs="--weights df11 $ov --check --overlap --batch 1 --prompt-len $plen --max-new-tokens 4
--weights df11 $ov --overlap --batch 1 --prompt-len $plen --max-new-tokens $new $kt"
ov_early="" ov_late=""
if [ "$ov" = "$v" ]; then ov_early=$ov_runs; else ov_late=$ov_runs; fi

runs=$(mktemp "${TMPDIR:-/tmp}/df11_e2e_runs.XXXXXX")
trap 'rm -f "$runs"' EXIT
# Runs grouped by the device weights they use: before each run the weights that it does not use
# are dropped (its peak device memory is its own), so a group's weights are built once, by its
# first run. Each run is printed as it finishes, so a run cut short by the device check's budget
# still leaves the first answers; the most important groups come first:
# - the bit-identity checks on the real shapes (DF11 and BF16 both on the device: BF16 24.5 GB +
#   DF11 ~17 GB): batch 8 whole blocks, batch 1 chunked (each block GEMM in L2-sized row slices
#   decoded just before it), batch 8 chunked with --overlap (each slice decoded on a second stream
#   while the last slice's GEMM runs; 1024 prefill rows);
# - DF11 alone: batch 1 whole blocks (and again with --decode-order descending: each block's
#   units decoded last to first, so that its first GEMM's weights are still in L2), chunked
#   (slices held in the persisting L2, and again with --slice-l2 normal: the lever's own A/B;
#   again with --slice-start serial: each slice's decode waits for the GEMM before it instead
#   of starting early, that lever's A/B; and with slices of one round, $round B), chunked with
#   --overlap; the 2048-token prefill
#   whole and chunked with --overlap (decode hidden under the compute-bound GEMMs); batch 8 and
#   64;
# - the fused decode + GEMV kernels (DF11 read once, never written out as BF16; no issue sets a
#   target for them, but over fix64's units they may be the fastest batch-1 decode) at batch 1
#   and their check against the same kernels on BF16 words (no batch 8: --fused-gemv fuses passes
#   of up to 4 rows over fix64's units, where they stopped paying on the H200, so batch 8 would
#   repeat the whole-block run; the sweep's df11-fused rows measure the kernels at every batch up
#   to 16). Right after the runs above: where fv is v (a fix64 E2E_VARIANT), the fused kernels
#   are added to those runs' cached DF11 images instead of every unit being uploaded again (on
#   the 2026-11-28 H200 run, where they followed the BF16 runs, that took 27.8 s of setup_s);
# - BF16 (generated again in place on the device, in a second): batch 1, the 2048-token prefill,
#   batch 8 and 64;
# - CPU offload: batch 1 (issue 7's 10x target), then the other three (all 24.5 GB over PCIe per
#   token: a few tokens suffice), one after another so that the pinned host copy is built once
#   (on the 2026-11-28 H200 run the fused runs sat between offload runs, and the second offload
#   group set up its 24.5 GB again: 12.4 s of setup_s);
# - with the overlap decoder (ov, above) batch 1 with --overlap alone (each matrix decoded whole
#   on the second stream while the last matrix's GEMM runs), checked and timed. No issue sets a
#   target for it: where ov is E2E_VARIANT, right before the fused runs (its images are cached
#   until the fused runs extend them, which keeps them as fused weights: a plain run after them
#   uploads them again);
#   where it is another variant (the .dyn twin), whose images are uploaded once more (~28 s of
#   setup_s on the H200), here, after every run a target needs (it used to come before the BF16
#   runs, which a cut budget then lost first);
# - then (no targets either): whole blocks at batch 1 with a count-layout decoder
#   (E2E_CNT_VARIANT), the same with whole matrices overlapped, and the fused kernels on the
#   t256.b16 count layout (one decode pass) at batch 1 and their check;
# - last, the tensor-core fused kernel (--fused-mma, never run on a GPU before: a fault in it
#   would leave the process's CUDA context unusable, so nothing comes after it; mv: E2E_VARIANT
#   where its fused decode is the fixed one, else the default decoder) at batch 1 and 8 (passes
#   of up to 16 rows: its cost should barely grow with the rows), its check at batch 8 (which
#   counts for issue 7's --check target like every check), and batch 64 in passes of 64 rows. Its
#   first run uploads the DF11 images once more (~28 s on the H200: the runs before it dropped them).
# With --graphs (a decode step's layers and head replayed as one CUDA graph: no launch gaps) the
# batch-1 runs of BF16 and of DF11 whole blocks, chunked and fused, each next to its eager twin
# (same weights): no target reads them (the targets compare eager runs with eager BF16); the
# report's info rows compare them with BF16 --graphs, and their --kernel-times say what the
# graphs removed.
cat >"$runs" <<RUNS
--weights df11 $v --check --batch 8 --prompt-len $plen --max-new-tokens 8
--weights df11 $v --check --chunk-bytes $chunk --batch 1 --prompt-len $plen --max-new-tokens 4
--weights df11 $v --check --chunk-bytes $chunk --overlap --batch 8 --prompt-len $plen --max-new-tokens 4
--weights df11 $v --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights df11 $v --decode-order descending --batch 1 --prompt-len $plen --max-new-tokens $new
--weights df11 $v --chunk-bytes $chunk --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights df11 $v --chunk-bytes $chunk --slice-l2 normal --batch 1 --prompt-len $plen --max-new-tokens $new
--weights df11 $v --chunk-bytes $chunk --slice-start serial --batch 1 --prompt-len $plen --max-new-tokens $new
--weights df11 $v --chunk-bytes $round --batch 1 --prompt-len $plen --max-new-tokens $new
--weights df11 $v --chunk-bytes $chunk --overlap --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights df11 $v --graphs --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights df11 $v --graphs --chunk-bytes $chunk --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights df11 $v --batch 1 --prompt-len 2048 --max-new-tokens 2
--weights df11 $v --chunk-bytes $chunk --overlap --batch 1 --prompt-len 2048 --max-new-tokens 2
--weights df11 $v --batch 8 --prompt-len $plen --max-new-tokens $new
--weights df11 $v --batch 64 --prompt-len $plen --max-new-tokens $new $kt
$ov_early
--weights df11 $fv --fused-gemv --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights df11 $fv --fused-gemv --check --batch 1 --prompt-len $plen --max-new-tokens 4
--weights df11 $fv --fused-gemv --graphs --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights bf16 --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights bf16 --graphs --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights bf16 --batch 1 --prompt-len 2048 --max-new-tokens 2
--weights bf16 --batch 8 --prompt-len $plen --max-new-tokens $new
--weights bf16 --batch 64 --prompt-len $plen --max-new-tokens $new $kt
--weights cpu-offload --batch 1 --prompt-len $plen --max-new-tokens 4
--weights cpu-offload --batch 1 --prompt-len 2048 --max-new-tokens 2
--weights cpu-offload --batch 8 --prompt-len $plen --max-new-tokens 4
--weights cpu-offload --batch 64 --prompt-len $plen --max-new-tokens 4
$ov_late
--weights df11 --variant $cv --batch 1 --prompt-len $plen --max-new-tokens $new
--weights df11 --variant $cv --overlap --batch 1 --prompt-len $plen --max-new-tokens $new
--weights df11 --variant $fcv --fused-gemv --batch 1 --prompt-len $plen --max-new-tokens $new
--weights df11 --variant $fcv --fused-gemv --check --batch 1 --prompt-len $plen --max-new-tokens 4
--weights df11 $mv --fused-gemv --fused-mma --batch 1 --prompt-len $plen --max-new-tokens $new $kt
--weights df11 $mv --fused-gemv --fused-mma --check --batch 8 --prompt-len $plen --max-new-tokens 4
--weights df11 $mv --fused-gemv --fused-mma --batch 8 --prompt-len $plen --max-new-tokens $new
--weights df11 $mv --fused-gemv --fused-mma --fused-max-rows 64 --batch 64 --prompt-len $plen --max-new-tokens $new
RUNS
sed -i 's/  */ /g; s/ $//' "$runs"  # an empty $v or $kt leaves spaces; the run names in the results read better without
# shellcheck disable=SC2086  # E2E_SOURCE_ARGS is a list of words
set -- "$df11" generate ${E2E_SOURCE_ARGS:---synthetic nemo} --backend "${E2E_BACKEND:-cuda}" --json \
  --prompt-len "$plen" --runs "$runs"
echo "+ $* ($(grep -c . "$runs") runs)" >&2
trap 'exit 143' TERM INT  # the device check's time limit: the runs done so far are in $out
"$@" >>"$out"
rc=$?
echo "df11 generate --runs exited $rc; results in $out" >&2
exit $rc
