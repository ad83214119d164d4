#!/usr/bin/python3
"""The verdicts of scripts/device_report.py, target by target, on hand-made rows: PASS, FAIL and
'not measured' each where they belong, thresholds inclusive as the issues state them (a ratio
that equals the limit passes), and the cases a review found read wrong (cpu-offload missing at a
batch, a graph replay that differed, checks of other layouts, eager against graphed rows, FAILs
of a run that did not reach every row, nothing verified, the decode run's incorrect rows, a faster
eager row beside a graphed one, rows of the cpu backend, e2e rates of 0 or NaN, a missing
peak_device_bytes, a lone run at another prompt length). Usage: test_device_report_verdicts.py SOURCE_DIR"""
import sys
import pathlib

sys.path.insert(0, str(pathlib.Path(sys.argv[1]) / "scripts"))
import device_report as dr  # noqa: E402

failures = []


def verdicts(fill, *args, **kw):
    t = dr.Targets()
    try:
        fill(t, *args, **kw)
    except Exception as e:  # a crash is a failure of the case, not the end of the others
        failures.append(f"{fill.__name__} raised {type(e).__name__}: {e}")
        return {}
    return {r[1]: (r[3], r[2], r[4]) for r in t.rows}


def expect(table, target, verdict, why):
    got = table.get(target)
    if got is None:
        failures.append(f"{why}: no row '{target}' (rows: {sorted(table)})")
    elif got[0] != verdict:
        failures.append(f"{why}: '{target}' is {got[0]} ({got[1]}; {got[2]}), expected {verdict}")


def row(method, batch, median, variant="v", disposition="passed", graph=True, reason="", chunk=None, unit="model.layers.1"):
    r = {"case": {"unit": unit, "method": method, "variant": variant, "batch": batch, "chunk_bytes": chunk},
         "disposition": disposition, "reason": reason, "summary": None}
    if disposition == "passed":
        r["summary"] = {"median_s": median, "cuda_graph": graph, "gbps": 1.0 / median}
    return r


B1, B2048, B4096 = "best df11 <= 2.9x bf16 at batch 1", "best df11 <= 1.3x bf16 at batch 2048", \
    "best df11 <= 1.15x bf16 at batch 4096"
CH, OFF, BIT = "best df11-chunked <= 2.0x bf16 at batch 1", "every df11 method faster than cpu-offload", \
    "every verified method bit-identical"


def base(df11_b1=29.0, chunked=20.0, offload_b1=1000.0):
    """Exact binary ratios: 29/10 is the double nearest 2.9, as the limit is."""
    return [row("bf16", 1, 10.0), row("df11", 1, df11_b1), row("df11-chunked", 1, chunked, chunk=0),
            row("bf16", 2048, 100.0), row("df11", 2048, 130.0), row("bf16", 4096, 100.0), row("df11", 4096, 115.0),
            row("cpu-offload", 1, offload_b1, graph=False), row("cpu-offload", 2048, 5000.0, graph=False),
            row("cpu-offload", 4096, 9000.0, graph=False)]


v = verdicts(dr.sweep_targets, base())
for target in (B1, B2048, B4096, CH, OFF, BIT):
    expect(v, target, "PASS", "every ratio at its limit")
v = verdicts(dr.sweep_targets, base(df11_b1=29.5, chunked=20.5, offload_b1=25.0))
expect(v, B1, "FAIL", "2.95x")
expect(v, CH, "FAIL", "2.05x")
expect(v, OFF, "FAIL", "df11 at batch 1 slower than offload")
expect(verdicts(dr.sweep_targets, base(offload_b1=29.0)), OFF, "FAIL", "df11 as slow as offload is not faster")
# The best of the family counts: a df11-rev row under the limit passes a failing df11 row.
v = verdicts(dr.sweep_targets, base(df11_b1=35.0) + [row("df11-rev", 1, 28.0)])
expect(v, B1, "PASS", "df11-rev counts for the df11 target")
# Eager bf16 against a graphed df11 row: not the same protocol.
rows = base()
rows[0]["summary"]["cuda_graph"] = False
expect(verdicts(dr.sweep_targets, rows), B1, "not measured", "eager bf16 against graphed df11")
# A FAIL while df11 rows of that batch were never run may be wrong: not measured; a PASS stands.
cut = [row("df11-overlap", 1, None, disposition="not_run", reason="interrupted (SIGINT) before this case ran")]
expect(verdicts(dr.sweep_targets, base(df11_b1=35.0) + cut), B1, "not measured", "FAIL with unrun rows")
expect(verdicts(dr.sweep_targets, base() + cut), B1, "PASS", "PASS with unrun rows")
# cpu-offload missing at a batch that has df11 rows: not measured, not PASS.
rows = [r for r in base() if not (r["case"]["method"] == "cpu-offload" and r["case"]["batch"] == 4096)]
rows.append(row("cpu-offload", 4096, None, disposition="not_run", reason="interrupted"))
expect(verdicts(dr.sweep_targets, rows), OFF, "not measured", "offload not run at 4096")
# A df11 row not run: not measured; one not supported at that batch (df11-fused past 16) is no row.
expect(verdicts(dr.sweep_targets, base() + [row("df11-chunked", 4096, None, disposition="not_run")]), OFF,
       "not measured", "a df11 row not run")
