"""Compile torchgmm's Triton kernels for a GPU architecture on a machine without one (Triton's own ptxas).

Usage::

    python -m bench.compile_check [--arch 90]

The CPU interpreter runs the kernels' Python, not their compilation: this catches what it lets through (types,
the shapes ``tl.dot`` accepts) and prints the registers and spills of each kernel at the bench's shapes
(G-full: D=64, K=64; Flash-GMM's: D=128, K=1024).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not interpreted ones (decided at import)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when unset; 1 is its current default

F32 = "*fp32"
# The pointer and integer arguments of each kernel (its constexpr arguments are the shapes below).
FULL_NORM = dict(X=F32, P=F32, C=F32, M=F32, LSE=F32, n="i32")
FULL_STATS = dict(X=F32, P=F32, C=F32, M=F32, LSE=F32, NK=F32, S1=F32, S2=F32, n="i32", segment_rows="i32")
EXPANDED_NORM = dict(X=F32, W=F32, LSE=F32, n="i32")
EXPANDED_STATS = dict(X=F32, W=F32, LSE=F32, NK=F32, S1=F32, S2=F32, n="i32", segment_rows="i32")
G_FULL = dict(D=64, K=64, BN=128, BD=64, TF32=True)  # the GPU bench's G-full
F_FULL = dict(D=128, K=1024, BN=64, BD=128, TF32=True)  # Flash-GMM's shape
SHAPES = [
    ("_full_norm", FULL_NORM, G_FULL),
    ("_full_stats", FULL_STATS, G_FULL),
    ("_full_norm", FULL_NORM, F_FULL),
    ("_full_stats", FULL_STATS, F_FULL),
    ("_expanded_norm", EXPANDED_NORM, dict(F=257, K=1024, D=128, Q=128, BN=64, BD=128, BK=16)),
    ("_expanded_stats", EXPANDED_STATS, dict(F=257, K=1024, D=128, Q=128, BN=64, BD=128, BK=16)),
    ("_expanded_stats", EXPANDED_STATS, dict(F=130, K=1024, D=128, Q=1, BN=64, BD=128, BK=16)),
]


def _ptxas_report(ptx: str, arch: int) -> str:
    """Registers and spills per thread, from Triton's own ``ptxas -v`` on the kernel's PTX."""
    import triton

    folder = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    ptxas = next(p for p in (folder / "ptxas-blackwell", folder / "ptxas") if p.exists())  # the newer one first
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run(
            [
                str(ptxas),
                f"-arch=sm_{arch}a" if arch >= 90 else f"-arch=sm_{arch}",
                "-v",
                str(source),
                "-o",
                os.devnull,
            ],
            capture_output=True,
            text=True,
        )
    used = re.search(r"Used (\d+) registers", done.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", done.stderr)
    if not used:
        return "ptxas: " + " / ".join(done.stderr.strip().splitlines()[:2])[:300]
    return f"{used.group(1)} registers per thread, spills {spills.group(1) if spills else '?'} B stored"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (90: H100, H200)")
    args = parser.parse_args(argv)
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from torchgmm import fused

    target = GPUTarget("cuda", args.arch, 32)
    failures = 0
    for name, signature, constants in SHAPES:
        start = time.perf_counter()
        try:
            kernel = compile(
                ASTSource(getattr(fused, name), {**signature, **dict.fromkeys(constants, "constexpr")}, constants),
                target=target,
                options={"num_warps": fused.warps(constants["BD"])},  # as the kernel launches it
            )
        except Exception as exc:  # report every kernel, then fail
            failures += 1
            print(f"{name} {constants}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        meta = kernel.metadata
        print(
            f"{name} {constants}: compiled in {time.perf_counter() - start:.1f} s, {meta.num_warps} warps, "
            f"shared {meta.shared} B, {_ptxas_report(kernel.asm['ptx'], args.arch)}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
