#!/usr/bin/python3
"""Hardware counters of a few kernels, read by Nsight Compute: the `profile` step of
scripts/device_check.sh. Timings say how fast a decoder is; these say why: whether it is held by
DRAM, by instruction issue, by occupancy, or by what its warps wait on.

Usage: scripts/device_profile.py --build BUILD --out DIR [--budget S] [--official-ptx PTX]
                                 [--decode-results RESULTS.jsonl] [METHOD ...]
       scripts/device_profile.py --parse RAW.csv [--method NAME]     (prints the table of a raw CSV)
       scripts/device_profile.py --fastest RESULTS.jsonl [--match REGEX] [--fastest-method M --batch B]
                                 (the fastest decoder there, or the variant of method M's fastest row)

METHOD: `decode:<variant>` (the decoder alone on one full synthetic Nemo layer, the unit of
experiments/decode_throughput.toml) or `df11-fused[:<variant>]@<batch>` (the fused decode + GEMV
on the same layer at that batch). Without METHODs: official-ptx (with --official-ptx), our own
build of the official design (lut8x4.gap5-block.smem-out.t512.b8), the two fastest passed
decoders of RESULTS.jsonl (the decode step's, when given), and df11-fused at batch 1 (two decode
passes on DF11's layout, and one pass on the count layout of multi12.gap5-cnt.*.t256.b16).

Each METHOD runs once, under ncu, as a one-method experiment of one sample (DIR/profile/<i>.toml,
CUPTI and CUDA graphs off so the launches are plain), and only its first decode launches are
profiled (the verification run's). ncu leaves the clocks alone (--clock-control none: the
device tool's METHOD.md, in the session's tool library, says to leave the card's settings as
found) and flushes the caches before each replay pass. Out:
  DIR/profile_raw.tar.gz             the raw pages <i>.csv (every collected metric) and the
                                     experiments <i>.toml; the ncu reports and run directories
                                     stay in --work (a device call returns at most 8 files, so
                                     the many per-method files must not crowd out the others)
  DIR/profile.jsonl                  a line per profiled kernel: method, kernel, the metrics below
  stdout                             a table: time, DRAM GB/s and % of peak, issue-slot use,
                                     achieved occupancy, thread instructions per weight, the three
                                     largest warp-stall reasons (warps stalled per issue).
Exit 0 also when there is no ncu or it cannot read the counters (a runtime without them, e.g.
gVisor): that is said, and nothing is measured. Exit 1 when a profiled run fails otherwise.
"""
import argparse
import csv
import io
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

# Weights of the profiled unit (experiments/decode_throughput.toml: Nemo layer 1, all rows), for
# instructions per weight; ../shared/reference/ANCHORS.md.
NEMO_LAYER_WEIGHTS = 272_629_760

KERNELS = r"regex:gap_decode|fused_gemv_kernel|fused_finish_kernel|^decode$"
SECTIONS = ["SpeedOfLight", "MemoryWorkloadAnalysis", "ComputeWorkloadAnalysis", "Occupancy", "LaunchStats",
            "SchedulerStats", "WarpStateStats", "InstructionStats"]
EXTRA_METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "smsp__thread_inst_executed.sum"]
SMEM_METRICS = ["l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum", "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",
                "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
                "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"]
# What ncu prints when the hardware counters cannot be read on this machine.
NO_COUNTERS = re.compile(r"ERR_NVGPUCTRPERM|LibraryNotLoaded|Failed to initialize the profiler|"
                         r"[Dd]evice not supported|profiling is not supported", re.M)

PREFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "n": 1e-9, "u": 1e-6, "m": 1e-3}


def to_base(value, unit):
    """A raw-page value in its base unit (bytes, seconds, ...); None for n/a or text."""
    v = (value or "").strip().replace(",", "")
    try:
        x = float(v)
    except ValueError:
        return None
    u = (unit or "").strip()
    # Long forms (the details page: usecond, Mbyte, Ginst) and the short ones ncu 2025 prints
    # with --print-units base (ns, byte/s): times become seconds, sizes bytes.
    m = re.fullmatch(r"([KMGTnum]?)(second|s|byte|B|inst|warp|cycle|sector|request)(/second|/s)?", u)
    if m:
        x *= PREFIX[m.group(1)]
    return x


