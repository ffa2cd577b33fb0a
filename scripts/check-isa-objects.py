#!/usr/bin/env python3
"""scripts/check-isa-objects.py OBJ...: checks the objects of simmim::kernels's instruction-set sources
(src/isa_*.cpp) for symbols that could replace a baseline copy at link time.

Every function an object can share with other objects (a global or weak definition, i.e. an inline function or a
template instantiation the linker deduplicates) must either belong to the object's own ISA namespace (isa_avx512bw,
isa_fma3_avx2, simmim_xsimd_*: no other object defines those names), or contain no instruction beyond the baseline
(no VEX/EVEX instruction: no v-prefixed mnemonic, no ymm/zmm/mask register). Prints the offenders; exits 1 if any.
"""
import re, subprocess, sys

# kernels/gemm_bf16.hpp: compiled with target attributes in every translation unit alike, run only after a CPUID check
OWN = ("isa_avx512bw", "isa_fma3_avx2", "simmim_xsimd_", "dispatch::detail::avx", "kernels::detail::bf16::")
bad = 0
# CTest passes $<TARGET_OBJECTS:...> as one ;-separated argument
objects = [o for arg in sys.argv[1:] for o in arg.split(";") if o]
if not objects:
    sys.exit("check-isa-objects.py: no object files given")
for obj in objects:
    nm = subprocess.run(["nm", "--defined-only", obj], capture_output=True, text=True, check=True).stdout
    shared = {l.split()[2] for l in nm.splitlines() if len(l.split()) == 3 and l.split()[1] in "TWVuiB"}
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True, check=True).stdout
    fn, vex, checked = None, {}, 0
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            fn = m.group(1)
            continue
        if fn is None or fn not in shared:
            continue
        ins = line.split("\t")
        if len(ins) < 2:
            continue
        text = ins[-1].strip()
        if re.match(r"v[a-z]", text) or re.search(r"%[yz]mm|%k[0-7]\b", text):
            vex[fn] = vex.get(fn, 0) + 1
    demangled = {}
    if vex:
        out = subprocess.run(["c++filt"], input="\n".join(vex), capture_output=True, text=True).stdout.splitlines()
        demangled = dict(zip(vex, out))
    for sym, n in sorted(vex.items()):
        name = demangled.get(sym, sym)
        if any(o in name for o in OWN):
            continue
        bad += 1
        print(f"{obj}: {name[:200]}: shared symbol with {n} instructions beyond the baseline")
    print(f"{obj}: {len(shared)} shared symbols checked")
sys.exit(1 if bad else 0)