expect(verdicts(dr.sweep_targets, base() + [row("df11-fused", 4096, None, disposition="not_supported")]), OFF,
       "PASS", "df11-fused not supported at 4096")
# Batches of the experiment the run never reached (killed before writing their rows): not measured.
expect(verdicts(dr.sweep_targets, base(), "model.layers.1", [1, 2048, 4096]), OFF, "PASS", "every batch reached")
expect(verdicts(dr.sweep_targets, base(), "model.layers.1", [1, 2, 2048, 4096]), OFF, "not measured",
       "batch 2 never reached")
# Offload rows only at batches without df11 rows: nothing compared.
rows = [r for r in base() if r["case"]["method"] != "cpu-offload"] + [row("cpu-offload", 8, 1.0, graph=False)]
expect(verdicts(dr.sweep_targets, rows), OFF, "not measured", "no offload row at a df11 batch")
# A graph replay that differed (written not_run before 2026-11-29) is incorrect.
mismatch = row("df11", 2, None, disposition="not_run",
               reason="failed while timing: df11:v: the replay of its CUDA graph differs from the verified run")
expect(verdicts(dr.sweep_targets, base() + [mismatch]), BIT, "FAIL", "replay mismatch")
expect(verdicts(dr.sweep_targets, base() + [row("df11", 2, None, disposition="incorrect", reason="x")]), BIT,
       "FAIL", "incorrect row")
# Nothing verified is not "0 incorrect": a sweep whose every row was not run is not measured, and
# says how many were not run.
unrun = [row(m, 1, None, disposition="not_run", reason="interrupted (SIGTERM)") for m in ("bf16", "df11")]
v = verdicts(dr.sweep_targets, unrun)
expect(v, BIT, "not measured", "every row not run")
if v.get(BIT) and "2 not run" not in v[BIT][1]:
    failures.append(f"the bit-identical row does not count the rows not run: {v[BIT]}")
expect(verdicts(dr.sweep_targets, base() + unrun), BIT, "PASS", "some rows passed, some not run")
# The decode run's incorrect rows (its own results.jsonl) fail the target as the sweep's do.
bad_decode = [row("decode", 0, 1.0, variant="fast"), row("decode", 0, None, variant="bad", disposition="incorrect",
                                                         reason="decoded unit differs at element 7")]
v = verdicts(dr.sweep_targets, base(), decode_rows=bad_decode)
expect(v, BIT, "FAIL", "an incorrect row of the decode run")
if v.get(BIT) and "(1 of the decode run)" not in v[BIT][1]:
    failures.append(f"the bit-identical row does not say the incorrect row is the decode run's: {v[BIT]}")
expect(verdicts(dr.sweep_targets, [], decode_rows=bad_decode), BIT, "FAIL", "the decode run's incorrect row alone")
# The best row is the best of those timed as bf16 was: an eager df11 row (its capture failed) faster
# than the graphed ones neither counts nor hides the graphed row that passes.
v = verdicts(dr.sweep_targets, base() + [row("df11-rev", 1, 20.0, graph=False)])
expect(v, B1, "PASS", "a faster eager row beside a graphed row at the limit")
if v.get(B1) and v[B1][1] != "2.90x (v)":
    failures.append(f"the batch-1 target did not take the graphed row: {v[B1]}")