def read_raw_csv(text):
    """Rows of an `ncu --import R --csv --page raw` dump: [{metric: (value, unit)}], one per
    kernel (a details-page dump is accepted too). Lines before the header (ncu's own ==PROF== /
    ==WARNING== lines) are skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    table = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    if len(table) < 2:
        return []
    header, rows = table[0], table[1:]
    if "Metric Name" in header and "Metric Value" in header:  # the details page: a row per metric
        return read_long_rows(header, rows)
    units = [""] * len(header)
    if rows and rows[0] and rows[0][0] == "":  # the units row
        units, rows = rows[0] + [""] * (len(header) - len(rows[0])), rows[1:]
    out = []
    for r in rows:
        if not r or not any(r):
            continue
        out.append({h: (r[i] if i < len(r) else "", units[i]) for i, h in enumerate(header)})
    return out


def read_long_rows(header, rows):
    """The details page (`--page details --csv`, a row per kernel and metric) in the raw page's
    form: one dict per kernel (by ID), metric -> (value, unit), plus the launch columns."""
    col = {h: i for i, h in enumerate(header)}
    kernels = {}
    for r in rows:
        if len(r) < len(header) or not r[col["Metric Name"]]:
            continue
        k = kernels.setdefault(r[col["ID"]], {h: (r[i], "") for i, h in enumerate(header)
                                              if h not in ("Section Name", "Metric Name", "Metric Unit", "Metric Value")})
        k[r[col["Metric Name"]]] = (r[col["Metric Value"]], r[col["Metric Unit"]] if "Metric Unit" in col else "")
    return list(kernels.values())


def first(row, *names):
    for n in names:
        if n in row:
            v = to_base(*row[n])
            if v is not None:
                return v
    return None


def per_weight(row, weights, what):
    vals = [to_base(*row[n]) for n in SMEM_METRICS if what in n and n in row]
    vals = [v for v in vals if v is not None]
    return sum(vals) / weights if vals else None


def summarize(row, weights=NEMO_LAYER_WEIGHTS):
    """The metrics the table shows, from one raw row; None where the row lacks them."""
    t = first(row, "gpu__time_duration.sum")
    rd = first(row, "dram__bytes_read.sum", "dram__bytes_op_read.sum")
    wr = first(row, "dram__bytes_write.sum", "dram__bytes_op_write.sum")
    inst = first(row, "smsp__thread_inst_executed.sum")
    stalls = {}
    for name, (value, unit) in row.items():
        m = re.fullmatch(r"smsp__average_warps?_issue_stalled_([a-z_]+?)_per_issue_active\.ratio", name)
        v = to_base(value, unit) if m else None
        if v is not None:
            stalls[m.group(1)] = v
    top = sorted(stalls.items(), key=lambda kv: -kv[1])[:3]
    kernel = row.get("Kernel Name", ("", ""))[0]
    return {
        "kernel": re.sub(r"^void ", "", kernel),
        "grid": row.get("Grid Size", ("", ""))[0],
        "block": row.get("Block Size", ("", ""))[0],
        "time_s": t,
        "dram_read_bytes": rd,
        "dram_write_bytes": wr,
        "dram_gbps": (rd + wr) / t / 1e9 if None not in (rd, wr, t) and t > 0 else None,
        "dram_pct_of_peak": first(row, "dram__throughput.avg.pct_of_peak_sustained_elapsed",
                                  "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"),
        "sm_pct_of_peak": first(row, "sm__throughput.avg.pct_of_peak_sustained_elapsed"),
        "issue_active_pct": first(row, "smsp__issue_active.avg.pct_of_peak_sustained_active",
                                  "sm__inst_issued.avg.pct_of_peak_sustained_active"),
        "achieved_occupancy_pct": first(row, "sm__warps_active.avg.pct_of_peak_sustained_active"),
        "registers": first(row, "launch__registers_per_thread"),
        "dynamic_smem_bytes": first(row, "launch__shared_mem_per_block_dynamic"),
        "l2_bytes": first(row, "lts__t_bytes.sum"),
        "thread_inst_per_weight": inst / weights if inst is not None else None,
        # Shared-memory wavefronts (each a cycle of the shared-memory pipe) and the bank conflicts
        # among them, loads and stores together, per weight.
        "smem_wavefronts_per_weight": per_weight(row, weights, "wavefronts"),
        "smem_conflicts_per_weight": per_weight(row, weights, "bank_conflicts"),
        "top_stalls": [[k, v] for k, v in top],
    }


def fmt(x, spec):
    width = int(re.match(r"\d*", spec).group(0) or 0)
    return format(x, spec) if x is not None else "-".rjust(width)


def short_name(kernel):
    """gap_decode_persistent_kernel from its demangled name (namespaces, templates, parameters)."""
    k = kernel.replace("(anonymous namespace)::", "")
    return re.sub(r"<.*|\(.*", "", k).split("::")[-1]


def mb(x):
    return x / 1e6 if x is not None else None


def table(lines):
    # DRAM read and written MB apart: a kernel that reads more than its inputs' bytes reads some
    # twice (on the H200, 2026-11-28, the decoders with L2 hints read 80-290 MB over the 370 MB
    # of a Nemo layer's encoding; the published kernel and ours without hints read it once).
    out = [f"{'method':52} {'kernel':30} {'us':>8} {'DRAM GB/s':>9} {'rd MB':>7} {'wr MB':>7} {'DRAM %':>6} "
           f"{'issue %':>7} {'occ %':>5} {'inst/w':>6} {'smem/w':>6} {'confl/w':>7}  top stalls (warps per issue)"]
    for s in lines:
        short = short_name(s["kernel"])
        stalls = ", ".join(f"{k} {v:.1f}" for k, v in s["top_stalls"])
        out.append(f"{s['method'][:52]:52} {short[:30]:30} {fmt(s['time_s'] and s['time_s'] * 1e6, '8.1f')} "
                   f"{fmt(s['dram_gbps'], '9.1f')} {fmt(mb(s.get('dram_read_bytes')), '7.1f')} "
                   f"{fmt(mb(s.get('dram_write_bytes')), '7.1f')} {fmt(s['dram_pct_of_peak'], '6.1f')} "
                   f"{fmt(s['issue_active_pct'], '7.1f')} {fmt(s['achieved_occupancy_pct'], '5.1f')} "
                   f"{fmt(s['thread_inst_per_weight'], '6.1f')} {fmt(s.get('smem_wavefronts_per_weight'), '6.2f')} "
                   f"{fmt(s.get('smem_conflicts_per_weight'), '7.2f')}  {stalls}")
    return "\n".join(out)


def parse_method(spec):
    """'decode:V' -> ('decode:V', 0, 1 launch); 'df11-fused[:V]@B' or 'df11-fused-mma@B' ->
    (method, B, 2 launches)."""
    m = re.fullmatch(r"(decode:[\w.*?\[\]-]+)", spec)
    if m:
        return m.group(1), 0, 1
    m = re.fullmatch(r"(df11-fused(?::[\w.*?\[\]-]+)?|df11-fused-mma)@(\d+)", spec)
    if m:
        return m.group(1), int(m.group(2)), 2
    raise SystemExit(f"device_profile: method '{spec}': expected decode:<variant>, df11-fused[:<variant>]@<batch> "
                     f"or df11-fused-mma@<batch>")


def experiment(method, batch):
    return f"""# Written by scripts/device_profile.py: one method, one sample, for Nsight Compute.
