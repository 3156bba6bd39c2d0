#!/usr/bin/env python3
"""Instruction profile of a firmware under QEMU: where one inference's instructions go.

Boots the ELF (normally `boards/target/<target>/release/empf-mcu-bench`, built by
`cargo xtask mcu-bench`) with `-icount shift=0 -d in_asm,exec,nochain`, reads QEMU's log from a
pipe as it runs, counts every executed instruction (a translation block's instructions times
its executions), and prints the counts by function and by source line (`addr2line -i`: the
innermost frame in `core/` or `core/dsp/`). With `--layer L --layers N` only the instructions
between the mcu-bench firmware's SysTick reads are counted that belong to layer L of an N-layer
model (the firmware reads SysTick, in a function of its own, at the start of a run and after
every layer of every step), so one layer can be looked at alone. `--limit` stops after that many
instructions (the first run, integer sequential, follows a 2 000 000-instruction calibration
loop and the model decode).

These are emulated instruction counts, as `mcu-bench` prints them; not cycles on silicon.

    python3 scripts/mcu-profile.py ELF [--cpu cortex-m4 --machine mps2-an386]
        [--limit 12000000] [--layer 4 --layers 8] [--top 30]

The ELF is the last one `mcu-bench` built for that target (each `--model` rebuilds it). Needs
qemu-system-arm, llvm-nm and addr2line (binutils) on PATH.
"""
import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("elf")
    ap.add_argument("--cpu", default="cortex-m4")
    ap.add_argument("--machine", default="mps2-an386")
    ap.add_argument("--limit", type=int, default=12_000_000)
    ap.add_argument("--layer", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    if (a.layer is None) != (a.layers is None):
        sys.exit("--layer and --layers go together")

    nm = subprocess.run(["llvm-nm", "-C", a.elf], capture_output=True, text=True, check=True)
    syms = sorted(
        (int(f[0], 16) & ~1, " ".join(f[2:]))
        for f in (l.split() for l in nm.stdout.splitlines())
        if len(f) >= 3 and f[1] in "Tt"
    )
    ticks = [s for s, n in syms if n.startswith("empf_mcu_bench::ticks")]
    if a.layer is not None and not ticks:
        sys.exit("no empf_mcu_bench::ticks in the ELF: --layer needs the mcu-bench firmware")

    tmp = tempfile.mkdtemp()
    fifo = os.path.join(tmp, "qemu.log")
    os.mkfifo(fifo)
    qemu = subprocess.Popen(
        ["qemu-system-arm", "-cpu", a.cpu, "-machine", a.machine, "-nographic",
         "-monitor", "none", "-serial", "none",
         "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
         "-d", "in_asm,exec,nochain", "-D", fifo, "-kernel", a.elf],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trace = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
    insn = re.compile(r"^0x([0-9a-f]+):")
    blocks, cur, total, reads = {}, None, 0, 0
    counts = collections.Counter()
    try:
        with open(fifo) as log:
            for line in log:
                if line.startswith("Trace"):
                    m = trace.match(line)
                    cur = None
                    if not m:
                        continue
                    pc = int(m.group(1), 16)
                    if ticks and pc == ticks[0]:
                        reads += 1
                    body = blocks.get(pc, [pc])
                    total += len(body)
                    # Calibration reads SysTick twice, a run's start once; then once per layer.
                    seg = reads - 3
                    if a.layer is None or (seg >= 0 and seg % a.layers == a.layer):
                        counts.update(body)
                    if total > a.limit:
                        break
                elif line.startswith("IN:"):
                    cur = []
                elif cur is not None:
                    m = insn.match(line)
                    if m:
                        pc = int(m.group(1), 16)
                        if not cur:
                            blocks[pc] = cur
                        cur.append(pc)
    finally:
        qemu.kill()
        qemu.wait()
        os.unlink(fifo)
        os.rmdir(tmp)

    n = sum(counts.values())
    what = f"layer {a.layer} of {a.layers}" if a.layer is not None else "all"
    print(f"{n} instructions counted ({what}; {total} executed in all, limit {a.limit})")
    keys = [s for s, _ in syms]
    by_fn = collections.Counter()
    for pc, c in counts.items():
        k = bisect.bisect_right(keys, pc) - 1
        by_fn[syms[k][1][:100] if k >= 0 else "?"] += c
    print("\nby function")
    for f, c in by_fn.most_common(a.top):
        print(f"{c:10d} {100 * c / max(n, 1):5.1f}%  {f}")

    pcs = sorted(counts)
    out = subprocess.run(["addr2line", "-i", "-a", "-e", a.elf] + [hex(p) for p in pcs],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/"
    frames, at = {}, None
    for l in out:
        if re.fullmatch(r"0x[0-9a-f]+", l):
            at = int(l, 16)
            frames[at] = []
        elif at is not None:
            frames[at].append(l.split(" ")[0])
    by_line = collections.Counter()
    for pc in pcs:
        ours = [f[len(root):] for f in frames.get(pc, []) if f.startswith(root + "core/")]
        by_line[ours[0] if ours else (frames.get(pc) or ["?"])[0]] += counts[pc]
    print("\nby source line (innermost frame in core/ or core/dsp/)")
    for l, c in by_line.most_common(a.top):
        print(f"{c:10d} {100 * c / max(n, 1):5.1f}%  {l}")


if __name__ == "__main__":
    main()
