#!/usr/bin/env python3
"""Instruction counts of every kernel's inner loops, read from its SASS (sm_90), without a GPU.

A decoder that is to keep up with HBM has a budget of a few tens of thread-instructions per
weight (docs/ARCHITECTURE.md), so the instructions one iteration of a decode or GEMV loop
issues are the figure a kernel change moves first. For every `*.cu.o` under the build folder
this runs `cuobjdump -sass` and, per kernel, finds its loops (a backward branch and the
instructions it closes over) and the shortest and longest path once round each, an inner
loop's back edge not taken (instructions from the loop head back to it, predicated ones
included: they issue): for a decode loop the shortest is the multi-symbol fast path without a
refill and the longest the fallback through the chained tables with one; for the fused GEMV's
8-wide step they are its one path. Each loop also says how deep it is nested and whether its
body holds a block barrier (the per-block loops do, a thread's own loops do not). Results go to <build>/kernel_sass.json.

--check compares with a baseline (reports/baselines/kernel_sass.json): it fails when a loop's
shortest or longest iteration grows, or when a kernel's loops change in number (the loops are
matched by their order in the kernel: a change of structure has to be looked at and the
baseline regenerated with --build-dir B --out reports/baselines/kernel_sass.json). Loops that
got shorter are listed. Exit 77 (ctest: skipped) without cuobjdump and nvdisasm: scripts/setup
fetches them from PyPI (NVIDIA's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels) into
build/tools/cuda-binutils; DF11_CUDA_BINUTILS names another folder holding both.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

from kernel_resources import demangle  # the same demangled names as kernel_resources.json

ARCH = "sm_90"
ROOT = pathlib.Path(__file__).resolve().parent.parent
FUNCTION = re.compile(r"Function : (\S+)")
INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
BRANCH_TARGET = re.compile(r"0x([0-9a-f]+)")
# The op classes a loop's shortest iteration is summarised by.
OP_CLASSES = ("FFMA", "LDS", "STS", "LDG", "STG", "SHFL", "BAR")


def find_tools(explicit):
    """The folder holding cuobjdump and nvdisasm, or None."""
    candidates = [explicit, os.environ.get("DF11_CUDA_BINUTILS"), ROOT / "build/tools/cuda-binutils/bin"]
    which = shutil.which("cuobjdump")
    if which:
        candidates.append(pathlib.Path(which).parent)
    candidates.append("/usr/local/cuda/bin")
    for c in candidates:
        if c and (pathlib.Path(c) / "cuobjdump").is_file() and (pathlib.Path(c) / "nvdisasm").is_file():
            return pathlib.Path(c)
    return None


def parse_sass(text):
    """{mangled name: [(address, predicate, opcode, text)]}; NOPs dropped."""
    functions = {}
    current = None
    for line in text.splitlines():
        m = FUNCTION.search(line)
        if m:
            current = functions.setdefault(m.group(1), [])
            continue
        m = INSTRUCTION.match(line)
        if m is None or current is None:
            continue
        body = m.group(2)
        predicate = ""
        if body.startswith("@"):
            predicate, _, body = body.partition(" ")
        opcode = body.split(None, 1)[0] if body else ""
        if opcode == "NOP":
            continue
        current.append((int(m.group(1), 16), predicate, opcode, body))
    return functions


def branch_target(opcode, body):
    """The address a BRA goes to, else None."""
    if opcode.split(".", 1)[0] != "BRA":
        return None
    m = BRANCH_TARGET.search(body.split(None, 1)[1] if " " in body else "")
    return int(m.group(1), 16) if m else None


def successors(ins, i, index_of):
    """Indices control may go to after instruction i."""
    _, predicate, opcode, body = ins[i]
    # BRA.DIV branches only when the warp has diverged (to the slow path of a warp-synchronous
    # operation), so control falls through as well, like a predicated branch.
    always = predicate in ("", "@PT") and not opcode.startswith("BRA.DIV")
    base = opcode.split(".", 1)[0]
    out = []
    if base == "BRA":
        target = branch_target(opcode, body)
        if target in index_of:
            out.append(index_of[target])
        if not always:
            out.append(i + 1)
    elif base in ("EXIT", "RET") and always:
        pass
    else:
        out.append(i + 1)
    return [j for j in out if j < len(ins)]


def loops(ins):
    """The loops of one kernel in address order: [{head, span, depth, barrier, min_cycle,
    max_cycle, ops}]."""
    index_of = {a: i for i, (a, *_rest) in enumerate(ins)}
    ends = {}  # head index -> index of the last backward branch to it
    for i, (addr, _p, opcode, body) in enumerate(ins):
        target = branch_target(opcode, body)
        if target is not None and target < addr and target in index_of:  # a branch to itself ends the kernel's code
            h = index_of[target]
            ends[h] = max(ends.get(h, i), i)
    spans = sorted(ends.items())
    result = []
    for h, e in spans:
        # Forward edges only (an inner loop's back edge is not taken), so the body is a DAG from
        # the head: in address order, the shortest and the longest way back to it.
        lo, hi = {h: 1}, {h: 1}
        lo_parent = {h: None}
        best_lo = best_hi = None
        for u in range(h, e + 1):
            if u not in lo:
                continue
            for v in successors(ins, u, index_of):
                if v == h:
                    if best_lo is None or lo[u] < lo[best_lo]:
                        best_lo = u
                    if best_hi is None or hi[u] > hi[best_hi]:
                        best_hi = u
                elif u < v <= e:
                    if v not in lo or lo[u] + 1 < lo[v]:
                        lo[v], lo_parent[v] = lo[u] + 1, u
                    if v not in hi or hi[u] + 1 > hi[v]:
                        hi[v] = hi[u] + 1
        if best_lo is None:
            continue
        path = []
        u = best_lo
        while u is not None:
            path.append(u)
            u = lo_parent[u]
        ops = {c: sum(1 for j in path if ins[j][2].startswith(c)) for c in OP_CLASSES}
        result.append({"head": f"{ins[h][0]:#x}", "span": e - h + 1,
                       "depth": sum(1 for h2, e2 in spans if (h2, e2) != (h, e) and h2 <= h and e <= e2),
                       "barrier": any(ins[j][2].startswith("BAR") for j in range(h, e + 1)),
                       "min_cycle": lo[best_lo], "max_cycle": hi[best_hi], "ops": {k: v for k, v in ops.items() if v}})
    return result


def collect(build_dir, tools):
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")
    kernels = []
    for obj in sorted(pathlib.Path(build_dir).rglob("*.cu.o")):
        run = subprocess.run([str(tools / "cuobjdump"), "-sass", "-arch", ARCH, str(obj)], capture_output=True,
                             text=True, env=env)
        if run.returncode != 0:
            raise SystemExit(f"kernel_sass: cuobjdump failed on {obj}: {run.stderr.strip()}")
        for mangled, ins in parse_sass(run.stdout).items():
            kernels.append({"mangled": mangled, "object": str(obj.relative_to(build_dir)), "arch": ARCH,
                            "instructions": len(ins), "loops": loops(ins)})
    # Only the demangled name is kept: a mangled one carries a hash of the source path for
    # kernels in an anonymous namespace, which would change the file with every checkout.
    for k, d in zip(kernels, demangle([k["mangled"] for k in kernels])):
        k["name"] = d
        del k["mangled"]
    kernels.sort(key=lambda k: k["name"])
    return {"schema_version": 1, "kernels": kernels}


def duplicate_names(doc):
    """{name: [objects]} of the kernel names that occur more than once in doc."""
    objects = {}
    for k in doc["kernels"]:
        objects.setdefault(k["name"], []).append(k.get("object", "?"))
    return {name: objs for name, objs in objects.items() if len(objs) > 1}


def check(doc, baseline):
    """(failures, improvements) against the baseline, kernels keyed by demangled name (a mangled
    name carries a per-file hash for kernels in an anonymous namespace). A name twice in either
    (a function of one name in the anonymous namespaces of two .cu files) is a failure and its
    kernels are not compared: matched by name, one's loops would be compared with the other's,
    and a loop that grew could read as shorter."""
    bad, better = [], []
    twice = {}
    for what, d in (("the results", doc), ("the baseline", baseline)):
        for name, objs in duplicate_names(d).items():
            bad.append(f"{name}: {len(objs)} kernels of this name in {what} (objects {', '.join(objs)}): they cannot "
                       f"be matched with the baseline by name; give them distinct names")
            twice[name] = objs
    base = {k["name"]: k for k in baseline["kernels"]}
    for k in doc["kernels"]:
        if k["name"] in twice:
            continue
        b = base.get(k["name"])
        if b is None:
            continue  # a new kernel has no baseline yet
        if len(k["loops"]) != len(b["loops"]):
            bad.append(f"{k['name']}: {len(b['loops'])} loops in the baseline, {len(k['loops'])} now "
                       f"(shortest iterations {[l['min_cycle'] for l in b['loops']]} -> "
                       f"{[l['min_cycle'] for l in k['loops']]}): look, then regenerate the baseline")
            continue
        for i, (l, lb) in enumerate(zip(k["loops"], b["loops"])):
            for field, what in (("min_cycle", "shortest"), ("max_cycle", "longest")):
                if l[field] > lb[field]:
                    bad.append(f"{k['name']}: loop {i} (at {l['head']}): {what} iteration {l[field]} instructions "
                               f"> baseline {lb[field]}")
                elif l[field] < lb[field]:
                    better.append(f"{k['name']}: loop {i}: {what} iteration {lb[field]} -> {l[field]} instructions")
    return bad, better


def table(doc):
    for k in doc["kernels"]:
        print(f"{k['name']}  ({k['instructions']} instructions)")
        for i, l in enumerate(k["loops"]):
            ops = " ".join(f"{c} {n}" for c, n in l["ops"].items())
            indent = "  " * (1 + l.get("depth", 0))
            where = "block loop" if l.get("barrier") else "thread loop"
            print(f"{indent}loop {i} at {l['head']} ({where}): {l['min_cycle']:4d} .. {l['max_cycle']:4d} per iteration "
                  f"(span {l['span']}; the shortest: {ops or 'no memory or FFMA op'})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", help="collect from the *.cu.o files under this folder")
    ap.add_argument("--out", help="where --build-dir's results go (JSON)")
    ap.add_argument("--check", help="results to check (JSON; may be --out's)")
    ap.add_argument("--baseline", help="results to compare --check's with")
    ap.add_argument("--tools", help="folder holding cuobjdump and nvdisasm")
    ap.add_argument("--table", action="store_true", help="print every kernel's loops")
    ap.add_argument("--optional", action="store_true", help="without cuobjdump and nvdisasm, say so and exit 0 (the build's step)")
    a = ap.parse_args()
    if a.build_dir:
        tools = find_tools(a.tools)
        if tools is None:
            print("kernel_sass: no cuobjdump and nvdisasm (scripts/setup fetches them into build/tools/cuda-binutils): "
                  "skipped", file=sys.stderr)
            return 0 if a.optional else 77
        doc = collect(a.build_dir, tools)
        if not a.out:
            ap.error("--build-dir needs --out")
        pathlib.Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"kernel_sass: {len(doc['kernels'])} kernels ({ARCH}) -> {a.out}")
        if a.table:
            table(doc)
    if a.check:
        doc = json.loads(pathlib.Path(a.check).read_text())
        if not doc["kernels"]:
            print("kernel_sass: no kernels found (no CUDA objects built?)", file=sys.stderr)
            return 1
        if not a.baseline or not pathlib.Path(a.baseline).exists():
            print(f"kernel_sass: no baseline {a.baseline}: nothing to compare", file=sys.stderr)
            return 1
        bad, better = check(doc, json.loads(pathlib.Path(a.baseline).read_text()))
        for b in better:
            print("shorter:", b)
        for b in bad:
            print("FAIL", b, file=sys.stderr)
        print(f"kernel_sass: {len(doc['kernels'])} kernels checked, {len(bad)} problems, {len(better)} loops shorter")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
