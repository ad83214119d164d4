#!/usr/bin/python3
"""Turns what scripts/device_check.sh left in its output folder (the device tool's files_at
copy of $OUT) into committed report directories, and checks the issues' GPU targets.

Usage: scripts/device_report.py DEVICE_OUT [DEVICE_OUT ...] [--reports DIR] [--date YYYY-MM-DD] [--force]

Several DEVICE_OUT folders (the runbook's two calls, e.g. the sweep steps, then e2e and bench)
make one report: a run directory (sweep/, decode/) and gpu_bench.json come from the last folder
that has one; e2e.jsonl and profile.jsonl rows, summary.txt, device_check.log and profile.log
are joined in the order given, and ncu's raw CSV pages (profile_raw.tar.gz) are copied to profile/.

Writes, with SLUG the device slug of scripts/promote_baseline ("h100-80gb-hbm3", "cpu"):
  reports/<date>_<SLUG>_nemo_layer/          the default experiment (sweep/), with plots
  reports/<date>_<SLUG>_decode_throughput/   the decoders alone (decode/), with plots
  reports/<date>_<SLUG>_device_check/        summary.txt, device_check.log, e2e.jsonl,
                                             gpu_bench.json, profile.jsonl (+ profile_raw.tar.gz),
                                             and README.md: the step verdicts, the counters,
                                             where the device time went (run_sweep's verify /
                                             time split per step, the e2e runs' setup_s) and a
                                             table of every GPU target of issues 4, 5 and 7
                                             with the measured value and PASS / FAIL / not
                                             measured.
Run directories stay separate so that scripts/ci_gate finds each by its dated name. Nothing
is invented: a target whose rows are missing says "not measured" and why, and so does every
target on rows of another backend than cuda (the targets are a GPU's).
"""
import argparse
import importlib.machinery
import importlib.util
import json
import math
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tarfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import device_profile  # noqa: E402  (its table of profile.jsonl rows)


