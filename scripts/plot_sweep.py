#!/usr/bin/python3
"""Figures and report.md of one run directory: reads RUN_DIR/results.jsonl (docs/RESULTS.md,
schema 1) and writes into RUN_DIR, per (experiment, unit):
  latency_<unit>.png    median latency vs batch, log-log, q1-q3 bands, one line per method/variant
  overhead_<unit>.png   latency / bf16 latency at the same batch vs batch, line at 1.0
  decode_<unit>.png     decoder throughput (GB/s, `decode` rows) against the `copy` bound
  breakdown_<unit>.png  decode vs GEMM time per batch (stacked), df11 methods, when measured
and report.md with the figures and tables of the numbers (latency and ratio to bf16, time over bf16
and its spread across batches, decode vs GEMM time, decoder throughput). Rows that did not pass are listed in
the report, never plotted; unreadable lines (a run killed mid-write) are listed and skipped.
Runs under Debian's /usr/bin/python3 (python3-matplotlib, python3-numpy; see scripts/setup).

Usage: scripts/plot_sweep.py RUN_DIR"""
import argparse
import json
import math
import pathlib
import re
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator  # noqa: E402

SCHEMA_VERSION = 1
# Methods drawn on the latency figures, in legend order; unknown methods follow them.
LATENCY_ORDER = ["bf16", "cpu-offload", "cpu-offload-sync", "df11", "df11-rev", "df11-overlap", "df11-chunked",
                 "df11-pipelined"]
DF11_METHODS = ("df11", "df11-rev", "df11-overlap", "df11-chunked", "df11-pipelined")
NOT_LATENCY = ("decode", "copy")  # batch-0 rows with figures of their own
DPI = 100


# ---- reading ---------------------------------------------------------------------------------

def positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_row(r):
    """The problem with a row, or None. Only what the figures rely on is checked."""
    if not isinstance(r, dict):
        return "not a JSON object"
    if r.get("schema_version") != SCHEMA_VERSION:
        return f"schema_version {r.get('schema_version')!r} (this script reads {SCHEMA_VERSION})"
    c = r.get("case")
    if not isinstance(c, dict):
        return "no case object"
    for k in ("experiment", "unit", "method"):
        if not isinstance(c.get(k), str):
            return f"case.{k} missing or not a string"
    if not isinstance(c.get("batch"), int) or c["batch"] < 0:
        return "case.batch missing or not an integer >= 0"
    if not isinstance(r.get("disposition"), str):
        return "disposition missing"
    if r["disposition"] == "passed":
        s = r.get("summary")
        if not isinstance(s, dict) or not all(positive(s.get(k)) for k in ("median_s", "q1_s", "q3_s")):
            return "passed row without positive summary.median_s/q1_s/q3_s"
    return None


def case_key(r):
    c = r["case"]
    return (c.get("experiment"), c.get("unit"), c.get("method"), c.get("variant"), c.get("chunk_bytes"), c.get("batch"))


def load(run_dir):
    """(rows, skipped): rows are the readable dicts in file order; skipped lists (line, problem).
    A second row of a case (the gate's key) is skipped, naming the first: a table cell holds one."""
    rows, skipped, seen = [], [], {}
    path = run_dir / "results.jsonl"
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                r = json.loads(text.strip())
            except json.JSONDecodeError as e:
                skipped.append((n, f"malformed JSON ({e.msg} at column {e.colno}); a partial line?"))
                continue
            problem = check_row(r)
            if not problem and case_key(r) in seen:
                problem = f"a second row of the case of line {seen[case_key(r)]} (experiment, unit, method, variant, " \
                          "chunk_bytes, batch); left out"
            if problem:
                skipped.append((n, problem))
                continue
            seen[case_key(r)] = n
            r["_line"] = n
            rows.append(r)
    return rows, skipped


# ---- naming and formatting ---------------------------------------------------------------------

CHUNK_MARK = " @"  # a sliced method's slice size in its series' variant: "<variant> @31.5 MB"


