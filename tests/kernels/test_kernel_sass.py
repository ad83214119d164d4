#!/usr/bin/env python3
"""scripts/kernel_sass.py on made-up SASS (no cuobjdump needed): the loops, their nesting and
barriers, their shortest and longest iterations (predicated instructions counted, an inner
loop's back edge not taken), the kernel's closing branch to itself not a loop; the check fails
on a longer iteration and on a changed loop structure and lists shorter ones. Both checks,
kernel_sass.py's and kernel_resources.py's, fail on two kernels of one name."""
import copy
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import kernel_resources  # noqa: E402
import kernel_sass  # noqa: E402


def sass(function, lines):
    out = [f"\t\tFunction : {function}"]
    for i, text in enumerate(lines):
        out.append(f"        /*{i * 16:04x}*/                   {text} ;   /* 0x0000 */")
    return "\n".join(out)


# A decode-like loop (head at 0x20): a fast path of 5 (0x20..0x60 then the back branch at 0x90:
# head, LDS, branch not taken, STS, jump to the tail... ) and a slow path through 0x70..0x80.
TEXT = sass("_Z6kernelv", [
    "MOV R1, RZ",                      # 0x00
    "NOP",                             # dropped
    "LDS R2, [R1]",                    # 0x20 head (index 1 after the NOP is dropped)
    "@P0 BRA 0x70",                    # 0x30 to the slow path
    "STS [R1], R2",                    # 0x40
    "@!P1 STS [R1+0x1], R2",           # 0x50 predicated: still issues
    "BRA 0x90",                        # 0x60
    "LDG.E R3, desc[UR4][R4.64]",      # 0x70 slow path
    "IADD3 R1, R1, R3, RZ",            # 0x80
    "@P2 BRA 0x20",                    # 0x90 back to the head
    # An outer loop (with a barrier) around an inner one.
    "IADD3 R5, R5, 0x1, RZ",           # 0xa0 outer head
    "FFMA R6, R6, R6, R6",             # 0xb0 inner head
    "@P3 BRA 0xb0",                    # 0xc0
    "BAR.SYNC.DEFER_BLOCKING 0x0",     # 0xd0
    "@P4 BRA 0xa0",                    # 0xe0
    "EXIT",                            # 0xf0
    "BRA 0x100",                       # 0x100: the closing branch to itself
])

# A loop around a warp-synchronous operation: BRA.DIV goes to the slow path (after the kernel's
# EXIT, jumping back in) only when the warp has diverged, so the loop falls through it too.
WARP = sass("_Z4warpv", [
    "MOV R1, RZ",                          # 0x00
    "IADD3 R1, R1, 0x1, RZ",               # 0x10 head
    "BRA.DIV UR4, 0x60",                   # 0x20
    "SHFL.BFLY PT, R2, R1, 0x1, 0x1f",     # 0x30
    "@P0 BRA 0x10",                        # 0x40 back to the head
    "EXIT",                                # 0x50
    "WARPSYNC.COLLECTIVE R0, 0x30",        # 0x60 the diverged path
    "BRA 0x30",                            # 0x70 back into the loop
    "BRA 0x80",                            # 0x80: the closing branch to itself
])


