#!/usr/bin/python3
"""Writes a fake-but-plausible results.jsonl (docs/RESULTS.md, schema 1) for exercising
scripts/plot_sweep.py and `df11 gate` without a GPU. The numbers come from a roofline-ish model
of an H100 plus seeded noise; they are NOT measurements.

Usage: make_fake_results.py OUT_DIR [--seed N] [--scale F] [--device NAME] [--layers N] [--partial]
                            [--experiment NAME] [--incorrect]"""
import argparse
import json
import pathlib
import random
import statistics

HBM_GBPS = 3000.0        # achievable device-memory bandwidth, GB/s
PCIE_GBPS = 25.0         # host-to-device, GB/s
PEAK_FLOPS = 700e12      # dense BF16
LAUNCH_S = 8e-6          # fixed cost of a forward pass of a unit (launches, sync)
ENCODED_RATIO = 0.68     # DF11 size / BF16 size
SAMPLES = 41

NEMO_LAYER_WEIGHTS = 272_629_760
LM_HEAD_WEIGHTS = 671_088_640
BATCHES = [1, 4, 16, 64, 256, 1024]
# decoder variant -> decode throughput in BF16 output GB/s
VARIANTS = {
    "lut8x4.gap5-block.smem-out.t512.b8": 610.0,
    "flat12.gap5-warp.smem-out.t512.b8": 880.0,
    "canon.gap5-warp.direct.t256.b16": 1040.0,
}
EXPERIMENT = "nemo_layer"


def quartiles(samples):
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median_s": median, "min_s": min(samples), "q1_s": q1, "q3_s": q3}


def noisy(rng, t, spread):
    # Right-skewed like real timings: a floor with occasional slow samples.
    return [t * (1.0 + abs(rng.gauss(0.0, spread))) for _ in range(SAMPLES)]


def row(meta, device, unit, method, variant, batch, disposition="passed", reason="", summary=None,
        verified=None, chunk_bytes=None):
    if verified is None and disposition == "passed":
        verified = "weights" if batch == 0 else ("bf16-rerun" if method == "bf16" else "bf16")
    if chunk_bytes is None and method in ("df11-chunked", "df11-pipelined"):
        chunk_bytes = 25 * 2**20  # the slice size a sliced row ran with (half a fake 50 MiB L2)
    return {"schema_version": 1, "meta": meta, "device": device,
            "case": {"experiment": EXPERIMENT, "unit": unit, "method": method, "variant": variant,
                     "batch": batch, "seed": 0, "chunk_bytes": chunk_bytes},
            "summary": summary if disposition == "passed" else None,
            "disposition": disposition, "reason": reason,
            "verified_against": verified if disposition == "passed" else None}


def summary_of(rng, t, bytes_, spread=0.015, decode_s=None, gemm_s=None, copy_s=None):
    s = quartiles(noisy(rng, t, spread))
    s.update({"samples": SAMPLES, "decode_s": decode_s, "gemm_s": gemm_s, "copy_s": copy_s, "bytes": bytes_,
              "gbps": bytes_ / s["median_s"] / 1e9})
    return s