def series_of(r):
    """(method, variant); a sliced method's variant carries its slice size (case.chunk_bytes),
    so that runs at several sizes are several series."""
    c = r["case"]
    variant = c.get("variant") or ""
    if c.get("chunk_bytes") is not None:  # exact (1e6 B a MB): sizes that round alike stay apart
        variant += f"{CHUNK_MARK}{c['chunk_bytes'] / 1e6:.6f}".rstrip("0").rstrip(".") + " MB"
    return (c["method"], variant)


def series_label(s):
    method, variant = s
    return f"{method} {variant}" if variant else method


def series_sort_key(s):
    method, variant = s
    rank = LATENCY_ORDER.index(method) if method in LATENCY_ORDER else len(LATENCY_ORDER)
    return (rank, method, variant)


def slug(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unit"


def time_unit(seconds):
    """(scale, name) so that the smallest value reads as a number >= 1."""
    lo = min(seconds) if seconds else 1.0
    if lo >= 1.0:
        return 1.0, "s"
    if lo >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def fmt_s(s):
    if s is None:
        return "-"
    if s >= 1.0:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} µs"


def md_escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def palette(n):
    """The colours of n variants and methods: tab10's, or past 9 tab20's (repeated past 18), less
    their greys (tab10's 8th, tab20's 15th and 16th): grey is the offload baselines' (Style.FIXED),
    and the H200 run of 2026-11-28 drew df11-fused in tab20's grey beside them."""
    return [c for c in plt.get_cmap("tab10" if n <= 9 else "tab20").colors if not (c[0] == c[1] == c[2])]


class Style:
    """One colour per decoder variant (shared by df11, df11-overlap, df11-chunked and
    df11-pipelined, which differ by line style), fixed greys for the baselines, so a variant
    looks the same in every figure."""

    FIXED = {"bf16": ("black", "-"), "cpu-offload": ("0.45", "-"), "cpu-offload-sync": ("0.45", ":")}

    def __init__(self, rows):
        variants = sorted({r["case"].get("variant") or "" for r in rows} - {""})
        others = sorted({r["case"]["method"] for r in rows} - set(LATENCY_ORDER) - set(NOT_LATENCY))
        colors = palette(len(variants) + len(others))
        self.variant_color = {v: colors[i % len(colors)] for i, v in enumerate(variants)}
        self.method_color = {m: colors[(len(variants) + i) % len(colors)] for i, m in enumerate(others)}

    def color(self, s):
        method, variant = s
        if method in self.FIXED:
            return self.FIXED[method][0]
        decoder = variant.split(CHUNK_MARK)[0]  # every slice size in its decoder's colour
        if decoder in self.variant_color:
            return self.variant_color[decoder]
        return self.method_color.get(method, "tab:gray")

    def linestyle(self, s):
        method, _ = s
        if method in self.FIXED:
            return self.FIXED[method][1]
        return {"df11-rev": (0, (5, 1, 1, 1)), "df11-overlap": "-.", "df11-chunked": "--",
                "df11-pipelined": ":"}.get(method, "-")


# ---- the run ---------------------------------------------------------------------------------

class Run:
    def __init__(self, run_dir, rows, skipped):
        self.dir = run_dir
        self.rows = rows
        self.skipped = skipped
        self.passed = [r for r in rows if r["disposition"] == "passed"]
        self.not_passed = [r for r in rows if r["disposition"] != "passed"]
        first = rows[0] if rows else {}
        self.meta = first.get("meta") or {}
        self.device = first.get("device") or {}
        self.devices = sorted({self.device_name(r.get("device") or {}) for r in rows})
        sha = str(self.meta.get("git_sha") or "unknown")[:7]
        self.sha = sha + ("-dirty" if self.meta.get("git_dirty") else "")
        # (experiment, unit) in order of first appearance, as the sweep ran them
        self.units = list(dict.fromkeys((r["case"]["experiment"], r["case"]["unit"]) for r in rows))
        self.style = Style(rows)

    @staticmethod
    def device_name(d):
        name = d.get("name") or "unknown device"
        return name if d.get("backend") in (None, "cuda") else f"{d.get('backend')}: {name}"

    def title(self, what, experiment):
        return f"{what}\n{self.device_name(self.device)} | {experiment} | {self.sha}"

    def unit_rows(self, key, passed_only=True):
        src = self.passed if passed_only else self.rows
        return [r for r in src if (r["case"]["experiment"], r["case"]["unit"]) == key]

    def figure_name(self, kind, key):
        experiment, unit = key
        # The experiment enters the name only when a run mixes experiments.
        multi = len({e for e, _ in self.units}) > 1
        return f"{kind}_{slug(experiment) + '_' if multi else ''}{slug(unit)}.png"


