#!/usr/bin/env python3
# The straight-line whole-unit path of each batch-1 fused kernel (sm_90 SASS of the release build):
# the shortest window holding 64 FFMAs, and the path from its entry to the butterfly. Run from the
# repository root after a release build (cuobjdump from scripts/setup).
import re,subprocess,sys
obj='build/release/kernels/CMakeFiles/df11_decoders.dir/decoders/fused/fused_gemv.cu.o'
sass=subprocess.run(['build/tools/cuda-binutils/bin/cuobjdump','-sass','-arch','sm_90',obj],capture_output=True,text=True).stdout
for f in re.split(r'\n\s*Function : ',sass)[1:]:
    name=f.split('\n',1)[0]
    m=re.search(r'FusedDecodeE([2-5])ELi1ELb0E',name)  # the fixed decodes
    if not m: continue
    ins=[]
    for l in f.splitlines():
        mm=re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;',l)
        if mm: ins.append((int(mm.group(1),16),mm.group(2)))
    ff=[i for i,(a,t) in enumerate(ins) if 'FFMA' in t]
    best=None
    for s in range(len(ff)-63):
        span=ff[s+63]-ff[s]
        if best is None or span<best[0]: best=(span,ff[s],ff[s+63])
    # path: from the BRA into the path to the shuffle end: approximate: from first LDS.64 before best start to the last SHFL after
    lo=best[1]
    while lo>0 and 'BRA' not in ins[lo-1][1] and 'BSYNC' not in ins[lo-1][1]: lo-=1
    hi=best[2]
    while hi<len(ins)-1 and 'SHFL' not in ins[hi][1]: hi+=1
    sh=hi
    while sh<len(ins)-1 and ('SHFL' in ins[sh][1] or 'FADD' in ins[sh][1] or sh<hi+10): sh+=1
    print(['two','one','fixed','fixed_nh','fixed_late','fixed_wide'][int(m.group(1))], '64 FFMAs within',best[0]+1,'; straight path ~',sh-lo,'instructions incl. butterfly')
