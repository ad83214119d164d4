#!/usr/bin/env bash
# scripts/device_report.py on a fake device-check output folder (fake sweep rows from
# make_fake_results.py, the decode rows of the same, crafted e2e rows): the three report
# directories appear, the README's target table has a verdict for every target of issues 4, 5
# and 7, and "not measured" where the rows are missing; an existing report is not overwritten; a
# run of the cpu backend gets directories named "cpu" and no verdict.
# Usage: test_device_report.sh SOURCE_DIR SCRATCH_DIR
set -uo pipefail
src=${1:?usage: test_device_report.sh SOURCE_DIR SCRATCH_DIR}
scratch=${2:?usage: test_device_report.sh SOURCE_DIR SCRATCH_DIR}
py=/usr/bin/python3
rm -rf "$scratch" && mkdir -p "$scratch/out/sweep" "$scratch/out/decode"
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

"$py" "$src/tests/gate/make_fake_results.py" "$scratch/out/sweep" --layers 1 --incorrect || exit 1
"$py" - "$scratch/out" <<'PY' || exit 1
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "sweep/results.jsonl").read_text().splitlines() if l.strip()]
dec = [r for r in rows if r["case"]["method"] in ("decode", "copy") and r["case"]["unit"] == "model.layers.1"]
off = json.loads(json.dumps(next(r for r in dec if r["case"]["method"] == "decode")))
off["case"]["variant"] = "official-ptx"
for k in ("median_s", "min_s", "q1_s", "q3_s"):
    off["summary"][k] *= 5.0  # the official kernel five times slower than that variant