def latency_table(rows):
    """{series: {batch: row}} of the latency methods (batch > 0)."""
    table = {}
    for r in rows:
        if r["case"]["method"] in NOT_LATENCY or r["case"]["batch"] <= 0:
            continue
        table.setdefault(series_of(r), {})[r["case"]["batch"]] = r
    return dict(sorted(table.items(), key=lambda kv: series_sort_key(kv[0])))


def set_batch_axis(ax, batches):
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch (tokens)")


def legend(ax, n):
    ax.legend(fontsize="small" if n <= 8 else "x-small", loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False)


def new_figure(bottom=0.11, right=0.60):
    # Fixed margins rather than constrained layout, which took half of the drawing time; the
    # right 40% holds the legend of long variant names.
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=DPI)
    fig.subplots_adjust(left=0.08, right=right, top=0.88, bottom=bottom)
    return fig, ax


def save(fig, path):
    fig.savefig(path)
    plt.close(fig)
    return path.name


def plot_latency(run, key, table):
    fig, ax = new_figure()
    medians = [r["summary"]["median_s"] for s in table.values() for r in s.values()]
    scale, unit = time_unit(medians)
    batches = sorted({b for s in table.values() for b in s})
    for s, by_batch in table.items():
        b = sorted(by_batch)
        med = np.array([by_batch[x]["summary"]["median_s"] for x in b]) * scale
        q1 = np.array([by_batch[x]["summary"]["q1_s"] for x in b]) * scale
        q3 = np.array([by_batch[x]["summary"]["q3_s"] for x in b]) * scale
        color = run.style.color(s)
        ax.plot(b, med, marker="o", markersize=3.5, color=color, linestyle=run.style.linestyle(s),
                label=series_label(s))
        ax.fill_between(b, q1, q3, color=color, alpha=0.18, linewidth=0)
    set_batch_axis(ax, batches)
    ax.set_yscale("log")
    ax.set_ylabel(f"median latency per forward pass ({unit}), band q1-q3")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(run.title(f"Latency vs batch: {key[1]}", key[0]), fontsize="medium")
    legend(ax, len(table))
    return save(fig, run.dir / run.figure_name("latency", key))


def ratios(table):
    """{series: {batch: median / bf16 median}} for every non-bf16 series with a bf16 partner."""
    bf16 = table.get(("bf16", ""), {})
    out = {}
    for s, by_batch in table.items():
        if s == ("bf16", ""):
            continue
        r = {b: row["summary"]["median_s"] / bf16[b]["summary"]["median_s"] for b, row in by_batch.items() if b in bf16}
        if r:
            out[s] = r
    return out


def extra_times(table):
    """{series: {batch: median - bf16 median}} for every non-bf16 series with a bf16 partner: the
    time a method adds to a forward pass of the unit, which the DFloat11 model card says is
    constant per pass (so its ratio fades as the GEMMs grow)."""
    bf16 = table.get(("bf16", ""), {})
    out = {}
    for s, by_batch in table.items():
        if s == ("bf16", ""):
            continue
        d = {b: row["summary"]["median_s"] - bf16[b]["summary"]["median_s"] for b, row in by_batch.items() if b in bf16}
        if d:
            out[s] = d
    return out