def main():
    ins = kernel_sass.parse_sass(TEXT)["_Z6kernelv"]
    assert all(op != "NOP" for _a, _p, op, _t in ins), ins
    loops = kernel_sass.loops(ins)
    assert len(loops) == 3, loops
    decode, outer, inner = loops
    # Fast: LDS, @P0 BRA, STS, @!P1 STS, BRA, @P2 BRA = 6; slow: LDS, @P0 BRA, LDG, IADD3, @P2 BRA = 5.
    assert decode["head"] == "0x20" and decode["span"] == 8, decode
    assert (decode["min_cycle"], decode["max_cycle"], decode["depth"], decode["barrier"]) == (5, 6, 0, False), decode
    assert decode["ops"] == {"LDS": 1, "LDG": 1}, decode
    # Outer: IADD3, FFMA, @P3 BRA (its back edge not taken), BAR, @P4 BRA.
    assert (outer["head"], outer["min_cycle"], outer["max_cycle"], outer["depth"], outer["barrier"]) == \
        ("0xa0", 5, 5, 0, True), outer
    assert outer["ops"] == {"FFMA": 1, "BAR": 1}, outer
    assert (inner["head"], inner["min_cycle"], inner["max_cycle"], inner["depth"], inner["barrier"]) == \
        ("0xb0", 2, 2, 1, False), inner

    doc = {"kernels": [{"name": "kernel()", "loops": loops}]}
    assert kernel_sass.check(doc, doc) == ([], [])
    longer = copy.deepcopy(doc)
    longer["kernels"][0]["loops"][0]["max_cycle"] = 7
    bad, better = kernel_sass.check(longer, doc)
    assert len(bad) == 1 and "longest iteration 7 instructions > baseline 6" in bad[0] and not better, bad
    shorter = copy.deepcopy(doc)
    shorter["kernels"][0]["loops"][2]["min_cycle"] = 1
    bad, better = kernel_sass.check(shorter, doc)
    assert not bad and better == ["kernel(): loop 2: shortest iteration 2 -> 1 instructions"], (bad, better)
    fewer = copy.deepcopy(doc)
    fewer["kernels"][0]["loops"].pop()
    bad, _ = kernel_sass.check(fewer, doc)
    assert len(bad) == 1 and "3 loops in the baseline, 2 now" in bad[0], bad
    new_kernel = {"kernels": doc["kernels"] + [{"name": "other()", "loops": []}]}
    assert kernel_sass.check(new_kernel, doc) == ([], [])  # no baseline for it yet

    # Two kernels of one demangled name (an anonymous-namespace function in two .cu files): matched
    # by name, the first's loop that grew would be compared with the second's shorter baseline and
    # read as shorter. Either file holding a name twice is a failure, and neither is compared.
    def anon(obj, cycles):
        return {"name": "(anonymous namespace)::decode()", "object": obj,
                "loops": [{"head": "0x20", "min_cycle": cycles, "max_cycle": cycles}]}
    twice = {"kernels": [anon("a.cu.o", 6), anon("b.cu.o", 10)]}  # a.cu's loop grew from 5
    base = {"kernels": [anon("a.cu.o", 5), anon("b.cu.o", 10)]}  # by name, a.cu's 6 against b.cu's 10
    bad, better = kernel_sass.check(twice, base)
    assert not better, better
    assert len(bad) == 2 and all("(anonymous namespace)::decode(): 2 kernels of this name" in b for b in bad), bad
    assert "in the results (objects a.cu.o, b.cu.o)" in bad[0] and "in the baseline" in bad[1], bad
    once = {"kernels": [anon("a.cu.o", 5)]}
    bad, _ = kernel_sass.check(once, base)
    assert len(bad) == 1 and "in the baseline" in bad[0], bad
    bad, _ = kernel_sass.check(twice, once)
    assert len(bad) == 1 and "in the results" in bad[0], bad

    # kernel_resources.py's check keys kernels by (demangled name, arch) alike.
    def resources(obj, registers, arch="sm_90"):
        return {"name": "(anonymous namespace)::decode()", "arch": arch, "object": obj, "registers": registers,
                "static_smem_bytes": 0, "spill_store_bytes": 0, "spill_load_bytes": 0}
    base = {"kernels": [resources("a.cu.o", 32), resources("b.cu.o", 64)]}
    bad = kernel_resources.check({"kernels": [resources("a.cu.o", 48), resources("b.cu.o", 64)]}, base)
    assert len(bad) == 2, bad
    assert all("(anonymous namespace)::decode() [sm_90]: 2 kernels of this name" in b for b in bad), bad
    # One kernel built for two architectures is two entries, not a duplicate.
    two_archs = {"kernels": [resources("a.cu.o", 32), resources("a.cu.o", 40, "sm_80")]}
    assert kernel_resources.check(two_archs, two_archs) == [], kernel_resources.check(two_archs, two_archs)

    warp = kernel_sass.loops(kernel_sass.parse_sass(WARP)["_Z4warpv"])
    # IADD3, BRA.DIV (not taken), SHFL, @P0 BRA; the slow path's branch back in is no loop.
    assert [(w["head"], w["min_cycle"], w["max_cycle"]) for w in warp] == [("0x10", 4, 4)], warp
    print("test_kernel_sass: ok")


if __name__ == "__main__":
    main()