# A run killed (SIGKILL) before it wrote every row of a batch: a variant measured at other batches
# but absent at 4096 may be the faster one, so a FAIL there is not measured; a PASS stands.
cut = [r for r in base(df11_b1=29.5) if not (r["case"]["method"] == "df11" and r["case"]["batch"] == 4096)]
cut += [row("df11", 4096, 125.0, variant="slow"), row("df11", 1, 29.5, variant="slow")]
v = verdicts(dr.sweep_targets, cut)
expect(v, B4096, "not measured", "a variant's row at 4096 never written")
if v.get(B4096) and "no row of df11:v at batch 4096" not in v[B4096][2]:
    failures.append(f"the absent row is not named: {v[B4096]}")
expect(v, B1, "FAIL", "every variant's row at batch 1 written")

# Rows of the cpu backend: ratios of a CPU say nothing of a GPU's targets; none is judged.
cpu_rows = base()
for r in cpu_rows:
    r["device"] = {"backend": "cpu", "name": "AMD EPYC"}
v = verdicts(dr.sweep_targets, cpu_rows)
for target in (B1, B2048, B4096, CH, OFF, BIT):
    expect(v, target, "not measured", "cpu backend")
    if v.get(target) and not v[target][2].startswith("backend cpu"):
        failures.append(f"cpu backend: '{target}' does not name the backend: {v[target]}")
# ... but wrong bits are wrong on any backend: an incorrect cpu row fails bit-identity.
wrong_cpu = cpu_rows + [dict(row("df11", 2, 0, disposition="incorrect", reason="element 5 differs"),
                             device={"backend": "cpu", "name": "AMD EPYC"})]
v = verdicts(dr.sweep_targets, wrong_cpu)
expect(v, BIT, "FAIL", "an incorrect cpu row")
expect(v, B1, "not measured", "cpu backend, beside an incorrect row")
expect(verdicts(dr.decode_targets, [dict(r, device={"backend": "cpu"}) for r in
                                    (row("decode", 0, 1.0), row("decode", 0, 3.0, variant="official-ptx"))]),
       "best variant >= 3x official-ptx", "not measured", "cpu backend, decode rows")
# ... and the cuda rows judged after them are judged again.
expect(verdicts(lambda t: (dr.sweep_targets(t, cpu_rows), dr.sweep_targets(t, base()))), B1, "PASS",
       "cuda rows after cpu rows")

# The SM clock during the samples, where NVML read it: an info row counting throttled rows.
rows = base()
for r in rows:
    r["device"] = {"sm_clock_mhz": 1980}
    if r["summary"]:
        r["summary"]["sm_clock_mhz"] = {"min": 1980, "median": 1980}
rows[1]["summary"]["sm_clock_mhz"] = {"min": 1500, "median": 1980}
v = verdicts(dr.sweep_targets, rows)
expect(v, "SM clock during the samples (NVML)", "info", "clock row")
if not v["SM clock during the samples (NVML)"][1].startswith("1 of 10 rows below 95% of the nominal 1980 MHz; lowest 1500"):
    failures.append(f"clock row: {v['SM clock during the samples (NVML)'][1]}")
if "SM clock during the samples (NVML)" in verdicts(dr.sweep_targets, base()):
    failures.append("a clock row without clock readings")
# Nothing measured: every target says so.
v = verdicts(dr.sweep_targets, [])
for target in (B1, CH, OFF):
    expect(v, target, "not measured", "no rows")


def run(weights, batch=1, tps=100.0, prompt=128, peak=10e9, check="not_run", prefill=1000.0, **kw):
    r = {"weights": weights, "batch": batch, "prompt_len": prompt, "new_tokens": 32, "decode_tokens_per_s": tps,
         "prefill_tokens_per_s": prefill, "peak_device_bytes": peak, "check": check}
    r.update(kw)
    return r


MEM, DEC, CHK = "DF11 peak device memory <= 72% of BF16", "DF11 decode tokens/s >= 0.35x BF16 at batch 1", \
    "identical tokens, bit-identical logits (--check)"
CHD, PRE, OFF7 = "DF11 chunked decode tokens/s >= 0.5x BF16 at batch 1", "prefill of 2048 tokens >= 0.8x BF16", \
    "DF11 >= 10x cpu-offload tokens/s at batch 1"


def e2e(df11=35.0, chunked=50.0, peak=7.2e9, prefill=800.0, offload=3.5, extra=()):
    return [run("bf16", tps=100.0, peak=10e9), run("df11", tps=df11, peak=peak),
            run("df11", tps=chunked, peak=peak, chunk_bytes=25000000),
            run("bf16", prompt=2048, prefill=1000.0), run("df11", prompt=2048, prefill=prefill),
            run("cpu-offload", tps=offload), run("df11", batch=8, check="passed")] + list(extra)