def fmt_signed_s(s):
    return "-" + fmt_s(-s) if s < 0 else fmt_s(s)


def spread(values):
    """(max - min) / median of a series' extra times, as a percentage; None under two batches or
    when the median is not positive."""
    if len(values) < 2:
        return None
    v = sorted(values)
    med = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    return (v[-1] - v[0]) / med * 100 if med > 0 else None


def plot_overhead(run, key, ratio):
    fig, ax = new_figure()
    batches = sorted({b for s in ratio.values() for b in s})
    for s, by_batch in ratio.items():
        b = sorted(by_batch)
        ax.plot(b, [by_batch[x] for x in b], marker="o", markersize=3.5, color=run.style.color(s),
                linestyle=run.style.linestyle(s), label=series_label(s))
    ax.axhline(1.0, color="black", linewidth=1.2, label="bf16 (= 1)")
    set_batch_axis(ax, batches)
    top = max(v for s in ratio.values() for v in s.values())
    # Offloading can be 20x slower than resident weights; a log axis keeps df11's 1.1x visible.
    if top > 8:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}x"))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.2g}x"))
    ax.set_ylabel("median latency / bf16 median latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(run.title(f"Overhead vs bf16: {key[1]}", key[0]), fontsize="medium")
    legend(ax, len(ratio) + 1)
    return save(fig, run.dir / run.figure_name("overhead", key))


def gbps(r):
    s = r["summary"]
    if positive(s.get("bytes")):
        b = s["bytes"]
        return b / s["median_s"] / 1e9, b / s["q3_s"] / 1e9, b / s["q1_s"] / 1e9
    if positive(s.get("gbps")):
        return s["gbps"], s["gbps"], s["gbps"]
    return None


def decode_rows(rows):
    decodes = sorted((r for r in rows if r["case"]["method"] == "decode" and gbps(r)),
                     key=lambda r: r["case"].get("variant") or "")
    copies = [r for r in rows if r["case"]["method"] == "copy" and gbps(r)]
    return decodes, (copies[0] if copies else None)


def plot_decode(run, key, decodes, copy):
    fig, ax = new_figure(bottom=0.16, right=0.97)
    labels = [r["case"].get("variant") or "(default)" for r in decodes]
    values = [gbps(r) for r in decodes]
    x = np.arange(len(decodes))
    med = np.array([v[0] for v in values])
    # Whiskers from the GB/s at the q3 and q1 times. A row whose quartiles do not bracket its
    # median (q3 < median or q1 > median: a writer's error, or rounding) would give a negative
    # whisker, which matplotlib refuses: clipped to none, and said.
    err = np.array([[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]])
    for r, lo, hi in zip(decodes, *err):
        if lo < 0 or hi < 0:
            s = r["summary"]
            print(f"plot_sweep: {run.dir / 'results.jsonl'}:{r['_line']}: warning: decode "
                  f"{r['case'].get('variant') or '(default)'} of {key[1]}: q1 {s['q1_s']:g} s, "
                  f"median {s['median_s']:g} s, q3 {s['q3_s']:g} s do not bracket the median; its error bar "
                  f"is clipped to the median", file=sys.stderr)
    err = np.clip(err, 0, None)
    colors = [run.style.color(("decode", r["case"].get("variant") or "")) for r in decodes]
    ax.bar(x, med, yerr=err, capsize=4, color=colors, width=0.6, label="decode (median, q1-q3)")
    for xi, m in zip(x, med):
        ax.annotate(f"{m:.0f}", (xi, m), textcoords="offset points", xytext=(0, 3), ha="center", fontsize="small")
    if copy is not None:
        c = gbps(copy)[0]
        ax.axhline(c, color="black", linestyle="--", linewidth=1.2, label=f"copy bound {c:.0f} GB/s")
    peak = run.device.get("memory_bandwidth_gbps")
    if positive(peak):
        ax.axhline(peak, color="0.5", linestyle=":", linewidth=1.0, label=f"device memory {peak:.0f} GB/s")
    ax.set_xticks(x, [wrap_name(t) for t in labels], fontsize="small" if len(labels) <= 6 else "x-small")
    ax.set_ylabel("GB/s (encoded bytes read + BF16 bytes written)")
    ax.set_ylim(0, max([*med, peak if positive(peak) else 0, gbps(copy)[0] if copy else 0]) * 1.15)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(run.title(f"Decode throughput: {key[1]}", key[0]), fontsize="medium")
    ax.legend(fontsize="small", loc="upper right", frameon=True)
    return save(fig, run.dir / run.figure_name("decode", key))


def wrap_name(name, width=18):
    """Breaks a procedural variant name at its dots, so long names fit under a bar."""
    lines, line = [], ""
    for part in name.split("."):
        piece = part if not line else "." + part
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = "." + part
        else:
            line += piece
    return "\n".join(lines + [line])


def breakdown_rows(table):
    """{series: {batch: row}} of the df11 methods whose rows carry decode_s and gemm_s."""
    out = {}
    for s, by_batch in table.items():
        if s[0] not in DF11_METHODS:
            continue
        keep = {b: r for b, r in by_batch.items()
                if positive(r["summary"].get("decode_s")) and positive(r["summary"].get("gemm_s"))}
        if keep:
            out[s] = keep
    return out


def plot_breakdown(run, key, table):
    fig, ax = new_figure()
    batches = sorted({b for s in table.values() for b in s})
    series = list(table)
    medians = [r["summary"]["median_s"] for s in table.values() for r in s.values()]
    scale, unit = time_unit(medians)
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs, dec, gem, med = [], [], [], []
        for j, b in enumerate(batches):
            r = table[s].get(b)
            if r is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            dec.append(r["summary"]["decode_s"] * scale)
            gem.append(r["summary"]["gemm_s"] * scale)
            med.append(r["summary"]["median_s"] * scale)
        color = run.style.color(s)
        hatch = {"df11-rev": "\\\\", "df11-overlap": "xx", "df11-chunked": "//", "df11-pipelined": ".."}.get(s[0])
        ax.bar(xs, dec, width, color=color, hatch=hatch, edgecolor="white", linewidth=0.3, label=series_label(s))
        ax.bar(xs, gem, width, bottom=dec, color=color, alpha=0.4, hatch=hatch, edgecolor="white", linewidth=0.3)
        # The whole method's median: above the stack means time outside both kernels; below
        # means decode and GEMM overlapped (df11-overlap, df11-chunked, df11-pipelined).
        ax.scatter(xs, med, marker="_", s=120, color="black", zorder=3)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("batch (tokens)")
    # Linear on purpose: stacked heights only add up on a linear axis.
    ax.set_ylabel(f"time per forward pass ({unit})")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(run.title(f"Decode vs GEMM time: {key[1]}", key[0]), fontsize="medium")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color="0.3"), Patch(color="0.3", alpha=0.4), Line2D([], [], marker="_", markersize=12,
                                                                         color="black", linestyle="none")]
    labels += ["(solid: decode kernel)", "(light: GEMM kernels)", "(tick: median of the method)"]
    ax.legend(handles, labels, fontsize="small" if len(labels) <= 8 else "x-small", loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save(fig, run.dir / run.figure_name("breakdown", key))


# ---- report.md ------------------------------------------------------------------------------

def md_table(header, rows, align=None):
    """align: one letter per column, l or r (default: first column left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(run, sections, decode_sections, elapsed_note):
    m, d = run.meta, run.device
    out = [f"# Report: {run.dir.name}", ""]
    out.append(f"- device: {run.device_name(d)}"
               + (f", SM {d.get('sm_version')} x {d.get('sm_count')}" if d.get("sm_version") else "")
               + (f", memory {d.get('memory_bandwidth_gbps'):.0f} GB/s" if positive(d.get("memory_bandwidth_gbps")) else ""))
    if d.get("slice_l2"):  # cuda: how the chunked methods' slices were cached
        out.append(f"- slices (df11-chunked, df11-pipelined): {d['slice_l2']}")
    if d.get("slice_start"):  # cuda: how df11-chunked's later slice decodes started
        out.append(f"- slice decodes (df11-chunked): {d['slice_start']}")
    if d.get("decode_verify"):  # cuda: where decode/copy outputs were compared with the weights
        out.append(f"- decode verification: {d['decode_verify']}")
    if len(run.devices) > 1:
        out.append(f"- **warning: rows from {len(run.devices)} devices: {', '.join(run.devices)}**")
    out.append(f"- git: `{m.get('git_sha', 'unknown')}`" + (" (dirty tree)" if m.get("git_dirty") else ""))
    if m.get("argv"):
        out.append(f"- command: `{' '.join(map(str, m['argv']))}`")
    build = ", ".join(f"{k} {m[k]}" for k in ("compiler", "build_type", "cuda_runtime", "cuda_driver") if m.get(k))
    if build:
        out.append(f"- build: {build}")
    if m.get("start_time"):
        out.append(f"- started: {m['start_time']}")
    out.append(f"- rows: {len(run.rows)} ({len(run.passed)} passed, {len(run.not_passed)} not passed"
               + (f", {len(run.skipped)} unreadable lines skipped" if run.skipped else "") + ")")
    out.append("")
    out.append("Latencies are medians of the samples (one forward pass of the unit per sample); "
               "ratios are to `bf16` at the same unit and batch. Rows that did not pass are listed at the "
               "end and are not plotted.")
    out.append("")

    for sec in sections:
        experiment, unit = sec["key"]
        out += [f"## {experiment} / {unit}", ""]
        for fig in sec["figures"]:
            out += [f"![{fig}]({fig})", ""]
        table = sec["table"]
        if table:
            batches = sorted({b for s in table.values() for b in s})
            bf16 = table.get(("bf16", ""), {})
            rows = []
            for s, by_batch in table.items():
                cells = [series_label(s)]
                for b in batches:
                    r = by_batch.get(b)
                    if r is None:
                        cells.append("-")
                        continue
                    cell = fmt_s(r["summary"]["median_s"])
                    if b in bf16 and s != ("bf16", ""):
                        cell += f" ({r['summary']['median_s'] / bf16[b]['summary']['median_s']:.2f}x)"
                    cells.append(cell)
                rows.append(cells)
            out += ["Median latency (ratio to bf16):", "",
                    md_table(["method \\ batch"] + [str(b) for b in batches], rows), ""]
            extra = extra_times(table)
            if extra:
                rows = []
                for s, by_batch in extra.items():
                    sp = spread(list(by_batch.values()))
                    rows.append([series_label(s)] + [fmt_signed_s(by_batch[b]) if b in by_batch else "-" for b in batches]
                                + [f"{sp:.0f}%" if sp is not None else "-"])
                out += ["Time over bf16 (median minus bf16's median at the same batch). The DFloat11 model "
                        "card says DF11's cost is constant per forward pass; spread is (max - min) / median "
                        "of a row's times, small where it is:", "",
                        md_table(["method \\ batch"] + [str(b) for b in batches] + ["spread"], rows), ""]
        if sec["breakdown"]:
            rows = []
            for s, by_batch in sec["breakdown"].items():
                for b in sorted(by_batch):
                    sm = by_batch[b]["summary"]
                    rows.append([series_label(s), str(b), fmt_s(sm["decode_s"]), fmt_s(sm["gemm_s"]),
                                 fmt_s(sm["median_s"]), f"{sm['decode_s'] / sm['median_s'] * 100:.0f}%"])
            out += ["Decode vs GEMM (kernel-time medians):", "",
                    md_table(["method", "batch", "decode", "GEMM", "median", "decode / median"], rows, "lrrrrr"), ""]

    if decode_sections:
        out += ["## Decode throughput", ""]
        rows = []
        for sec in decode_sections:
            experiment, unit = sec["key"]
            out += [f"![{sec['figure']}]({sec['figure']})", ""]
            bound = gbps(sec["copy"])[0] if sec["copy"] else None
            for r in sec["decodes"]:
                med, lo, hi = gbps(r)
                rows.append([unit, r["case"].get("variant") or "-", f"{med:.1f}", f"{lo:.1f} - {hi:.1f}",
                             f"{med / bound * 100:.0f}%" if bound else "-"])
            if bound:
                rows.append([unit, "**copy (bound)**", f"{bound:.1f}", "", "100%"])
        out += [md_table(["unit", "variant", "GB/s (median)", "GB/s (at q3 - q1 time)", "of copy"], rows, "llrrr"), ""]

    same_gemms = [r for r in run.passed if r.get("verified_against") == "bf16-same-gemms"]
    if same_gemms:
        out += ["## Passed against their own GEMMs", "",
                "These rows differ from whole-matrix bf16 only because their GEMMs do (row slices round "
                "differently); their output is bit-identical to the BF16 weights through the same GEMMs.", ""]
        rows = [[r["case"]["unit"], r["case"]["method"], series_of(r)[1] or "-", str(r["case"]["batch"]),
                 r.get("reason") or ""] for r in same_gemms]
        out += [md_table(["unit", "method", "variant", "batch", "difference from bf16"], rows, "lllrl"), ""]

    out += ["## Rows not passed (not plotted)", ""]
    if not run.rows:
        out += ["None: results.jsonl has no readable row.", ""]
    elif run.not_passed:
        rows = [[r["case"]["experiment"], r["case"]["unit"], r["case"]["method"], series_of(r)[1] or "-",
                 str(r["case"]["batch"]), r["disposition"], r.get("reason") or ""] for r in run.not_passed]
        out += [md_table(["experiment", "unit", "method", "variant", "batch", "disposition", "reason"], rows, "llllrll"), ""]
    else:
        out += ["None: every row passed.", ""]
    if run.skipped:
        out += ["## Lines left out (unreadable, or a case's second row)", "",
                md_table(["line", "problem"], [[str(n), p] for n, p in run.skipped], "rl"), ""]
    out += [f"_Generated by scripts/plot_sweep.py {elapsed_note}._", ""]
    (run.dir / "report.md").write_text("\n".join(out), encoding="utf-8")


# ---- main -----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=pathlib.Path)
    a = ap.parse_args()
    start = time.monotonic()
    if not (a.run_dir / "results.jsonl").is_file():
        print(f"plot_sweep: {a.run_dir / 'results.jsonl'}: no such file", file=sys.stderr)
        return 1
    rows, skipped = load(a.run_dir)
    for n, problem in skipped:
        print(f"plot_sweep: {a.run_dir / 'results.jsonl'}:{n}: skipped: {problem}", file=sys.stderr)
    run = Run(a.run_dir, rows, skipped)

    figures, sections, decode_sections = [], [], []
    for key in run.units:
        unit_rows = run.unit_rows(key)
        table = latency_table(unit_rows)
        sec = {"key": key, "figures": [], "table": table, "breakdown": {}}
        if table:
            sec["figures"].append(plot_latency(run, key, table))
            ratio = ratios(table)
            if ratio:
                sec["figures"].append(plot_overhead(run, key, ratio))
            sec["breakdown"] = breakdown_rows(table)
            if sec["breakdown"]:
                sec["figures"].append(plot_breakdown(run, key, sec["breakdown"]))
        decodes, copy = decode_rows(unit_rows)
        if decodes:
            decode_sections.append({"key": key, "decodes": decodes, "copy": copy,
                                    "figure": plot_decode(run, key, decodes, copy)})
        figures += sec["figures"]
        sections.append(sec)
    figures += [d["figure"] for d in decode_sections]
    elapsed = time.monotonic() - start
    write_report(run, sections, decode_sections, f"from {len(rows)} rows")
    print(f"plot_sweep: {len(rows)} rows ({len(run.passed)} passed), {len(figures)} figures and report.md "
          f"-> {a.run_dir} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