schema_version = 1
name = "profile"
description = "{method} at batch {batch} on one synthetic Nemo layer, once, for ncu"
seed = 0
batches = [{max(batch, 1)}]
row_fraction = 1.0
methods = ["{method}"]

[measurement]
warmup = 0
min_samples = 1
max_samples = 1
min_time_s = 0.0
max_time_s = 1.0
noise_target = 1.0
l2_policy = "flush"

[[units]]
kind = "nemo_layer"
layer = 1
"""


def fastest_decoders(results, n=2, match=None, method="decode", batch=None):
    """The n fastest passed decoder variants of a decode run's results.jsonl, fastest first;
    official-ptx left out; with `match`, only variants the regular expression matches whole.
    method / batch: the rows of another method (e.g. df11-overlap) and only at that batch."""
    rows = []
    for line in pathlib.Path(results).read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        c, s = r.get("case") or {}, r.get("summary") or {}
        if (c.get("method") == method and (batch is None or c.get("batch") == batch) and
                r.get("disposition") == "passed" and s.get("median_s")):
            rows.append((s["median_s"], c.get("variant") or ""))
    return [v for _, v in sorted(rows) if v and v != "official-ptx" and (match is None or re.fullmatch(match, v))][:n]


ONE_PASS_FUSED = "multi12.gap5-cnt.exp-smem-v16.t256.b16.persist"  # its layout: the fused kernels' one-pass decode


def default_methods(official_ptx, decode_results):
    methods = ["decode:official-ptx"] if official_ptx else []
    methods.append("decode:lut8x4.gap5-block.smem-out.t512.b8")
    fast = fastest_decoders(decode_results) if decode_results and pathlib.Path(decode_results).is_file() else []
    for v in fast or ["multi12.gap5-warp.exp-smem-v16.t512.b8.persist", "multi12.gap5-warp.keep-v16.t512.b8"]:
        if f"decode:{v}" not in methods:
            methods.append(f"decode:{v}")
    methods.append("df11-fused@1")
    methods.append(f"df11-fused:{ONE_PASS_FUSED}@1")  # the one-pass fused decode, beside the two-pass one
    return methods


def find_ncu():
    found = shutil.which("ncu")
    if found:
        return found
    for pattern in ("/usr/local/cuda/bin/ncu", "/opt/nvidia/nsight-compute/*/ncu", "/usr/local/cuda*/bin/ncu"):
        hits = sorted(pathlib.Path("/").glob(pattern.lstrip("/")))
        if hits:
            return str(hits[-1])
    return None


def run(cmd, limit, env=None):
    """(exit status, stdout + stderr); 124 when cut at `limit` s. ncu runs the program as its child:
    the whole process group goes on a timeout, so no profiled run outlives its step."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=max(limit, 1))
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return 124, (out or "") + f"\n(cut at {limit:.0f} s)"