v = verdicts(dr.e2e_targets, e2e())
for target in (MEM, DEC, CHK, CHD, PRE, OFF7):
    expect(v, target, "PASS", "every e2e ratio at its limit")
v = verdicts(dr.e2e_targets, e2e(df11=34.0, chunked=49.0, peak=7.3e9, prefill=790.0, offload=3.5))
for target in (MEM, DEC, CHD, PRE, OFF7):
    expect(v, target, "FAIL", "every e2e ratio past its limit")
# A count-layout check that failed, or a graphed one, counts.
cnt = run("df11", check="failed", variant="multi12.gap5-cnt.exp-smem-v16.t256.b16.persist")
expect(verdicts(dr.e2e_targets, e2e(extra=[cnt])), CHK, "FAIL", "a count-layout check failed")
expect(verdicts(dr.e2e_targets, e2e(extra=[run("df11", check="failed", graphs=True)])), CHK, "FAIL",
       "a graphed check failed")
# A --check run that errored before comparing: the others' PASS is not the whole answer.
err = {"run": "--weights df11 --check --overlap --batch 1", "error": "out of memory"}
expect(verdicts(dr.e2e_targets, e2e(extra=[err])), CHK, "not measured", "a --check run errored")
expect(verdicts(dr.e2e_targets, [err]), CHK, "not measured", "no check finished")

# generate writes 0 tokens/s where it timed no decode step, NaN arrives as null (nlohmann) or NaN,
# a run may lack peak_device_bytes: none is a measurement, none crashes the report.
for bad in (0.0, None, float("nan")):
    rows = e2e()
    rows[0]["decode_tokens_per_s"] = bad  # bf16 at batch 1
    v = verdicts(dr.e2e_targets, rows)
    for target in (DEC, CHD):
        expect(v, target, "not measured", f"bf16 decode_tokens_per_s {bad}")
    expect(v, MEM, "PASS", f"bf16 decode_tokens_per_s {bad}: memory still measured")
    v = verdicts(dr.e2e_targets, e2e(df11=bad, chunked=bad))
    for target in (DEC, CHD, OFF7):
        expect(v, target, "not measured", f"df11 decode_tokens_per_s {bad}")
expect(verdicts(dr.e2e_targets, e2e(prefill=0.0)), PRE, "not measured", "df11 prefill_tokens_per_s 0")
rows = e2e()
del rows[1]["peak_device_bytes"]
v = verdicts(dr.e2e_targets, rows)
expect(v, MEM, "not measured", "no peak_device_bytes")
expect(v, DEC, "PASS", "no peak_device_bytes: the rate still measured")
rows = e2e(extra=[run("df11", tps=50.0, fused_gemv=True, peak=None)])
if verdicts(dr.e2e_targets, rows).get("DF11 fused decode+GEMV decode tokens/s / BF16 at batch 1", ("",))[0] != "info":
    failures.append("a fused run without peak_device_bytes lost its info row")
try:
    if "| df11 | - | - | yes |" not in dr.e2e_table(rows + [{"weights": "bf16", "decode_tokens_per_s": 0}]):
        failures.append("e2e_table does not list runs that lack fields")
except (KeyError, TypeError) as e:
    failures.append(f"e2e_table on runs that lack fields raised {type(e).__name__}: {e}")
# The batch-1 pairs at the shortest prompt that has one: a lone bf16 run at 64 tokens (listed first)
# does not leave the targets without their runs at 128.
v = verdicts(dr.e2e_targets, [run("bf16", prompt=64, tps=1000.0)] + e2e())
for target in (MEM, DEC, CHD, OFF7):
    expect(v, target, "PASS", "a lone bf16 run at another prompt length")
# e2e lines of the cpu backend: not judged.
v = verdicts(dr.e2e_targets, [dict(r, backend="cpu", device="cpu") for r in e2e()])
for target in (MEM, DEC, CHK, CHD, PRE, OFF7):
    expect(v, target, "not measured", "cpu e2e runs")