def generate(seed, scale, device_name, layers, incorrect=False):
    # unit -> BF16 weights: Mistral-Nemo layers 1..layers and the LM head
    units = {f"model.layers.{i}": NEMO_LAYER_WEIGHTS for i in range(1, layers + 1)}
    units["lm_head"] = LM_HEAD_WEIGHTS
    rng = random.Random(seed)
    meta = {"git_sha": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False,
            "argv": ["run_sweep", "experiments/nemo_layer.toml"], "compiler": "GNU 12.2.0", "cuda_runtime": "13.0",
            "cuda_driver": "13.0", "build_type": "Release", "start_time": "2026-11-27T00:00:00Z"}
    device = {"backend": "cuda", "name": device_name, "sm_version": "9.0", "sm_count": 132, "sm_clock_mhz": 1980,
              "memory_bandwidth_gbps": 3352.3, "l2_bytes": 52428800, "cpu_model": "AMD EPYC", "cpu_cores": 2}
    rows = []
    for unit, weights in units.items():
        bf16_bytes = 2 * weights
        enc_bytes = int(bf16_bytes * ENCODED_RATIO)
        rows.append(row(meta, device, unit, "copy", None, 0,
                        summary=summary_of(rng, scale * 2 * bf16_bytes / (HBM_GBPS * 1e9), 2 * bf16_bytes,
                                           copy_s=scale * 2 * bf16_bytes / (HBM_GBPS * 1e9))))
        for variant, gbps in VARIANTS.items():
            if unit == "lm_head" and variant.startswith("canon"):
                rows.append(row(meta, device, unit, "decode", variant, 0, "not_supported",
                                "canonical layout needs a code-length limit <= 24 for this unit"))
                continue
            t = scale * bf16_bytes / (gbps * 1e9)
            rows.append(row(meta, device, unit, "decode", variant, 0,
                            summary=summary_of(rng, t, enc_bytes + bf16_bytes, decode_s=t)))
        for batch in BATCHES:
            gemm = max(bf16_bytes / (HBM_GBPS * 1e9), 2 * weights * batch / PEAK_FLOPS)
            bf16 = scale * (gemm + LAUNCH_S)
            rows.append(row(meta, device, unit, "bf16", None, batch,
                            summary=summary_of(rng, bf16, bf16_bytes, gemm_s=scale * gemm)))
            h2d = bf16_bytes / (PCIE_GBPS * 1e9)
            rows.append(row(meta, device, unit, "cpu-offload", None, batch,
                            summary=summary_of(rng, scale * (max(h2d, gemm) + LAUNCH_S), bf16_bytes, spread=0.04)))
            rows.append(row(meta, device, unit, "cpu-offload-sync", None, batch,
                            summary=summary_of(rng, scale * (h2d + gemm + LAUNCH_S), bf16_bytes, spread=0.04)))
            for variant, gbps in VARIANTS.items():
                decode = scale * bf16_bytes / (gbps * 1e9)
                if unit == "lm_head" and variant.startswith("canon"):
                    rows.append(row(meta, device, unit, "df11", variant, batch, "not_supported",
                                    "canonical layout needs a code-length limit <= 24 for this unit"))
                    continue
                if incorrect and variant.startswith("lut8") and batch == 1024 and unit == "lm_head":
                    rows.append(row(meta, device, unit, "df11", variant, batch, "incorrect",
                                    "element 402653184 of lm_head: 0x3c80 != 0x3c81 (fake)"))
                    continue
                rows.append(row(meta, device, unit, "df11", variant, batch,
                                summary=summary_of(rng, decode + scale * (gemm + LAUNCH_S), enc_bytes,
                                                   decode_s=decode, gemm_s=scale * gemm)))
                # Chunked: each L2-sized slice is decoded while the previous one is multiplied.
                chunked = max(decode, scale * gemm) * 1.08 + scale * LAUNCH_S * 3
                # At batch 1 the slices' GEMMs round differently from the whole matrix's (split-K).
                same = batch == 1
                rows.append(row(meta, device, unit, "df11-chunked", variant, batch,
                                summary=summary_of(rng, chunked, enc_bytes, decode_s=decode, gemm_s=scale * gemm),
                                verified="bf16-same-gemms" if same else None,
                                reason="output differs from bf16 at element 17: got 0x3c80, expected 0x3c81 (fake)"
                                if same else ""))
                if variant == next(iter(VARIANTS)):  # a second slice size: its own case and series
                    rows.append(row(meta, device, unit, "df11-chunked", variant, batch, chunk_bytes=34603008,
                                    summary=summary_of(rng, chunked * 0.95, enc_bytes, decode_s=decode * 0.95,
                                                       gemm_s=scale * gemm),
                                    verified="bf16-same-gemms" if same else None))
    rows.append(row(meta, device, "lm_head", "df11-chunked", "flat12.gap5-warp.smem-out.t512.b8", 4096, "not_run",
                    "interrupted (SIGINT)"))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every time (1.1 = a 10%% slower run)")
    ap.add_argument("--device", default="NVIDIA H100 80GB HBM3")
    ap.add_argument("--layers", type=int, default=1, help="how many Nemo layer units (58 rows each)")
    ap.add_argument("--partial", action="store_true", help="end with a half-written line, as a killed run might")
    ap.add_argument("--experiment", default=EXPERIMENT, help="the experiment name in every row")
    # Off by default: scripts/promote_baseline refuses a run with incorrect rows, and the gate's
    # tests promote these runs.
    ap.add_argument("--incorrect", action="store_true",
                    help="make one df11 row of the LM head (lut8, batch 1024) incorrect")
    a = ap.parse_args()
    out = pathlib.Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = generate(a.seed, a.scale, a.device, a.layers, a.incorrect)
    for r in rows:
        r["case"]["experiment"] = a.experiment
    with open(out / "results.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        if a.partial:
            f.write(json.dumps(rows[-2])[:120])
    print(f"make_fake_results: {len(rows)} rows -> {out / 'results.jsonl'}")


if __name__ == "__main__":
    main()