def profile(args):
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pdir = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="df11_profile_"))
    pdir.mkdir(parents=True, exist_ok=True)

    def pack():  # after every method: a step cut short keeps what it measured
        with tarfile.open(out / "profile_raw.tar.gz", "w:gz") as tar:
            for f in sorted(pdir.glob("*.csv")) + sorted(pdir.glob("*.toml")):
                tar.add(f, arcname=f.name)
    log = open(out / "profile.log", "a", encoding="utf-8")
    txt = open(out / "profile.txt", "a", encoding="utf-8")

    def say(text):  # stdout (the step's log) and profile.txt (device_check.sh adds it to the summary)
        print(text)
        txt.write(text + "\n")
        txt.flush()

    ncu = args.ncu or os.environ.get("DF11_NCU") or find_ncu()
    if not ncu or not os.access(ncu, os.X_OK):
        say(f"profile: no ncu on this machine ({ncu or 'not on PATH, /usr/local/cuda/bin, /opt/nvidia'}): nothing measured")
        return 0
    methods = args.methods or default_methods(args.official_ptx, args.decode_results)
    env = dict(os.environ, DF11_CUPTI="0", DF11_CUDA_GRAPHS="0")
    start = time.monotonic()
    lines, failures = [], 0
    for i, spec in enumerate(methods):
        left = args.budget - (time.monotonic() - start)
        if left < 10:
            say(f"profile: budget spent; not profiled: {', '.join(methods[i:])}")
            break
        method, batch, launches = parse_method(spec)
        toml = pdir / f"{i}.toml"
        toml.write_text(experiment(method, batch))
        base = [ncu, "--clock-control", "none", "--kernel-name-base", "demangled", "-k", KERNELS,
                "--launch-count", str(launches), "-f", "-o", str(pdir / str(i))]
        sections = [a for s in SECTIONS for a in ("--section", s)]
        # The sections with the extra metrics by name; should this ncu not know a metric, fewer
        # metrics, then the sections alone, then its basic set.
        attempts = [sections + ["--metrics", ",".join(EXTRA_METRICS + SMEM_METRICS)],
                    sections + ["--metrics", ",".join(EXTRA_METRICS)], sections, ["--set", "basic"]]
        rc, text = 1, ""
        for k, what in enumerate(attempts):
            # A fresh run directory each time: run_sweep never writes over an earlier results.jsonl.
            sweep = [str(pathlib.Path(args.build) / "bin" / "run_sweep"), str(toml), "--backend", "cuda",
                     "--out", str(pdir / f"{i}_run{k}")]
            if args.official_ptx:
                sweep += ["--official-ptx", args.official_ptx]
            left = args.budget - (time.monotonic() - start)
            if left < 5:
                break
            rc, text = run(base + what + sweep, min(left, args.per_method), env)
            log.write(f"== {spec}: {' '.join(base + what + sweep)}\n{text}\nrc={rc}\n")
            # Done, no counters, out of time, or the program itself refused (no retry helps).
            if rc == 0 or NO_COUNTERS.search(text) or rc == 124 or "run_sweep: error" in text:
                break
        if NO_COUNTERS.search(text):
            say(f"profile: ncu cannot read the hardware counters here: "
                  f"{NO_COUNTERS.search(text).group(0)}: nothing measured (see profile.log, in device_check.log)")
            return 0
        if rc != 0:
            say(f"profile: {spec}: ncu or the run failed (rc {rc}; profile.log, in device_check.log, has its output)")
            failures += 1
            continue
        rc, raw = run([ncu, "--import", str(pdir / f"{i}.ncu-rep"), "--csv", "--page", "raw",
                       "--print-units", "base"], 60)
        (pdir / f"{i}.csv").write_text(raw)
        pack()
        rows = read_raw_csv(raw)
        if rc != 0 or not rows:
            say(f"profile: {spec}: no kernel in the report (rc {rc}); see {i}.csv in profile_raw.tar.gz")
            failures += 1
            continue
        with open(out / "profile.jsonl", "a", encoding="utf-8") as f:  # as it goes: a cut-off step keeps these
            for r in rows:
                s = dict(summarize(r), method=spec)
                f.write(json.dumps(s) + "\n")
                lines.append(s)
    if lines:
        say(table(lines))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("methods", nargs="*")
    ap.add_argument("--build", default="build/device-carry")
    ap.add_argument("--out", default="device_out")
    ap.add_argument("--work", help="folder for the ncu reports and runs (default: a new temporary folder)")
    ap.add_argument("--budget", type=float, default=90.0, help="seconds for all methods")
    ap.add_argument("--per-method", type=float, default=60.0, help="seconds for one method's ncu run")
    ap.add_argument("--official-ptx")
    ap.add_argument("--decode-results", help="the decode step's results.jsonl: its fastest decoders are profiled")
    ap.add_argument("--ncu", help="the ncu binary (default: $DF11_NCU, else PATH, /usr/local/cuda/bin, "
                    "/opt/nvidia/nsight-compute)")
    ap.add_argument("--parse", help="print the table of a raw CSV (ncu --import R --csv --page raw) and exit")
    ap.add_argument("--fastest", metavar="RESULTS", help="print the fastest passed decoder variant of a decode "
                    "run's results.jsonl (matching --match; nothing when none) and exit")
    ap.add_argument("--match", help="with --fastest: a regular expression the variant must match whole")
    ap.add_argument("--fastest-method", default="decode",
                    help="with --fastest: the rows of this method (default decode; e.g. df11-overlap)")
    ap.add_argument("--batch", type=int, help="with --fastest: only rows at this batch")
    ap.add_argument("--method", default="-", help="with --parse: the method name to show")
    args = ap.parse_args()
    if args.fastest:
        found = (fastest_decoders(args.fastest, 1, args.match, args.fastest_method, args.batch)
                 if pathlib.Path(args.fastest).is_file() else [])
        print(found[0] if found else "")
        return 0
    if args.parse:
        rows = read_raw_csv(pathlib.Path(args.parse).read_text(errors="replace"))
        if not rows:
            sys.exit(f"device_profile: {args.parse}: no kernel rows")
        lines = [dict(summarize(r), method=args.method) for r in rows]
        print(table(lines))
        print("\n".join(json.dumps(s) for s in lines))
        return 0
    return profile(args)


if __name__ == "__main__":
    sys.exit(main())
