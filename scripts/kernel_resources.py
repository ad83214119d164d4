#!/usr/bin/env python3
"""Collects ptxas resource reports (<object>.ptxas.log, written by scripts/nvcc_log) into
<build>/kernel_resources.json: registers, spills, stack, shared and constant memory per kernel
and architecture. With --check FILE it fails (exit 1) when any kernel spills, and with
--baseline FILE also when a kernel's registers or shared memory exceed the baseline's."""
import argparse
import json
import pathlib
import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(.*)")
SMEM = re.compile(r"(\d+) bytes smem")
CMEM = re.compile(r"(\d+) bytes cmem\[0\]")


def parse(log_text):
    kernels = {}
    current = None
    for line in log_text.splitlines():
        m = ENTRY.search(line)
        if m:
            current = (m.group(1), m.group(2))
            kernels.setdefault(current, {"mangled": m.group(1), "arch": m.group(2), "registers": 0,
                                         "stack_bytes": 0, "spill_store_bytes": 0, "spill_load_bytes": 0,
                                         "static_smem_bytes": 0, "cmem0_bytes": 0})
            continue
        if current is None:
            continue
        k = kernels[current]
        m = PROPS.search(line)
        if m:
            k["stack_bytes"], k["spill_store_bytes"], k["spill_load_bytes"] = map(int, m.groups())
        m = USED.search(line)
        if m:
            k["registers"] = int(m.group(1))
            rest = m.group(2)
            s = SMEM.search(rest)
            if s:
                k["static_smem_bytes"] = int(s.group(1))
            c = CMEM.search(rest)
            if c:
                k["cmem0_bytes"] = int(c.group(1))
    return list(kernels.values())


def demangle(names):
    if not names:
        return []
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


def collect(build_dir):
    kernels = []
    for log in sorted(pathlib.Path(build_dir).rglob("*.ptxas.log")):
        for k in parse(log.read_text(errors="replace")):
            k["object"] = str(log.relative_to(build_dir))[: -len(".ptxas.log")]
            kernels.append(k)
    for k, d in zip(kernels, demangle([k["mangled"] for k in kernels])):
        k["name"] = d
    kernels.sort(key=lambda k: (k["name"], k["arch"]))
    return {"schema_version": 1, "kernels": kernels}


def check(doc, baseline):
    bad = []
    for k in doc["kernels"]:
        if k["spill_store_bytes"] or k["spill_load_bytes"]:
            bad.append(f"{k['name']} [{k['arch']}]: spills {k['spill_store_bytes']} B stores, "
                       f"{k['spill_load_bytes']} B loads")
    if baseline is not None:
        # Keyed by the demangled name: a mangled name carries a per-file hash for kernels in an
        # anonymous namespace, which a move of the file would change. So two kernels of one name
        # and architecture (a function of one name in the anonymous namespaces of two .cu files)
        # cannot be told apart: a failure, and neither is compared (one's registers would be
        # compared with the other's).
        twice = set()
        for what, d in (("the results", doc), ("the baseline", baseline)):
            objects = {}
            for k in d["kernels"]:
                objects.setdefault((k["name"], k["arch"]), []).append(k.get("object", "?"))
            for (name, arch), objs in objects.items():
                if len(objs) > 1:
                    bad.append(f"{name} [{arch}]: {len(objs)} kernels of this name in {what} (objects "
                               f"{', '.join(objs)}): they cannot be matched with the baseline by name; "
                               f"give them distinct names")
                    twice.add((name, arch))
        base = {(k["name"], k["arch"]): k for k in baseline["kernels"]}
        for k in doc["kernels"]:
            if (k["name"], k["arch"]) in twice:
                continue
            b = base.get((k["name"], k["arch"]))
            if b is None:
                continue  # a new kernel has no baseline yet
            for field in ("registers", "static_smem_bytes"):
                if k[field] > b[field]:
                    bad.append(f"{k['name']} [{k['arch']}]: {field} {k[field]} > baseline {b[field]}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build-dir")
    ap.add_argument("--out")
    ap.add_argument("--check")
    ap.add_argument("--baseline")
    a = ap.parse_args()
    if a.build_dir:
        doc = collect(a.build_dir)
        pathlib.Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"kernel_resources: {len(doc['kernels'])} kernel builds -> {a.out}")
    if a.check:
        doc = json.loads(pathlib.Path(a.check).read_text())
        if not doc["kernels"]:
            print("kernel_resources: no kernels recorded (was ptxas -v captured?)", file=sys.stderr)
            return 1
        baseline = json.loads(pathlib.Path(a.baseline).read_text()) if a.baseline and pathlib.Path(a.baseline).exists() else None
        bad = check(doc, baseline)
        for b in bad:
            print("FAIL", b, file=sys.stderr)
        print(f"kernel_resources: {len(doc['kernels'])} kernel builds checked, {len(bad)} problems")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