def load_promote_baseline():
    """scripts/promote_baseline as a module (a script without .py, so no plain import): its device
    slug names the report directories, which scripts/ci_gate matches to baselines by that slug."""
    loader = importlib.machinery.SourceFileLoader("promote_baseline", str(HERE / "promote_baseline"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def slug_of(device):
    """The device slug of a results row's device ({"backend", "name"}): promote_baseline's, so
    that a cpu run's directories are <date>_cpu_..., as run_sweep's and the baselines' are."""
    return load_promote_baseline().device_slug(device) or "unknown"


def backend_of(r):
    """The backend a row ran on: results rows' device.backend; e2e.jsonl lines' backend (lines
    from before generate wrote it say "cpu" as their device there)."""
    if isinstance(r.get("device"), dict):
        return r["device"].get("backend")
    return r.get("backend") or ("cpu" if r.get("device") == "cpu" else "cuda" if r.get("device") else None)


def read_jsonl(path):
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by the step's time limit
    return rows


def passed(rows):
    return [r for r in rows if r.get("disposition") == "passed" and r.get("summary")]


def median(r):
    return r["summary"]["median_s"]


class Targets:
    def __init__(self):
        self.rows = []
        self.not_gpu = None  # the backend of the rows judged now, where it is not cuda (judging)

    def judging(self, rows):
        """Before a group of targets: the backends of the rows they read. The targets are a GPU's: on
        rows of another backend (the cpu backend's ratios, 11x at batch 1) no verdict is given."""
        others = sorted({str(b) for b in map(backend_of, rows) if b and b != "cuda"})
        self.not_gpu = ", ".join(others) or None

    def add(self, issue, target, value, ok, note="", wrong_bits=False):
        """wrong_bits: a bit-identity target, whose FAIL (an incorrect row, a failed --check) stands
        on any backend: wrong bits are wrong anywhere, and the gate and promote_baseline refuse them
        on cpu rows too. Its PASS on another backend is still no GPU's."""
        verdict = "not measured" if ok is None else ("PASS" if ok else "FAIL")
        if self.not_gpu and not (wrong_bits and ok is False):
            verdict = "not measured"
            note = f"backend {self.not_gpu}: the targets are a GPU's" + (f"; {note}" if note else "")
        elif self.not_gpu:
            note = f"backend {self.not_gpu}" + (f"; {note}" if note else "")
        self.rows.append((issue, target, value, verdict, note))

    def info(self, what, value, note=""):  # a measured figure no issue sets a target for
        self.rows.append(("-", what, value, "info", note))

    def markdown(self):
        out = ["| issue | target | measured | verdict | note |", "|---|---|---|---|---|"]
        for r in self.rows:
            out.append("| " + " | ".join(str(x).replace("|", "/") for x in r) + " |")
        return "\n".join(out)


def bench_copy_gbps(path):
    """df11_bench's gpu_copy (a stream cudaMemcpyAsync of a Nemo gate_proj, read + write bytes),
    GB/s; None without it."""
    try:
        benchmarks = json.loads(pathlib.Path(path).read_text()).get("benchmarks", [])
    except (OSError, ValueError):
        return None
    rates = [b["bytes_per_second"] / 1e9 for b in benchmarks
             if b.get("name", "").startswith("gpu_copy") and not b.get("error_occurred") and "bytes_per_second" in b]
    return max(rates) if rates else None


def decode_targets(t, rows, bench_copy=None):
    t.judging(rows)
    decodes = [r for r in passed(rows) if r["case"]["method"] == "decode"]
    copies = [r for r in passed(rows) if r["case"]["method"] == "copy"]
    ours = [r for r in decodes if r["case"]["variant"] != "official-ptx"]
    official = [r for r in decodes if r["case"]["variant"] == "official-ptx"]
    if not ours:
        t.add(4, "best variant >= 3x official-ptx", "-", None, "no passed decode row")
        t.add(4, "best variant >= 60% of the copy bound", "-", None, "no passed decode row")
        return
    best = max(ours, key=lambda r: r["summary"]["gbps"])
    name, gbps = best["case"]["variant"], best["summary"]["gbps"]
    if official:
        # Speed as a time ratio on the same layer: GB/s would favour a layout with more encoded bytes.
        fastest = min(ours, key=median)
        ratio = median(official[0]) / median(fastest)
        o = official[0]["summary"]["gbps"]
        t.add(4, "best variant >= 3x official-ptx",
              f"{ratio:.2f}x ({fastest['case']['variant']} {median(fastest) * 1e6:.0f} us vs {median(official[0]) * 1e6:.0f} us;"
              f" {fastest['summary']['gbps']:.0f} vs {o:.0f} GB/s)", ratio >= 3.0)
    else:
        t.add(4, "best variant >= 3x official-ptx", f"best {name} {gbps:.0f} GB/s", None,
              "no official-ptx row (run with OFFICIAL_PTX=decode.ptx)")
    if copies:
        # The bound is the fastest copy the check measured: the decode step's copy runs as a
        # memcpy node of a CUDA graph, which an H200 ran at 2.69 TB/s where df11_bench's stream
        # copy reached 4.00 TB/s; a slow copy must not make a decoder look close to the bound.
        c = copies[0]["summary"]["gbps"]
        src = "decode step's copy"
        if bench_copy is not None and bench_copy > c:
            c, src = bench_copy, "df11_bench gpu_copy"
        t.add(4, "best variant >= 60% of the copy bound",
              f"{gbps / c * 100:.0f}% ({name} {gbps:.0f} of {c:.0f} GB/s, {src})", gbps / c >= 0.6)
    else:
        t.add(4, "best variant >= 60% of the copy bound", f"{gbps:.0f} GB/s", None, "no passed copy row")


def timing_mismatch(r):
    """A row written not_run because an output checked while timing (a CUDA graph's replay)
    differed: incorrect, though run_sweep before 2026-11-29 wrote it as not run."""
    return r.get("disposition") == "not_run" and "differs" in (r.get("reason") or "")


def experiment_batches(run_dir, backend="cuda"):
    """The batch sizes the run's experiment (its copy in the run directory) asks of a backend, or
    None without one."""
    import tomllib
    for f in sorted(pathlib.Path(run_dir).glob("*.toml")) if run_dir else []:
        try:
            e = tomllib.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        batches = e.get(backend, {}).get("batches", e.get("batches"))
        if isinstance(batches, list):
            return sorted(b for b in batches if isinstance(b, int))
    return None


def sweep_targets(t, rows, unit="model.layers.1", batches=None, decode_rows=()):
    """batches: the experiment's batch sizes (experiment_batches), so that batches the run never
    reached (a run killed without writing their rows) count as not measured. decode_rows: the
    decode run's rows (results.jsonl of decode/), whose incorrect rows fail the bit-identical
    target as the sweep's do (issue 4's targets read its passed rows only)."""
    t.judging(rows)
    unit_rows = [r for r in rows if r.get("case", {}).get("unit") == unit]
    ok_rows = passed(unit_rows)
    by = {}
    for r in ok_rows:
        by.setdefault((r["case"]["method"], r["case"]["batch"]), []).append(r)
    bf16_row = {b: rs[0] for (m, b), rs in by.items() if m == "bf16"}
    bf16 = {b: median(r) for b, r in bf16_row.items()}

    def key(r):
        c = r["case"]
        return c["method"], c.get("variant"), c.get("chunk_bytes")

    def unrun(methods, batch):
        """Cases of these methods at this batch that were not measured: rows not_run, and cases the
        file has at other batches but not at this one (a run killed before it wrote them, as
        SIGKILL leaves it; SIGTERM writes them not_run)."""
        here = [r for r in unit_rows if r["case"]["method"] in methods and r["case"]["batch"] == batch]
        seen_here = {key(r) for r in here}
        absent = {key(r) for r in unit_rows if r["case"]["method"] in methods and r["case"]["batch"] not in (0, batch)
                  and key(r) not in seen_here}
        return ([r for r in here if r.get("disposition") == "not_run"] +
                [{"case": {"method": m, "variant": v}, "reason": f"no row of {m}:{v} at batch {batch} (a run cut short?)"}
                 for m, v, _c in sorted(absent, key=str)])

    def best(method, batch):
        rs = by.get((method, batch), [])
        return min(rs, key=median) if rs else None

    def graph_mode(r):
        return r["summary"].get("cuda_graph")

    # df11-pipelined is df11-chunked with two slices in flight: it counts for the chunked target;
    # df11-overlap is df11 (whole matrices decoded to memory, read back by bf16's GEMMs) with the
    # next matrix decoding on a second stream beside the GEMM, and df11-rev is df11 with the
    # decode's units in descending order: both count for the df11 targets.
    families = {"df11": ["df11", "df11-rev", "df11-overlap"], "df11-chunked": ["df11-chunked", "df11-pipelined"]}
    for method, batch, limit in [("df11", 1, 2.9), ("df11", 2048, 1.3), ("df11", 4096, 1.15),
                                 ("df11-chunked", 1, 2.0)]:
        label = f"best {method} <= {limit}x bf16 at batch {batch}"
        family = families[method]
        found = [r for m in family for r in by.get((m, batch), [])]
        if not found or batch not in bf16:
            t.add(5, label, "-", None, f"no passed {method} or bf16 row at batch {batch} for {unit}")
            continue
        # The best among the rows timed as bf16 was (graph replays or eager launches): a faster row
        # of the other kind (its capture failed) is no comparison, and must not hide one that is.
        same = [r for r in found if graph_mode(r) == graph_mode(bf16_row[batch])]
        b = min(same or found, key=median)
        ratio = median(b) / bf16[batch]
        name = b["case"]["variant"] if b["case"]["method"] == method else f"{b['case']['method']}:{b['case']['variant']}"
        if b["case"].get("chunk_bytes") is not None:
            name += f", {b['case']['chunk_bytes']} B slices"
        graphs = (graph_mode(b), graph_mode(bf16_row[batch]))
        if graphs[0] != graphs[1]:  # a graph replay against eager launches: not the same protocol
            t.add(5, label, f"{ratio:.2f}x ({name})", None,
                  f"{method} {'graphed' if graphs[0] else 'eager'} against bf16 {'graphed' if graphs[1] else 'eager'} "
                  f"(a capture failed: see run_sweep's stderr)")
            continue
        missing = unrun(family, batch)
        if ratio > limit and missing:  # a faster row may be among those the run did not reach
            t.add(5, label, f"{ratio:.2f}x ({name})", None,
                  f"{len(missing)} {method} row(s) at batch {batch} not run ({missing[0].get('reason', '')[:80]})")
            continue
        t.add(5, label, f"{ratio:.2f}x ({name})", ratio <= limit)
    for batch in (1, 2048, 4096):  # no target of their own: decode hidden under the GEMMs
        for kind in ("df11-rev", "df11-overlap", "df11-pipelined"):
            p = best(kind, batch)
            if p is not None and batch in bf16:
                t.info(f"best {kind} / bf16 at batch {batch}", f"{median(p) / bf16[batch]:.2f}x ({p['case']['variant']})")
    for batch in (1, 16):
        f = best("df11-fused", batch)
        if f is not None and batch in bf16:
            t.info(f"df11-fused / bf16 at batch {batch}",
                   f"{median(f) / bf16[batch]:.2f}x ({f['case'].get('variant') or 'two-pass, DF11 layout'})",
                   f"verified against {f.get('verified_against')}")
    for batch in (1, 16, 64):  # the tensor-core fused kernel (fix64's units), batches up to 64
        f = best("df11-fused-mma", batch)
        if f is not None and batch in bf16:
            t.info(f"df11-fused-mma / bf16 at batch {batch}", f"{median(f) / bf16[batch]:.2f}x",
                   f"verified against {f.get('verified_against')}")
    # Every df11 method faster than cpu-offload at every batch size: every df11 row the unit has
    # (but those not supported there, like df11-fused past batch 16 or df11-fused-mma past 64) must be measured, and
    # cpu-offload at its batch.
    df11_kinds = ("df11", "df11-rev", "df11-overlap", "df11-chunked", "df11-pipelined", "df11-fused", "df11-fused-mma")
    offload = {b: median(rs[0]) for (m, b), rs in by.items() if m == "cpu-offload"}
    considered = [r for r in unit_rows
                  if r["case"]["method"] in df11_kinds and r.get("disposition") != "not_supported"]
    df11_rows = passed(considered)
    label = "every df11 method faster than cpu-offload"
    if not offload or not df11_rows:
        t.add(5, label, "-", None, "no passed df11 or cpu-offload rows")
    else:
        slower = [r for r in df11_rows if r["case"]["batch"] in offload and median(r) >= offload[r["case"]["batch"]]]
        compared = sum(1 for r in df11_rows if r["case"]["batch"] in offload)
        unmeasured = [r for r in considered if r.get("disposition") != "passed"]
        no_offload = sorted(({r["case"]["batch"] for r in considered} | set(batches or ())) - set(offload))
        value = f"{compared - len(slower)} of {compared} rows faster"
        if slower:
            t.add(5, label, value, False,
                  "; ".join(f"{r['case']['method']}:{r['case']['variant']}@{r['case']['batch']}" for r in slower[:5]))
        elif unmeasured or no_offload or compared == 0:
            why = []
            if no_offload:
                why.append(f"no passed cpu-offload row at batch {', '.join(str(b) for b in no_offload)}")
            if unmeasured:
                why.append(f"{len(unmeasured)} df11 row(s) not passed")
            t.add(5, label, value, None, "; ".join(why) or "nothing compared")
        else:
            t.add(5, label, value, True)
    # The SM clock during the samples (NVML, summary.sm_clock_mhz, from 2026-11-29): rows whose
    # lowest reading fell below 95% of the nominal clock ran (in part) throttled.
    clocked = [r for r in ok_rows if isinstance(r["summary"].get("sm_clock_mhz"), dict)]
    if clocked:
        nominal = (clocked[0].get("device") or {}).get("sm_clock_mhz")
        low = [r for r in clocked if nominal and r["summary"]["sm_clock_mhz"]["min"] < 0.95 * nominal]
        lowest = min(r["summary"]["sm_clock_mhz"]["min"] for r in clocked)
        t.info("SM clock during the samples (NVML)",
               f"{len(low)} of {len(clocked)} rows below 95% of the nominal {nominal} MHz; lowest {lowest:.0f} MHz",
               "; ".join(f"{r['case']['method']}:{r['case'].get('variant')}@{r['case']['batch']}" for r in low[:3]))
    bit_identical_target(t, rows, decode_rows)


def bit_identical_target(t, rows, decode_rows=()):
    """Issue 5's "every verified method bit-identical" over the sweep's rows and the decode run's:
    FAIL on an incorrect row of either; PASS only where some row passed (verified), so that a run
    whose rows were all not run is not measured rather than "0 incorrect"."""
    t.judging(list(rows) + list(decode_rows))

    def wrong(rs):
        return [r for r in rs if r.get("disposition") == "incorrect" or timing_mismatch(r)]

    incorrect, decode_incorrect = wrong(rows), wrong(decode_rows)
    every = list(rows) + list(decode_rows)
    unrun = [r for r in every if r.get("disposition") == "not_run" and not timing_mismatch(r)]
    value = (f"{len(incorrect) + len(decode_incorrect)} incorrect row(s)"
             + (f" ({len(decode_incorrect)} of the decode run)" if decode_incorrect else "")
             + (f", {len(unrun)} not run" if unrun else ""))
    first = (incorrect + decode_incorrect)[:1]
    if first:
        t.add(5, "every verified method bit-identical", value, False, first[0].get("reason", "")[:160], wrong_bits=True)
    elif not passed(every):
        t.add(5, "every verified method bit-identical", value, None,
              f"no row passed ({len(unrun)} not run)" if unrun else "no row passed")
    else:
        t.add(5, "every verified method bit-identical", value, True)


def is_count_layout(r):  # a run whose decoder reads a count layout (DF11's tables + count bytes)
    v = r.get("variant") or ""
    return "-cnt." in v or "-wcnt." in v


def measured(x):
    """A rate or a size that was measured: a finite number > 0. generate writes 0 tokens/s where it
    timed no decode step (decode_s 0), and a NaN reaches JSON as null (or NaN from other writers):
    a ratio of either is no measurement."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def ratio_of(a, b, key):
    """a[key] / b[key] where both runs exist and measured it, else None."""
    if a is None or b is None or not measured(a.get(key)) or not measured(b.get(key)):
        return None
    return a[key] / b[key]


def why_not(key, **named):
    """The note of a ratio that is not measured: which of the named runs lacks a measured key."""
    return "; ".join(f"the {name} run's {key} is {r.get(key)!r}" for name, r in named.items()
                     if r is not None and not measured(r.get(key))) or f"no run with a measured {key}"


def times(x):  # an info row's ratio, or "-" where it is not measured
    return f"{x:.2f}x" if x is not None else "-"


def peak_gb(r):
    v = r.get("peak_device_bytes")
    return f"{v / 1e9:.2f} GB" if measured(v) else "not recorded"


def e2e_targets(t, lines):
    """lines: e2e.jsonl's objects (finished runs and error lines)."""
    every = [r for r in lines if "decode_tokens_per_s" in r]
    t.judging(every)
    tps = "decode_tokens_per_s"
    # The targets are for DF11's own layout; count-layout runs only get an info row. They compare
    # eager runs with eager BF16: runs with --graphs (decode steps replayed as a CUDA graph) get
    # info rows against BF16 with --graphs.
    graphed = [r for r in every if r.get("graphs") and not is_count_layout(r)]
    ok = [r for r in every if not is_count_layout(r) and not r.get("graphs")]

    def runs(weights, batch, prompt_len=None, chunked=False, fused=False, overlap=None, mma=False):
        return [r for r in ok if r.get("weights") == weights and r.get("batch") == batch and
                bool(r.get("chunk_bytes")) == chunked and
                # fused: the run's passes ran the fused kernels; not fused: it did not ask for them
                (fused_ran(r) if fused else not r.get("fused_gemv")) and
                bool(r.get("fused_mma")) == mma and
                (overlap is None or bool(r.get("overlap")) == overlap) and
                r.get("check", "not_run") == "not_run" and (prompt_len is None or r.get("prompt_len") == prompt_len)]

    def find(weights, batch, prompt_len=None, chunked=False, fused=False, overlap=False, mma=False):
        found = runs(weights, batch, prompt_len, chunked, fused, overlap, mma)
        return found[0] if found else None

    def fastest(found, key):  # the best of several methods that a target allows, among those measured
        found = [r for r in found if measured(r.get(key))]
        return max(found, key=lambda r: r[key]) if found else None

    def method(r):
        if r.get("overlap") and not r.get("chunk_bytes"):
            return "each matrix decoded on a second stream, overlapped"
        held = "slices held in L2" if "persisting L2" in str(r.get("method", "")) else ""  # --slice-l2
        desc = "units decoded last first" if r.get("decode_order") == "descending" else ""  # --decode-order
        return ", ".join(x for x in ("chunked" if r.get("chunk_bytes") else "whole blocks",
                                     "overlapped" if r.get("overlap") else "", held, desc) if x)

    # Every --check run counts, whatever its layout or graphs; a --check run that failed before it
    # compared (an error line) is named, and when none finished the target is not measured.
    checks = [r for r in every if r.get("check", "not_run") != "not_run"]
    errored = [r for r in lines if "error" in r and "--check" in str(r.get("run", ""))]
    label = "identical tokens, bit-identical logits (--check)"
    note = "; ".join(f"`{r.get('run', '?')}` failed: {str(r['error'])[:80]}" for r in errored[:3])
    if checks:
        failed = [r for r in checks if r.get("check") != "passed"]
        t.add(7, label, f"{len(checks) - len(failed)} of {len(checks)} checks passed"
              + (f", {len(errored)} --check run(s) failed before comparing" if errored else ""),
              False if failed else (None if errored else True), note, wrong_bits=True)
    else:
        t.add(7, label, "-", None, note or "no --check run finished")
    # The prompt length of the batch-1 comparisons: the shortest at which a bf16 run and a df11 run
    # (whole blocks or sliced) both finished, so that one run at another length (a bf16 run of 64
    # tokens beside the pairs at 128) does not leave the targets without their pairs.
    prompt_lens = sorted({r.get("prompt_len") for r in ok if isinstance(r.get("prompt_len"), int)})
    paired = [p for p in prompt_lens
              if find("bf16", 1, p) and (runs("df11", 1, p) or runs("df11", 1, p, chunked=True))]
    short = (paired or prompt_lens or [None])[0]
    b16, d11, off = find("bf16", 1, short), find("df11", 1, short), find("cpu-offload", 1, short)
    if b16 and d11:
        peak = ratio_of(d11, b16, "peak_device_bytes")
        t.add(7, "DF11 peak device memory <= 72% of BF16", f"{peak * 100:.1f}%" if peak is not None else "-",
              peak <= 0.72 if peak is not None else None,
              "" if peak is not None else why_not("peak_device_bytes", bf16=b16, df11=d11))
        # Whole matrices decoded to memory either way: one launch per block before it runs (its
        # units ascending, or with --decode-order descending), or (--overlap) one per matrix on a
        # second stream while the previous matrix's GEMM runs, in the same buffer. The fastest
        # counts; the report names it and gives the first whole-block run's ratio.
        best_run = fastest(runs("df11", 1, short, overlap=None), tps)
        ratio = ratio_of(best_run, b16, tps)
        if ratio is None:
            t.add(7, "DF11 decode tokens/s >= 0.35x BF16 at batch 1", "-", None,
                  why_not(tps, bf16=b16, df11=best_run or d11))
        else:
            whole = ratio_of(d11, b16, tps)
            value = (f"{ratio:.2f}x" if best_run is d11 else
                     f"{ratio:.2f}x ({method(best_run)}, {best_run.get('variant') or 'default decoder'}; "
                     f"whole blocks {times(whole)})")
            t.add(7, "DF11 decode tokens/s >= 0.35x BF16 at batch 1", value, ratio >= 0.35)
    else:
        t.add(7, "DF11 peak device memory <= 72% of BF16", "-", None, "no bf16 and df11 runs at batch 1")
        t.add(7, "DF11 decode tokens/s >= 0.35x BF16 at batch 1", "-", None, "no bf16 and df11 runs at batch 1")
    sliced = runs("df11", 1, short, chunked=True)
    dch = fastest(sliced, tps)
    ratio = ratio_of(dch, b16, tps)
    if ratio is not None:
        t.add(7, "DF11 chunked decode tokens/s >= 0.5x BF16 at batch 1", f"{ratio:.2f}x "
              f"({dch['chunk_bytes']} B slices{', overlapped' if dch.get('overlap') else ''}"
              f"{', held in L2' if 'persisting L2' in str(dch.get('method', '')) else ''}"
              f"{', decodes started early' if 'started early' in str(dch.get('method', '')) else ''})", ratio >= 0.5)
    else:
        t.add(7, "DF11 chunked decode tokens/s >= 0.5x BF16 at batch 1", "-", None,
              why_not(tps, bf16=b16, df11=sliced[0]) if b16 and sliced else "no bf16 and chunked df11 runs at batch 1")
    for batch in (1, 8):  # fused decode + GEMV: no issue sets a target; against plain BF16 (cuBLAS)
        fb, fd = find("bf16", batch, short), find("df11", batch, short, fused=True)
        if fb and fd:
            t.info(f"DF11 fused decode+GEMV decode tokens/s / BF16 at batch {batch}",
                   times(ratio_of(fd, fb, tps)), f"peak device {peak_gb(fd)}")
    for batch in (1, 8, 64):  # --fused-mma: the tensor-core kernel (passes of up to 64 rows)
        fb, fm = find("bf16", batch, short), find("df11", batch, short, fused=True, mma=True)
        if fb and fm:
            t.info(f"DF11 fused decode+MMA (tensor cores) decode tokens/s / BF16 at batch {batch}",
                   times(ratio_of(fm, fb, tps)), f"peak device {peak_gb(fm)}")
    for r in (r for r in every if is_count_layout(r) and r.get("batch") == 1 and not r.get("chunk_bytes") and
              r.get("check", "not_run") == "not_run" and r.get("prompt_len") == short):
        if b16:
            mem = ratio_of(r, b16, "peak_device_bytes")
            mem = f", peak device {mem * 100:.1f}% of BF16" if mem is not None else ""
            how = fused_how(r) or method(r)
            t.info(f"DF11 tables + count bytes ({r['variant']}), {how}: decode tokens/s / BF16 at batch 1",
                   times(ratio_of(r, b16, tps)), f"one decode pass{mem}")
    g16 = next((r for r in graphed if r.get("weights") == "bf16" and r.get("batch") == 1 and
                r.get("prompt_len") == short), None)
    for r in (r for r in graphed if r.get("weights") == "df11" and r.get("batch") == 1 and r.get("prompt_len") == short):
        how = fused_how(r) or method(r)
        replayed = "replayed as a CUDA graph" in str(r.get("method", ""))
        if g16:
            rate = g16.get(tps)
            note = ("" if replayed else "steps NOT replayed (see its method), ") + (
                f"BF16 with graphs {rate:.1f} tok/s" if measured(rate) else f"BF16 with graphs: {tps} {rate!r}")
            t.info(f"With CUDA graphs: DF11 {how} decode tokens/s / BF16 at batch 1",
                   times(ratio_of(r, g16, tps)), note)
    if g16 and b16:
        t.info("CUDA graphs: BF16 decode tokens/s with / without at batch 1", times(ratio_of(g16, b16, tps)),
               "" if "replayed as a CUDA graph" in str(g16.get("method", "")) else "steps NOT replayed (see its method)")
    p16 = find("bf16", 1, 2048)
    prefills = runs("df11", 1, 2048) + runs("df11", 1, 2048, chunked=True)
    p11 = fastest(prefills, "prefill_tokens_per_s")
    ratio = ratio_of(p11, p16, "prefill_tokens_per_s")
    if ratio is not None:
        t.add(7, "prefill of 2048 tokens >= 0.8x BF16", f"{ratio:.2f}x ({method(p11)})", ratio >= 0.8)
    elif p16 and prefills:
        t.add(7, "prefill of 2048 tokens >= 0.8x BF16", "-", None,
              why_not("prefill_tokens_per_s", bf16=p16, df11=p11 or prefills[0]))
    else:
        t.add(7, "prefill of 2048 tokens >= 0.8x BF16", "-", None, "no 2048-token bf16 and df11 runs")
    ratio = ratio_of(d11, off, tps)
    if ratio is not None:
        t.add(7, "DF11 >= 10x cpu-offload tokens/s at batch 1", f"{ratio:.1f}x", ratio >= 10)
    elif d11 and off:
        t.add(7, "DF11 >= 10x cpu-offload tokens/s at batch 1", "-", None,
              why_not(tps, df11=d11, **{"cpu-offload": off}))
    else:
        t.add(7, "DF11 >= 10x cpu-offload tokens/s at batch 1", "-", None, "no df11 and cpu-offload runs at batch 1")


def cell(x, spec, scale=1.0):  # a number of e2e.jsonl in the table, "-" where a run has none
    return format(x / scale, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def e2e_table(runs):
    ok = [r for r in runs if "decode_tokens_per_s" in r]
    failed = [r for r in runs if "error" in r]
    failures = "".join(f"\n- run `{r.get('run', '?')}` failed: {r['error']}" for r in failed)
    if failures:
        failures = "\n\nRuns that failed:" + failures
    if not ok:
        return "No end-to-end run finished." + failures
    out = ["| weights | chunk bytes | overlap | fused GEMV | graphs | batch | prompt | new | prefill tok/s | "
           "decode tok/s | peak device GB | check |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        weights = str(r.get("weights", "?")) + (f" ({r['variant']})" if r.get("variant") else "")
        out.append(f"| {weights} | {r.get('chunk_bytes') or '-'} | {'yes' if r.get('overlap') else '-'} | "
                   f"{('MMA' if r.get('fused_mma') else 'yes') if fused_ran(r) else 'not run' if r.get('fused_gemv') else '-'} | "
                   f"{'yes' if r.get('graphs') else '-'} | "
                   f"{r.get('batch', '-')} | {r.get('prompt_len', '-')} | {r.get('new_tokens', '-')} | "
                   f"{cell(r.get('prefill_tokens_per_s'), '.1f')} | {cell(r.get('decode_tokens_per_s'), '.2f')} | "
                   f"{cell(r.get('peak_device_bytes'), '.2f', 1e9)} | {r.get('check', '-')} |")
    return "\n".join(out) + failures


def fused_ran(r):
    """Whether an e2e run's passes ran the fused kernels: --fused-gemv, at a batch within its fused rows (over them the
    model runs decode-then-GEMM and its method says "no fused decode+GEMV at batch N")."""
    return bool(r.get("fused_gemv")) and "no fused decode" not in str(r.get("method", ""))


def fused_how(r):
    """How a --fused-gemv e2e run multiplied ("" for the others): the GEMV kernels or (--fused-mma) the tensor cores;
    over its fused rows, that it asked for them and did not run them."""
    if not r.get("fused_gemv"):
        return ""
    if not fused_ran(r):
        return "fused kernels asked for, not run at this batch"
    return "fused decode+MMA" if r.get("fused_mma") else "fused decode+GEMV"


KINDS = ("decode", "gemm", "fused", "attention", "forward", "copy")  # trace::Kind (harness/lib/kernel_trace.hpp)


def kernel_times_table(runs):
    """The e2e runs with --kernel-times: a decode step's device time by kind of kernel, and how
    long the device was busy against the untraced step (the rest: launch gaps, host work)."""
    traced = [r for r in runs if isinstance(r.get("kernel_times"), dict) and r["kernel_times"].get("steps")]
    missing = [r for r in runs if isinstance(r.get("kernel_times"), dict) and not r["kernel_times"].get("steps")]
    if not traced:
        why = "; ".join(sorted({r["kernel_times"].get("why_not", "?") for r in missing}))
        return "No run traced its decode steps" + (f" ({why})." if why else " (no --kernel-times run finished).")
    out = ["Per decode step, ms: the untraced step (timed run), the device busy with any kernel or copy (union "
           "over streams), idle = untraced - busy (launch gaps, host work, synchronization), then each kind's "
           "kernel time (summed: overlapped streams may add up past busy) and the kernels a step launched; "
           "last, the step and the idle time per layer in us (to set beside the sweep's per-layer rows).", "",
           "| weights | method | batch | step | busy | idle | " + " | ".join(KINDS) + " | kernels | per layer us |",
           "|---|---|---|---|---|---|" + "---|" * len(KINDS) + "---|---|"]
    for r in traced:
        k = r["kernel_times"]
        step, busy = (k.get("timed_step_s") or 0) * 1e3, (k.get("busy_s") or 0) * 1e3  # null: none timed
        how = ", ".join(x for x in (("fused MMA" if r.get("fused_mma") else "fused GEMV") if fused_ran(r) else "",
                                    "CUDA graph" if r.get("graphs") else "",
                                    f"chunked {r['chunk_bytes']} B" if r.get("chunk_bytes") else "",
                                    "overlapped" if r.get("overlap") else "") if x) or "whole blocks"
        if r.get("weights") != "df11":
            how = "CUDA graph" if r.get("graphs") else "-"
        kinds = " | ".join(f"{k.get('kernel_s', {}).get(name, 0) * 1e3:.3f}" for name in KINDS)
        kernels = sum(v for name, v in k.get("records", {}).items() if name != "copy")
        idle = f"{step - busy:.3f} ({(step - busy) / step * 100:.0f}%)" if step > 0 else "-"
        layers = (r.get("config") or {}).get("layers")
        per_layer = (f"{step / layers * 1e3:.0f} (idle {(step - busy) / layers * 1e3:.0f})"
                     if layers and step > 0 else "-")
        out.append(f"| {r.get('weights')} | {how} | {r.get('batch')} | {step:.3f} | {busy:.3f} | {idle} | "
                   f"{kinds} | {kernels:.0f} | {per_layer} |")
    return "\n".join(out)


STEP_RE = re.compile(r"^== (.+?) \((\d\d:\d\d:\d\d), limit (\d+)s\)")
CASE_RE = re.compile(r"\] \S+ (\S+) b=(\d+): passed, median [^;]*; verify ([\d.]+) s, time ([\d.]+) s "
                     r"\((\d+) samples, ([\d.]+) s of them\)")


PROFILE_LOG = "== profile.log (ncu's output)"  # device_check.sh folds ncu's output in under this


def without_profile_log(log_text):
    """device_check.log less the ncu output folded into it (from PROFILE_LOG to the next step's
    header): the runs ncu profiled print progress lines and messages of their own, which are not
    the steps' (a run of one sample under ncu is no timing, an early launch ncu refused no run's)."""
    out, skipping = [], False
    for line in log_text.splitlines():
        if line.startswith(PROFILE_LOG):
            skipping = True
            continue
        if skipping and (STEP_RE.match(line) or line.startswith("== call ")):
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out)


def device_time(log_text, e2e_rows):
    """Where the device time went, from run_sweep's progress lines in device_check.log (each
    passed case's wall time verifying and timing, and how much of the timing were samples) and
    the e2e runs' setup_s: a markdown section body."""
    groups = {}  # (step, rows kind) -> [cases, verify s, time s, samples s]
    order = []
    step = None
    for line in log_text.splitlines():
        m = STEP_RE.match(line)
        if m:
            step = m.group(1)
            continue
        m = CASE_RE.search(line)
        if not m or step is None:
            continue
        kind = "batch 0 (decoders alone, copy)" if m.group(2) == "0" else "GEMM rows (batch >= 1)"
        key = (step, kind)
        if key not in groups:
            groups[key] = [0, 0.0, 0.0, 0.0]
            order.append(key)
        g = groups[key]
        g[0] += 1
        g[1] += float(m.group(3))
        g[2] += float(m.group(4))
        g[3] += float(m.group(6))
    out = []
    if order:
        out += ["| step | rows | passed | verify s | time s | of which samples s |", "|---|---|---|---|---|---|"]
        for key in order:
            n, v, t, smp = groups[key]
            out.append(f"| {key[0]} | {key[1]} | {n} | {v:.1f} | {t:.1f} | {smp:.1f} |")
    else:
        out.append("No passed case in device_check.log gives its verify/time split (a log from before "
                   "run_sweep printed it, or no sweep step ran).")
    setups = [r for r in e2e_rows if isinstance(r.get("setup_s"), (int, float))]
    if setups:
        total = sum(r["setup_s"] for r in setups)
        out += ["", f"End-to-end runs: {len(setups)} with a `setup_s`, {total:.1f} s of setup in all "
                f"({sum(1 for r in setups if r.get('weights_reused'))} reused their weights). The largest:"]
        for r in sorted(setups, key=lambda r: -r["setup_s"])[:5]:
            what = r.get("method") or r.get("weights", "?")
            flags = ", ".join(f for f, on in (("fused MMA" if r.get("fused_mma") else "fused GEMV", r.get("fused_gemv")),
                                              ("overlap", r.get("overlap")),
                                              ("check", r.get("check") not in (None, "not_run"))) if on)
            parts = ""
            if isinstance(r.get("setup_host_bits_s"), (int, float)):  # df11 generate's split of setup_s
                enc, up = r.get("setup_encode_s", 0), r.get("setup_upload_s")
                rest = r["setup_s"] - r["setup_host_bits_s"] - enc - (up or 0)
                parts = (f"; host bits {r['setup_host_bits_s']:.1f} s, encoding {enc:.1f} s, "
                         + (f"placing {up:.1f} s, the rest (loading, allocation) {rest:.1f} s"
                            if isinstance(up, (int, float)) else f"the rest (loading, uploads) {rest:.1f} s"))
            out.append(f"- {r['setup_s']:.1f} s: {what}, batch {r.get('batch')}" + (f" ({flags})" if flags else "")
                       + (", weights reused" if r.get("weights_reused") else "") + parts)
    return "\n".join(out)


def copy_run(src, dst, force):
    if dst.exists():
        if not force:
            sys.exit(f"device_report: {dst} exists (use --force to replace it)")
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    # Plots under Debian's interpreter, which has matplotlib (scripts/setup), whichever python
    # runs this script; a run directory without plots is still worth keeping, so only a warning.
    python = "/usr/bin/python3" if pathlib.Path("/usr/bin/python3").exists() else sys.executable
    rc = subprocess.run([python, str(HERE / "plot_sweep.py"), str(dst)], check=False).returncode
    if rc != 0:
        print(f"device_report: warning: plot_sweep.py {dst} exited {rc}; the run directory has no plots",
              file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("device_out", type=pathlib.Path, nargs="+")
    ap.add_argument("--reports", type=pathlib.Path, default=HERE.parent / "reports")
    ap.add_argument("--date", help="YYYY-MM-DD of the run (default: from the results' start_time)")
    ap.add_argument("--force", action="store_true", help="replace existing report directories")
    a = ap.parse_args()
    for d in a.device_out:
        if not d.is_dir():
            sys.exit(f"device_report: {d} is not a directory")

    def last_with(rel):  # the last folder that has rel, or None
        return next((d for d in reversed(a.device_out) if (d / rel).is_file()), None)

    runs = {sub: last_with(f"{sub}/results.jsonl") for sub in ("sweep", "decode")}
    sweep = read_jsonl(runs["sweep"] / "sweep" / "results.jsonl") if runs["sweep"] else []
    decode = read_jsonl(runs["decode"] / "decode" / "results.jsonl") if runs["decode"] else []
    e2e = [r for d in a.device_out for r in read_jsonl(d / "e2e.jsonl")]
    any_row = next((r for r in sweep + decode if isinstance(r.get("device"), dict)), None)
    if any_row is not None:
        device_name = any_row["device"].get("name") or "unknown"
        backend = any_row["device"].get("backend") or "cuda"
        start = any_row.get("meta", {}).get("start_time", "")
    else:
        line = next((r for r in e2e if r.get("device")), {})
        device_name, backend = line.get("device", "unknown"), backend_of(line) or "cuda"
        start = ""
    device_name = re.sub(r" \(sm_.*$", "", device_name)  # the e2e form carries SMs and memory
    date = a.date or (start[:10] if re.match(r"\d{4}-\d{2}-\d{2}", start) else None)
    if not date:
        sys.exit("device_report: no start_time in the results; give --date YYYY-MM-DD")
    slug = slug_of({"backend": backend, "name": device_name})
    a.reports.mkdir(parents=True, exist_ok=True)

    written = []
    for sub, experiment in (("sweep", "nemo_layer"), ("decode", "decode_throughput")):
        if runs[sub]:
            dst = a.reports / f"{date}_{slug}_{experiment}"
            copy_run(runs[sub] / sub, dst, a.force)
            written.append(dst)
    check_dir = a.reports / f"{date}_{slug}_device_check"
    if check_dir.exists():
        if not a.force:
            sys.exit(f"device_report: {check_dir} exists (use --force to replace it)")
        shutil.rmtree(check_dir)
    check_dir.mkdir(parents=True)
    if last_with("gpu_bench.json"):
        shutil.copy2(last_with("gpu_bench.json") / "gpu_bench.json", check_dir / "gpu_bench.json")
    several = len(a.device_out) > 1

    def joined(name, headers=True):  # the folders' copies of a text file in turn ("" if none)
        parts = []
        for k, d in enumerate(a.device_out, 1):
            if (d / name).is_file():
                text = (d / name).read_text(encoding="utf-8", errors="replace")
                head = f"== call {k} ({d.name})\n" if headers and several else ""
                parts.append(head + text.rstrip("\n") + "\n")
        return "".join(parts)

    for name, headers in (("summary.txt", True), ("device_check.log", True), ("e2e.jsonl", False),
                          ("profile.jsonl", False), ("profile.log", True)):
        text = joined(name, headers)
        if text:
            (check_dir / name).write_text(text, encoding="utf-8")
    # ncu's raw pages (text): from profile_raw.tar.gz (device_profile.py packs them), or the
    # profile/ folder of older device outputs; the .ncu-rep reports never leave the device.
    for k, d in enumerate(a.device_out, 1):
        pages = []
        if (d / "profile_raw.tar.gz").is_file():
            with tarfile.open(d / "profile_raw.tar.gz") as tar:
                pages = [(pathlib.PurePath(m.name).name, tar.extractfile(m).read()) for m in tar.getmembers()
                         if m.isfile() and m.name.endswith(".csv")]
        elif (d / "profile").is_dir():
            pages = [(f.name, f.read_bytes()) for f in sorted((d / "profile").glob("*.csv"))]
        for base, data in sorted(pages):
            (check_dir / "profile").mkdir(exist_ok=True)
            (check_dir / "profile" / (f"call{k}_{base}" if several else base)).write_bytes(data)
    profile = read_jsonl(check_dir / "profile.jsonl")

    t = Targets()
    decode_targets(t, decode, bench_copy_gbps(check_dir / "gpu_bench.json"))
    sweep_targets(t, sweep, batches=experiment_batches(runs["sweep"] / "sweep" if runs["sweep"] else None, backend),
                  decode_rows=decode)
    e2e_targets(t, e2e)
    log = without_profile_log(joined("device_check.log", False))
    if "early launch refused" in log:  # gap_decode falls back to serial launches, once per kernel
        t.info("early slice decodes (programmatic dependent launch)", "refused at run time",
               "rows and runs labelled early ran serially after the refusal: see device_check.log")
    summary = joined("summary.txt") or "(no summary.txt)"
    sha = (any_row or {}).get("meta", {}).get("git_sha", "unknown")
    readme = [f"# Device check: {device_name}, {date}", "",
              f"Measured by `scripts/device_check.sh` on {device_name} (git {sha}); this directory was "
              f"written by `scripts/device_report.py` from the check's output. Every number below "
              f"comes from the files next to it or from the run directories listed.", "",
              "## Steps", "", "```", summary.rstrip(), "```", "",
              "## Targets of the issues", "", t.markdown(), "",
              "## End-to-end runs (e2e.jsonl)", "", e2e_table(e2e), "",
              "## Where an e2e decode step's time went (--kernel-times, CUPTI)", "", kernel_times_table(e2e), "",
              "## Where the device time went", "",
              device_time(without_profile_log(joined("device_check.log")), e2e), "",
              "## Hardware counters (profile.jsonl, Nsight Compute)", "",
              ("```\n" + device_profile.table(profile) + "\n```") if profile else
              "No kernel was profiled (no profile step, no ncu, or no counters: see the steps above).", "",
              "## Run directories", ""]
    readme += [f"- `{p.relative_to(a.reports)}/` (report.md, figures)" for p in written] or ["- none"]
    (check_dir / "README.md").write_text("\n".join(readme) + "\n", encoding="utf-8")
    print(f"device_report: wrote {check_dir}" + "".join(f", {p}" for p in written))
    for r in t.rows:
        print(f"  issue {r[0]}: {r[1]}: {r[2]} -> {r[3]}")


if __name__ == "__main__":
    main()