off["summary"]["gbps"] /= 5.0
dec.append(off)
# An incorrect decoder of the decode run: the bit-identical target counts it beside the sweep's.
bad = json.loads(json.dumps(off))
bad["case"]["variant"], bad["disposition"], bad["summary"] = "wrong", "incorrect", None
bad["reason"] = "decoded unit differs from the weights at element 9 (fake)"
dec.append(bad)
(out / "decode/results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dec))
def faster_copy(method, as_method, factor):
    """The fastest passed `method` row at batch 1 of layer 1, renamed `as_method`, its times x factor."""
    found = [r for r in rows if r["case"]["method"] == method and r["case"]["batch"] == 1
             and r["case"]["unit"] == "model.layers.1" and r["disposition"] == "passed"]
    r = json.loads(json.dumps(min(found, key=lambda r: r["summary"]["median_s"])))
    r["case"]["method"] = as_method
    for k in ("median_s", "min_s", "q1_s", "q3_s"):
        r["summary"][k] *= factor
    return r
# A pipelined row twice as fast as the fastest chunked one at batch 1: the chunked target takes
# it; an overlapped row (df11-overlap) faster than every df11 row, and a df11-rev row (the decode's
# units descending) faster still: the df11 target takes that.
with open(out / "sweep/results.jsonl", "a") as f:
    f.write(json.dumps(faster_copy("df11-chunked", "df11-pipelined", 0.5)) + "\n")
    f.write(json.dumps(faster_copy("df11", "df11-overlap", 0.9)) + "\n")
    f.write(json.dumps(faster_copy("df11", "df11-rev", 0.8)) + "\n")
def run(weights, batch, prompt, tps, peak, check="not_run", prefill=1000.0):
    return {"schema": "df11.generate/1", "device": "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)",
            "weights": weights, "batch": batch, "prompt_len": prompt, "new_tokens": 32,
            "prefill_tokens_per_s": prefill, "decode_tokens_per_s": tps, "peak_device_bytes": peak, "check": check}
fused = run("df11", 1, 128, 99.0, 17.9e9)
fused["fused_gemv"] = True  # before the plain df11 row: the whole-block targets must not take it
e2e = [dict(run("df11", 8, 128, 100.0, 42e9, "passed"), setup_s=59.6, method="cuda df11 (x)",
            setup_host_bits_s=10.0, setup_encode_s=20.5),
       dict(run("bf16", 1, 128, 110.0, 25.4e9), setup_s=1.25, weights_reused=True), fused,
       dict(run("cpu-offload", 8, 128, 1.0, 1.5e9), setup_s=16.4, method="cuda cpu-offload (y)",
            setup_host_bits_s=0.0, setup_encode_s=0.0, setup_upload_s=12.4),
       dict(run("df11", 1, 128, 40.0, 17.8e9), config={"layers": 40},  # --kernel-times: a step's device time by kind
            kernel_times={"steps": 8, "timed_step_s": 0.025, "traced_step_s": 0.026, "busy_s": 0.02,
                          "kernel_s": {"decode": 0.012, "gemm": 0.007, "fused": 0, "attention": 0.0005,
                                       "forward": 0.0005, "copy": 0},
                          "records": {"decode": 41, "gemm": 200, "fused": 0, "attention": 40, "forward": 163,
                                      "copy": 0}}),
       run("cpu-offload", 1, 128, 2.0, 1.5e9),
       run("bf16", 1, 2048, 1.0, 26e9, prefill=9000.0),
       # --fused-gemv over its fused rows: decode-then-GEMM, so no fused info row at batch 8
       dict(run("df11", 8, 128, 300.0, 18e9), fused_gemv=True,
            method="cuda df11 (x), no fused decode+GEMV at batch 8 (> 4)"),
       run("bf16", 8, 128, 800.0, 25e9),
       # every row stopped at an EOS before a decode step was timed: timed_step_s is null
       dict(run("bf16", 64, 128, 500.0, 27e9),
            kernel_times={"steps": 2, "timed_step_s": None, "traced_step_s": 0.03, "busy_s": 0.02,
                          "kernel_s": {"gemm": 0.02}, "records": {"gemm": 280}})]
chunked = run("df11", 1, 128, 60.0, 17.8e9)
chunked["chunk_bytes"] = 25000000
chunked["method"] = "cuda df11 (x), chunked GEMMs (25000000 B slices), slice decodes started early (programmatic dependent launch)"
e2e.append(chunked)
slower = dict(chunked, decode_tokens_per_s=50.0, overlap=True)  # the targets take the best chunked run
e2e.append(slower)
# Each matrix decoded on a second stream (--overlap, no slices): faster than whole blocks, so the
# batch-1 target takes it and names both.
e2e.append(dict(run("df11", 1, 128, 44.0, 17.8e9), overlap=True, variant="multi12ng.gap5-fix64.exp-smem-v16.t512.b8.dyn"))
# Whole blocks decoded last unit first (--decode-order descending): faster still, so the target
# takes it and names the order.
e2e.append(dict(run("df11", 1, 128, 48.0, 17.8e9), decode_order="descending"))
# --graphs runs, faster than all (BF16 too): info rows against BF16 with graphs, never a target.
e2e.append(dict(run("df11", 1, 128, 70.0, 17.8e9), graphs=True, method="cuda df11 (x), decode steps after the first "
                "replayed as a CUDA graph (30 replays)"))
e2e.append(dict(run("bf16", 1, 128, 140.0, 25.4e9), graphs=True, method="cuda bf16, decode steps after the first "
                "replayed as a CUDA graph (30 replays)"))
prefill = run("df11", 1, 2048, 1.0, 18e9, prefill=7000.0)  # 0.78x
overlapped = dict(prefill, chunk_bytes=25000000, overlap=True, prefill_tokens_per_s=8100.0)  # 0.90x
e2e += [prefill, overlapped]
e2e.append({"schema": "df11.generate/1", "run": "--weights cpu-offload --batch 64", "error": "out of pinned memory"})
# A count-layout run first among the df11 batch-1 runs and faster than all: it must get an info
# row and leave the targets to the official layout's runs.
cnt = dict(run("df11", 1, 128, 80.0, 17.9e9), variant="multi12.gap5-cnt.exp-smem-v16.t256.b16.persist")
e2e.insert(0, cnt)
e2e.append(dict(cnt, overlap=True, decode_tokens_per_s=90.0))  # its own info row, named for its method
(out / "e2e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in e2e) + '{"cut off')
(out / "summary.txt").write_text("gpu tests              ok                 12s\n")
# run_sweep's progress lines in the device check's log: where the device time went.
(out / "device_check.log").write_text(
    "== decode throughput (04:56:59, limit 200s): run_sweep x\n"
    "  0:06 [ 1/55] model.layers.1 decode:a b=0: passed, median 1.015 ms; verify 0.12 s, time 0.36 s (5 samples, 0.30 s of them)\n"
    "  0:07 [ 2/55] model.layers.1 decode:b b=0: passed, median 1.015 ms; verify 0.20 s, time 0.40 s (6 samples, 0.31 s of them)\n"
    "== default experiment (04:59:29, limit 238s): run_sweep y\n"
    "  0:28 [14/338] model.layers.1 bf16 b=1: passed, median 168.4 us; verify 0.02 s, time 0.16 s (5 samples, 0.10 s of them)\n"
    "  0:29 [15/338] model.layers.1 df11:c b=1: incorrect (output differs)\n")
PY

reports=$scratch/reports
"$py" "$src/scripts/device_report.py" "$scratch/out" --reports "$reports" >"$scratch/log" 2>&1 ||
  { cat "$scratch/log"; fail "device_report.py exited non-zero"; }
check=$reports/2026-11-27_h100-80gb-hbm3_device_check
for d in "$check" "$reports/2026-11-27_h100-80gb-hbm3_nemo_layer" "$reports/2026-11-27_h100-80gb-hbm3_decode_throughput"; do
  [[ -d $d ]] || fail "missing $d"
done
[[ -s $reports/2026-11-27_h100-80gb-hbm3_nemo_layer/report.md ]] || fail "no report.md for the sweep"
readme=$check/README.md
for needle in "| 4 | best variant >= 3x official-ptx |" "| 4 | best variant >= 60% of the copy bound |" \
  "| 5 | best df11 <= 2.9x bf16 at batch 1 |" "| 5 | best df11 <= 1.3x bf16 at batch 2048 | - | not measured" \
  "| 5 | every df11 method faster than cpu-offload |" "| 7 | identical tokens, bit-identical logits (--check) | 1 of 1 checks passed | PASS" \
  "| 7 | DF11 peak device memory <= 72% of BF16 | 70.1% | PASS" "| 7 | DF11 decode tokens/s >= 0.35x BF16 at batch 1 | 0.44x (whole blocks, units decoded last first, default decoder; whole blocks 0.36x) | PASS" \
  "| 7 | prefill of 2048 tokens >= 0.8x BF16 | 0.90x (chunked, overlapped) | PASS" \
  "| 7 | DF11 chunked decode tokens/s >= 0.5x BF16 at batch 1 | 0.55x (25000000 B slices, decodes started early) | PASS" "| 7 | DF11 >= 10x cpu-offload tokens/s at batch 1 | 20.0x | PASS" \
  "| - | DF11 fused decode+GEMV decode tokens/s / BF16 at batch 1 | 0.90x | info" "| df11 | - | - | yes | - | 1 | 128 |" \
  "| df11 (multi12.gap5-cnt.exp-smem-v16.t256.b16.persist) | - | - | - | - | 1 | 128 |" \
  "| - | DF11 tables + count bytes (multi12.gap5-cnt.exp-smem-v16.t256.b16.persist), whole blocks: decode tokens/s / BF16 at batch 1 | 0.73x | info | one decode pass, peak device 70.5% of BF16 |" \
  "| - | DF11 tables + count bytes (multi12.gap5-cnt.exp-smem-v16.t256.b16.persist), each matrix decoded on a second stream, overlapped: decode tokens/s / BF16 at batch 1 | 0.82x | info |" \
  "run \`--weights cpu-offload --batch 64\` failed: out of pinned memory" \
  "| - | best df11-pipelined / bf16 at batch 1 |" "| - | best df11-overlap / bf16 at batch 1 |" \
  "gpu tests              ok" "| decode throughput | batch 0 (decoders alone, copy) | 2 | 0.3 | 0.8 | 0.6 |" \
  "| default experiment | GEMM rows (batch >= 1) | 1 | 0.0 | 0.2 | 0.1 |" \
  "End-to-end runs: 3 with a \`setup_s\`, 77.2 s of setup in all (1 reused their weights)" \
  "- 59.6 s: cuda df11 (x), batch 8 (check); host bits 10.0 s, encoding 20.5 s, the rest (loading, uploads) 29.1 s" \
  "- 16.4 s: cuda cpu-offload (y), batch 8; host bits 0.0 s, encoding 0.0 s, placing 12.4 s, the rest (loading, allocation) 4.0 s" \
  "| - | With CUDA graphs: DF11 whole blocks decode tokens/s / BF16 at batch 1 | 0.50x | info | BF16 with graphs 140.0 tok/s |" \
  "| - | CUDA graphs: BF16 decode tokens/s with / without at batch 1 | 1.27x | info |" "| df11 | - | - | - | yes | 1 | 128 |" \
  "| df11 | whole blocks | 1 | 25.000 | 20.000 | 5.000 (20%) | 12.000 | 7.000 | 0.000 | 0.500 | 0.500 | 0.000 | 444 | 625 (idle 125) |" \
  "| bf16 | - | 64 | 0.000 | 20.000 | - | 0.000 | 20.000 | 0.000 | 0.000 | 0.000 | 0.000 | 280 | - |" \
  "| df11 | - | - | not run | - | 8 | 128 |" \
  "| 5 | every verified method bit-identical | 2 incorrect row(s) (1 of the decode run), 1 not run | FAIL |"; do
  grep -qF -- "$needle" "$readme" || fail "README.md lacks '$needle'"
done
grep -qF "DF11 fused decode+GEMV decode tokens/s / BF16 at batch 8" "$readme" &&
  fail "a --fused-gemv run over its fused rows got a fused info row"
grep -E '^\| 5 \| best df11-chunked <= 2.0x bf16 at batch 1 \| [0-9.]+x \(df11-pipelined:' "$readme" >/dev/null ||
  fail "the chunked target does not take the faster pipelined row"
grep -E '^\| 5 \| best df11 <= 2.9x bf16 at batch 1 \| [0-9.]+x \(df11-rev:' "$readme" >/dev/null ||
  fail "the df11 target does not take the faster df11-rev row"
# The runbook's two calls (sweep steps, then e2e): two folders make the same report.
mkdir -p "$scratch/call1" "$scratch/call2"
cp -r "$scratch/out/sweep" "$scratch/out/decode" "$scratch/out/summary.txt" "$scratch/call1/"
cp "$scratch/out/e2e.jsonl" "$scratch/call2/"
printf 'e2e generation         ok                 200s\n' >"$scratch/call2/summary.txt"
# Call 2's profile step: its parsed rows and raw pages (device_profile.py --parse on the fixture).
mkdir -p "$scratch/call2/profile"
cp "$src/tests/gate/data/ncu_raw.csv" "$scratch/call2/profile/0.csv"
"$py" "$src/scripts/device_profile.py" --parse "$src/tests/gate/data/ncu_raw.csv" --method decode:x |
  grep '^{' >"$scratch/call2/profile.jsonl" || fail "device_profile.py --parse gave no rows for call 2's fixture"
"$py" "$src/scripts/device_report.py" "$scratch/call1" "$scratch/call2" --reports "$scratch/reports2" \
  >"$scratch/log2" 2>&1 || { cat "$scratch/log2"; fail "device_report.py on two folders exited non-zero"; }
readme2=$scratch/reports2/2026-11-27_h100-80gb-hbm3_device_check/README.md
for needle in "| 4 | best variant >= 60% of the copy bound |" "| 5 | best df11 <= 2.9x bf16 at batch 1 |" \
  "| 7 | DF11 decode tokens/s >= 0.35x BF16 at batch 1 | 0.44x" "== call 1 (call1)" "== call 2 (call2)" \
  "gpu tests              ok" "e2e generation         ok" "## Hardware counters (profile.jsonl, Nsight Compute)"; do
  grep -qF -- "$needle" "$readme2" || fail "two-folder README.md lacks '$needle'"
done
grep -E '^decode:x +gap_decode_persistent_kernel +250\.0 +3634\.2 +363\.3 +545\.3 +71\.2 +61\.3 +88\.1 +15\.0 +1\.50 +0\.25 +short_scoreboard 2\.5' "$readme2" >/dev/null ||
  fail "the profile table is not in README.md: $(grep -A4 'Hardware counters' "$readme2")"
[[ -f $scratch/reports2/2026-11-27_h100-80gb-hbm3_device_check/profile/call2_0.csv ]] || fail "ncu raw page not copied"
grep -qF "No kernel was profiled" "$readme" || fail "a report without a profile does not say so"
# The parser also takes ncu's details page (a row per metric, units scaled: Mbyte, usecond, Ginst).
"$py" "$src/scripts/device_profile.py" --parse "$src/tests/gate/data/ncu_details.csv" --method decode:official-ptx |
  grep -E '^decode:official-ptx +decode +812\.5 +1118\.2 +363\.3 +545\.3 +- +- +- +50\.0 ' >/dev/null ||
  fail "the details page is not read: $("$py" "$src/scripts/device_profile.py" --parse "$src/tests/gate/data/ncu_details.csv")"
# A real raw page (an H200 under ncu 2025, trimmed to the columns the table reads): base units
# are short there (ns, byte, byte/s), and the DRAM share is gpu__dram_throughput.
"$py" "$src/scripts/device_profile.py" --parse "$src/tests/gate/data/ncu_raw_h200.csv" --method decode:official-ptx |
  grep -E '^decode:official-ptx +decode +1050\.3 +849\.2 +369\.4 +522\.5 +17\.6 +81\.8 +98\.4 +83\.4 ' >/dev/null ||
  fail "the H200 raw page is misread: $("$py" "$src/scripts/device_profile.py" --parse "$src/tests/gate/data/ncu_raw_h200.csv")"
[[ -d $scratch/reports2/2026-11-27_h100-80gb-hbm3_nemo_layer ]] || fail "two folders: no nemo_layer run directory"
# The official row takes 5x the time of the slowest fake variant: the fastest is >= 3x faster.
grep -E '^\| 4 \| best variant >= 3x official-ptx \| [0-9.]+x .*\| PASS' "$readme" >/dev/null || fail "official ratio verdict"
if err=$("$py" "$src/scripts/device_report.py" "$scratch/out" --reports "$reports" 2>&1 >/dev/null); then
  fail "an existing report was overwritten without --force"
elif ! grep -q "use --force" <<<"$err"; then
  fail "a second report into the same directory failed for another reason: $err"
fi
# A run of the cpu backend: its directories are named by promote_baseline's slug ("cpu", as
# run_sweep's and the baselines' are), no GPU target is judged on its rows, and the batches the
# experiment asks of it are its [cpu] table's, not [cuda]'s.
mkdir -p "$scratch/cpu_out/sweep"
"$py" - "$scratch/out/sweep/results.jsonl" "$scratch/cpu_out/sweep/results.jsonl" <<'PY' || exit 1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
with open(sys.argv[2], "w") as f:
    for r in rows:
        if r["case"]["batch"] in (0, 1, 4, 16, 64):  # the [cpu] table's batches
            r["device"] = dict(r["device"], backend="cpu", name="AMD EPYC 7B13")
            f.write(json.dumps(r) + "\n")
PY
cp "$src/experiments/nemo_layer.toml" "$scratch/cpu_out/sweep/"
"$py" "$src/scripts/device_report.py" "$scratch/cpu_out" --reports "$scratch/cpu_reports" >"$scratch/cpu_log" 2>&1 ||
  { cat "$scratch/cpu_log"; fail "device_report.py on a cpu run exited non-zero"; }
[[ -d $scratch/cpu_reports/2026-11-27_cpu_device_check && -d $scratch/cpu_reports/2026-11-27_cpu_nemo_layer ]] ||
  fail "a cpu run's report directories are not named <date>_cpu_*: $(ls "$scratch/cpu_reports")"
cpu_readme=$scratch/cpu_reports/2026-11-27_cpu_device_check/README.md
judged=$(grep -E '^\| [457] \|' "$cpu_readme" | grep -vF "| not measured |")
[[ -z $judged ]] || fail "targets judged on a cpu run: $judged"
grep -qE '^\| 5 \| best df11 <= 2\.9x bf16 at batch 1 \| [0-9.]+x .*\| not measured \| backend cpu' "$cpu_readme" ||
  fail "the cpu run's batch-1 target does not say its backend: $(grep 'at batch 1 |' "$cpu_readme")"
grep -F "| every df11 method faster than cpu-offload |" "$cpu_readme" | grep -qF "no passed cpu-offload row at batch" &&
  fail "the cpu run was read against the [cuda] table's batches"
if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "device_report: report directories and target verdicts ok"