# --fused-mma runs (the tensor-core kernel) get rows of their own: not read as the GEMV kernels',
# whose row stays the GEMV run's; and neither moves a target but --check (below). Listed first and
# faster than the targets' runs, so that a target that took them would show another value.
fused = [run("df11", tps=50.0, fused_gemv=True), run("df11", tps=60.0, fused_gemv=True, fused_mma=True),
         run("df11", tps=60.0, peak=5e9, fused_gemv=True, fused_mma=True, chunk_bytes=25000000),
         run("df11", prompt=2048, prefill=1500.0, fused_gemv=True, fused_mma=True),
         run("bf16", batch=8, tps=800.0), run("df11", batch=8, tps=400.0, fused_gemv=True, fused_mma=True)]
v = verdicts(dr.e2e_targets, fused + e2e())
plain = verdicts(dr.e2e_targets, e2e())
for target in (MEM, DEC, CHD, PRE, OFF7):
    if v.get(target) != plain.get(target):
        failures.append(f"fused e2e rows moved '{target}': {v.get(target)} against {plain.get(target)}")
for target, want in (("DF11 fused decode+GEMV decode tokens/s / BF16 at batch 1", "0.50x"),
                     ("DF11 fused decode+MMA (tensor cores) decode tokens/s / BF16 at batch 1", "0.60x"),
                     ("DF11 fused decode+MMA (tensor cores) decode tokens/s / BF16 at batch 8", "0.50x")):
    got = v.get(target)
    if got is None or got[0] != "info" or got[1] != want:
        failures.append(f"fused e2e rows: '{target}' is {got}, expected info {want}")
if "DF11 fused decode+GEMV decode tokens/s / BF16 at batch 8" in v:
    failures.append("fused e2e rows: an MMA run read as the GEMV kernels' at batch 8")
# A --check of the tensor-core kernel is a DF11 against BF16 check like any other (the same kernel
# on both sides): it counts, a failed one fails the target.
mma_check = run("df11", batch=8, check="failed", fused_gemv=True, fused_mma=True)
expect(verdicts(dr.e2e_targets, e2e(extra=[mma_check])), CHK, "FAIL", "a --fused-mma check failed")

# Issue 4: the official kernel 3x slower exactly passes; its row's text names the fastest's own GB/s.
dec = [row("decode", 0, 1.0, variant="fast"), row("decode", 0, 3.0, variant="official-ptx"),
       row("copy", 0, 0.5, variant=None)]
dec[0]["summary"]["gbps"] = 700.0
dec.append(row("decode", 0, 2.0, variant="dense"))
dec[-1]["summary"]["gbps"] = 800.0  # more GB/s (more encoded bytes), slower
dec[2]["summary"]["gbps"] = 1000.0
v = verdicts(dr.decode_targets, dec)
expect(v, "best variant >= 3x official-ptx", "PASS", "3x exactly")
if "fast 1000000 us vs 3000000 us; 700 vs" not in v["best variant >= 3x official-ptx"][1]:
    failures.append(f"issue 4's row names another variant's GB/s: {v['best variant >= 3x official-ptx'][1]}")
dec[1]["summary"]["median_s"] = 2.9
expect(verdicts(dr.decode_targets, dec), "best variant >= 3x official-ptx", "FAIL", "2.9x")

# ncu's output folded into device_check.log is no step's: its progress lines and messages are left out.
log = "\n".join([
    "== default experiment (04:59:29, limit 238s): run_sweep y",
    "  0:28 [14/338] model.layers.1 bf16 b=1: passed, median 168.4 us; verify 0.02 s, time 0.16 s (5 samples, 0.10 s of them)",
    "== ncu profile (05:10:00, limit 90s): python3 scripts/device_profile.py",
    dr.PROFILE_LOG,
    "  0:01 [ 1/1] model.layers.1 decode:x b=0: passed, median 1.0 ms; verify 0.1 s, time 0.2 s (1 samples, 0.00 s of them)",
    "gap_decode: early launch refused (not permitted); launching serially",
    "== gpu micro-benchmarks (05:12:00, limit 90s): df11_bench",
])
kept = dr.without_profile_log(log)
if "early launch refused" in kept or "decode:x" in kept or "gpu micro-benchmarks" not in kept or "bf16 b=1" not in kept:
    failures.append(f"without_profile_log kept the wrong lines:\n{kept}")
if "| ncu profile |" in dr.device_time(kept, []):
    failures.append("ncu's profiled runs counted as a step's cases")

if failures:
    print("\n".join("FAIL: " + f for f in failures))
    sys.exit(1)
print("device_report verdicts ok")
