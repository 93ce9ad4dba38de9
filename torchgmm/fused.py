"""Fused Triton E-step for CUDA: densities, responsibilities and sufficient statistics without ``[n, K]`` tensors.

Owns the Triton kernels and the :class:`FusedKernel` that runs them under the kernel contract of
:mod:`torchgmm.kernels` (``prepare`` once per pass, ``accumulate`` per tile, ``finish`` once). Each tile of
rows takes two launches:

1. **Normalisers.** One program per block of rows and restart runs over every component (one at a time for
   full and tied, ``BLOCK_K`` at a time for diag and spherical) and keeps an online log-sum-exp, so only
   ``log p(x)``, ``[R, n]``, is written.
2. **Statistics.** One program per (segment of rows, restart, component or block of components) recomputes
   the densities of its components over its rows, turns them into responsibilities with the normalisers of
   step 1 and accumulates ``N_k``, the first moments and the scatter in float32 registers over at most
   65,536 rows (as the torch path between its flushes); each segment writes one partial sum, which torch adds
   up in float64.

``X`` is read once by step 1 and once per component (block) by step 2, from cache; neither an ``[n, K]`` nor
an ``[R, K, n, D]`` tensor reaches device memory. Full and tied covariances centre each row on the
component's mean before the product with its precision factor, so the whitened residuals are exact to the
products' own rounding even in TF32 (``matmul_precision='high'``); diag and spherical use the expansion
``x^2 p - 2 x mu p + mu^2 p`` of the torch path (with the same float32 rounding rule,
:func:`torchgmm.passes.working_dtype`) and always full float32 products.

The torch kernels stay the CPU path and the reference: the tests compare the two through Triton's interpreter
(``TRITON_INTERPRET=1``) on CPU. Must not: choose tiles or dtypes (:mod:`torchgmm.passes`), or solve M-steps.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
from torch import Tensor

from torchgmm.covariance import CovarianceType
from torchgmm.em import Statistics
from torchgmm.kernels import FLUSH_ROWS, ExpandedKernel, Kernel, WhitenedKernel

__all__ = ["KERNEL_ENV", "available", "requested", "interpreted", "kernel_for", "FusedKernel", "PreparedFused"]

# "auto" (the fused kernel for float32 CUDA passes when Triton is installed), "torch" or "triton".
KERNEL_ENV = "TORCHGMM_KERNEL"
_CHOICES = ("auto", "torch", "triton")

try:  # Triton is optional: without it every pass uses the torch kernels
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

# Rows per program in the statistics launch's segments: enough programs to fill a GPU
# (segments x restarts x components >= _PROGRAMS), never fewer rows than _MIN_SEGMENT_ROWS, and never more than
# FLUSH_ROWS, the torch path's float32 sums between flushes into float64.
_PROGRAMS = 1024
_MIN_SEGMENT_ROWS = 1024


def available() -> bool:
    """Whether Triton can be imported here."""
    return triton is not None


def requested() -> str:
    """The kernel the ``TORCHGMM_KERNEL`` environment variable asks for (``'auto'`` when unset)."""
    value = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(
            f"Invalid value for the environment variable {KERNEL_ENV}: {value!r}. It must be one of {list(_CHOICES)}."
        )
    if value == "triton" and not available():
        raise ValueError(
            f"{KERNEL_ENV}=triton asks for the fused Triton E-step, but Triton cannot be imported: install it "
            "(pip install triton) or unset the variable."
        )
    return value


# Triton decides at decoration time, so what counts is the setting when this module was imported.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "off")


def interpreted() -> bool:
    """Whether Triton runs these kernels in its CPU interpreter (``TRITON_INTERPRET=1`` when this was imported)."""
    return triton is not None and _INTERPRETED


class PreparedFused(NamedTuple):
    """Per-pass constants of :class:`FusedKernel`.

    Attributes
    ----------
    factors : Tensor
        Full and tied: the precision factors ``P``, ``(R, K, D, D)`` (tied expanded over ``K``). Diag and
        spherical: the density weights of :meth:`~torchgmm.covariance.CovarianceType.density_weights`,
        ``(R, F, K)``.
    constant : Tensor of shape (R, K)
        Full and tied: ``log w + log det P - D/2 log 2 pi``. Diag and spherical: unused (in ``factors``).
    means : Tensor of shape (R, K, D)
    """

    factors: Tensor
    constant: Tensor
    means: Tensor


def _block(size: int) -> int:
    return max(16, 1 << max(0, math.ceil(math.log2(max(1, size)))))


def warps(block_features: int) -> int:
    """Warps per program: 8 from 64 (padded) features on, where 4 warps spill the ``D x D`` tiles to local memory
    (``python -m bench.compile_check``: 2000 B per thread at D=64 with 4 warps, none with 8)."""
    return 8 if block_features >= 64 else 4


if triton is not None:

    @triton.jit
    def _log_sum_exp_step(top, total, log_prob):
        # online log-sum-exp over blocks of components: the running maximum and the sum scaled by it, per row,
        # updated with a block ``log_prob [rows, components]``; the old sum is rescaled when the maximum grows
        new_top = tl.maximum(top, tl.max(log_prob, 1))
        return new_top, total * tl.exp(top - new_top) + tl.sum(tl.exp(log_prob - new_top[:, None]), 1)

    @triton.jit
    def _full_norm(
        X, P, C, M, LSE, n, D: tl.constexpr, K: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, TF32: tl.constexpr
    ):
        # log sum_k exp(c_k - |(x - mu_k) P_k|^2 / 2) of BN rows and one restart
        block = tl.program_id(0)
        r = tl.program_id(1)
        rows = block * BN + tl.arange(0, BN)
        cols = tl.arange(0, BD)
        row_ok = rows < n
        col_ok = cols < D
        x = tl.load(X + rows[:, None] * D + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        top = tl.full([BN], float("-inf"), tl.float32)
        total = tl.zeros([BN], tl.float32)
        for k in range(K):
            base = r * K + k
            factor = tl.load(
                P + base * D * D + cols[:, None] * D + cols[None, :], mask=col_ok[:, None] & col_ok[None, :], other=0.0
            )
            mean = tl.load(M + base * D + cols, mask=col_ok, other=0.0)
            centred = tl.where(col_ok[None, :], x - mean[None, :], 0.0)
            if TF32:
                y = tl.dot(centred, factor, input_precision="tf32")
            else:
                y = tl.dot(centred, factor, input_precision="ieee")
            log_prob = tl.load(C + base) - 0.5 * tl.sum(y * y, 1)
            top, total = _log_sum_exp_step(top, total, log_prob[:, None])
        tl.store(LSE + r * n + rows, top + tl.log(total), mask=row_ok)

    @triton.jit
    def _full_stats(
        X,
        P,
        C,
        M,
        LSE,
        NK,
        S1,
        S2,
        n,
        segment_rows,
        D: tl.constexpr,
        K: tl.constexpr,
        BN: tl.constexpr,
        BD: tl.constexpr,
        TF32: tl.constexpr,
    ):
        # one component of one restart over one segment of rows: N_k, sum r (x - mu), sum r y y^T (y whitened)
        segment = tl.program_id(0)
        base = tl.program_id(1)  # r * K + k
        r = base // K
        cols = tl.arange(0, BD)
        col_ok = cols < D
        factor = tl.load(
            P + base * D * D + cols[:, None] * D + cols[None, :], mask=col_ok[:, None] & col_ok[None, :], other=0.0
        )
        mean = tl.load(M + base * D + cols, mask=col_ok, other=0.0)
        constant = tl.load(C + base)
        nk = tl.zeros([1], tl.float32)
        s1 = tl.zeros([BD], tl.float32)
        s2 = tl.zeros([BD, BD], tl.float32)
        start = segment * segment_rows
        stop = tl.minimum(start + segment_rows, n)
        for first in range(start, stop, BN):
            rows = first + tl.arange(0, BN)
            row_ok = rows < stop
            x = tl.load(X + rows[:, None] * D + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            centred = tl.where(row_ok[:, None] & col_ok[None, :], x - mean[None, :], 0.0)
            if TF32:
                y = tl.dot(centred, factor, input_precision="tf32")
            else:
                y = tl.dot(centred, factor, input_precision="ieee")
            lse = tl.load(LSE + r * n + rows, mask=row_ok, other=0.0)
            resp = tl.where(row_ok, tl.exp(constant - 0.5 * tl.sum(y * y, 1) - lse), 0.0)
            nk += tl.sum(resp, 0)
            s1 += tl.sum(resp[:, None] * centred, 0)
            weighted = y * tl.sqrt(resp)[:, None]
            # the scatter's product in full float32 whatever the densities used: it is the M-step's input
            s2 += tl.dot(tl.trans(weighted), weighted, input_precision="ieee")
        out = segment * tl.num_programs(1) + base
        tl.store(NK + out + tl.arange(0, 1), nk)
        tl.store(S1 + out * D + cols, s1, mask=col_ok)
        tl.store(S2 + out * D * D + cols[:, None] * D + cols[None, :], s2, mask=col_ok[:, None] & col_ok[None, :])

    @triton.jit
    def _expanded_log_prob(
        x,
        squares,
        W,
        r,
        k0,
        F: tl.constexpr,
        K: tl.constexpr,
        D: tl.constexpr,
        Q: tl.constexpr,
        BD: tl.constexpr,
        BK: tl.constexpr,
    ):
        # features(x) @ W[r, :, k0:k0+BK] for diag (Q = D, q(x) = x^2) and spherical (Q = 1, q(x) = |x|^2)
        cols = tl.arange(0, BD)
        comps = k0 + tl.arange(0, BK)
        col_ok = cols < D
        comp_ok = comps < K
        w_base = W + r * F * K
        w_mask = col_ok[:, None] & comp_ok[None, :]
        linear = tl.load(w_base + (Q + cols[:, None]) * K + comps[None, :], mask=w_mask, other=0.0)
        constant = tl.load(w_base + (Q + D) * K + comps, mask=comp_ok, other=0.0)
        log_prob = tl.dot(x, linear, input_precision="ieee") + constant[None, :]
        if Q == 1:
            quad = tl.load(w_base + comps, mask=comp_ok, other=0.0)
            log_prob += tl.sum(squares, 1)[:, None] * quad[None, :]
        else:
            quad = tl.load(w_base + cols[:, None] * K + comps[None, :], mask=w_mask, other=0.0)
            log_prob += tl.dot(squares, quad, input_precision="ieee")
        return tl.where(comp_ok[None, :], log_prob, float("-inf"))

    @triton.jit
    def _expanded_norm(
        X,
        W,
        LSE,
        n,
        F: tl.constexpr,
        K: tl.constexpr,
        D: tl.constexpr,
        Q: tl.constexpr,
        BN: tl.constexpr,
        BD: tl.constexpr,
        BK: tl.constexpr,
    ):
        block = tl.program_id(0)
        r = tl.program_id(1)
        rows = block * BN + tl.arange(0, BN)
        cols = tl.arange(0, BD)
        row_ok = rows < n
        x = tl.load(X + rows[:, None] * D + cols[None, :], mask=row_ok[:, None] & (cols < D)[None, :], other=0.0)
        squares = x * x
        top = tl.full([BN], float("-inf"), tl.float32)
        total = tl.zeros([BN], tl.float32)
        for k0 in range(0, K, BK):
            log_prob = _expanded_log_prob(x, squares, W, r, k0, F, K, D, Q, BD, BK)
            top, total = _log_sum_exp_step(top, total, log_prob)
        tl.store(LSE + r * n + rows, top + tl.log(total), mask=row_ok)

    @triton.jit
    def _expanded_stats(
        X,
        W,
        LSE,
        NK,
        S1,
        S2,
        n,
        segment_rows,
        F: tl.constexpr,
        K: tl.constexpr,
        D: tl.constexpr,
        Q: tl.constexpr,
        BN: tl.constexpr,
        BD: tl.constexpr,
        BK: tl.constexpr,
    ):
        # a block of BK components of one restart over one segment: N_k, sum r x, sum r q(x) (raw moments)
        segment = tl.program_id(0)
        r = tl.program_id(1)
        k0 = tl.program_id(2) * BK
        cols = tl.arange(0, BD)
        comps = k0 + tl.arange(0, BK)
        col_ok = cols < D
        comp_ok = comps < K
        nk = tl.zeros([BK], tl.float32)
        s1 = tl.zeros([BK, BD], tl.float32)
        s2 = tl.zeros([BK, BD], tl.float32)
        s2_sph = tl.zeros([BK], tl.float32)
        start = segment * segment_rows
        stop = tl.minimum(start + segment_rows, n)
        for first in range(start, stop, BN):
            rows = first + tl.arange(0, BN)
            row_ok = rows < stop
            x = tl.load(X + rows[:, None] * D + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            squares = x * x
            log_prob = _expanded_log_prob(x, squares, W, r, k0, F, K, D, Q, BD, BK)
            lse = tl.load(LSE + r * n + rows, mask=row_ok, other=0.0)
            resp = tl.where(row_ok[:, None] & comp_ok[None, :], tl.exp(log_prob - lse[:, None]), 0.0)
            nk += tl.sum(resp, 0)
            s1 += tl.dot(tl.trans(resp), x, input_precision="ieee")
            if Q == 1:
                s2_sph += tl.sum(resp * tl.sum(squares, 1)[:, None], 0)
            else:
                s2 += tl.dot(tl.trans(resp), squares, input_precision="ieee")
        out = (segment * tl.num_programs(1) + r) * K + comps
        tl.store(NK + out, nk, mask=comp_ok)
        tl.store(S1 + out[:, None] * D + cols[None, :], s1, mask=comp_ok[:, None] & col_ok[None, :])
        if Q == 1:
            tl.store(S2 + out, s2_sph, mask=comp_ok)
        else:
            tl.store(S2 + out[:, None] * D + cols[None, :], s2, mask=comp_ok[:, None] & col_ok[None, :])


class FusedKernel(Kernel):
    """The fused Triton E-step of one covariance type (see the module docstring).

    Its statistics are those of the torch kernel of the same type (whitened scatter for full and tied, raw
    moments for diag and spherical), so that kernel's :meth:`finish` maps them back.
    """

    def __init__(self, covariance: CovarianceType) -> None:
        super().__init__(covariance)
        self.reference = WhitenedKernel(covariance) if covariance.triangular else ExpandedKernel(covariance)

    def elements_per_row(self, n_restarts, n_components, n_features):
        # the rows themselves and their normalisers: nothing scales with K * D
        return n_features + n_restarts

    def prepare(self, weights, means, precisions_cholesky) -> PreparedFused:
        R, K, D = means.shape
        if self.covariance.triangular:
            factors = precisions_cholesky.expand(R, K, D, D).contiguous()
            log_det = torch.log(torch.diagonal(factors, dim1=-2, dim2=-1)).sum(-1)
            constant = (-0.5 * D * math.log(2 * math.pi) + log_det + torch.log(weights)).contiguous()
        else:
            factors = self.covariance.density_weights(means, precisions_cholesky, torch.log(weights)).contiguous()
            constant = torch.zeros(R, K, dtype=means.dtype, device=means.device)
        return PreparedFused(factors, constant, means.contiguous())

    def accumulate(self, X, prepared: PreparedFused, into, weights=None):
        if X.dtype != torch.float32:
            raise TypeError(f"the fused Triton E-step computes in float32, not {X.dtype}")
        if weights is not None:  # passes.choose_kernel takes the torch kernels for weighted passes
            raise TypeError("the fused Triton E-step has no row weights")
        X = X.contiguous()
        n, D = X.shape
        R, K, _ = prepared.means.shape
        if n == 0:
            return
        BD = _block(D)
        num_warps = warps(BD)
        # fewer rows per program where the per-row tiles are wide (registers), at least 16 (tensor cores)
        BN = 16 if interpreted() else max(16, min(128, 8192 // BD))
        lse = torch.empty(R, n, dtype=torch.float32, device=X.device)
        per_program = R * (K if self.covariance.triangular else triton.cdiv(K, 16))
        enough = min(triton.cdiv(n, _MIN_SEGMENT_ROWS), triton.cdiv(_PROGRAMS, per_program))  # to fill the GPU
        segments = max(triton.cdiv(n, FLUSH_ROWS), enough)
        segment_rows = triton.cdiv(triton.cdiv(n, segments), BN) * BN
        segments = triton.cdiv(n, segment_rows)
        f32 = dict(dtype=torch.float32, device=X.device)
        if self.covariance.triangular:
            tf32 = torch.get_float32_matmul_precision() != "highest" and X.is_cuda
            _full_norm[(triton.cdiv(n, BN), R)](
                X, prepared.factors, prepared.constant, prepared.means, lse, n, D, K, BN, BD, tf32, num_warps=num_warps
            )
            nk = torch.empty(segments, R, K, **f32)
            s1 = torch.empty(segments, R, K, D, **f32)
            s2 = torch.empty(segments, R, K, D, D, **f32)
            _full_stats[(segments, R * K)](
                X,
                prepared.factors,
                prepared.constant,
                prepared.means,
                lse,
                nk,
                s1,
                s2,
                n,
                segment_rows,
                D,
                K,
                BN,
                BD,
                tf32,
                num_warps=num_warps,
            )
            s2 = s2.sum(0, dtype=torch.float64)
            if not self.covariance.per_component:
                s2 = s2.sum(1, keepdim=True)
        else:
            F = prepared.factors.shape[1]
            Q = F - D - 1
            BK = 16
            _expanded_norm[(triton.cdiv(n, BN), R)](
                X, prepared.factors, lse, n, F, K, D, Q, BN, BD, BK, num_warps=num_warps
            )
            nk = torch.empty(segments, R, K, **f32)
            s1 = torch.empty(segments, R, K, D, **f32)
            s2 = torch.empty(segments, R, K, Q, **f32)
            _expanded_stats[(segments, R, triton.cdiv(K, BK))](
                X, prepared.factors, lse, nk, s1, s2, n, segment_rows, F, K, D, Q, BN, BD, BK, num_warps=num_warps
            )
            s2 = s2.sum(0, dtype=torch.float64)
        into.log_likelihood.add_(lse.sum(-1, dtype=into.log_likelihood.dtype))
        into.nk.add_(nk.sum(0, dtype=torch.float64).to(into.nk.dtype))
        into.s1.add_(s1.sum(0, dtype=torch.float64).to(into.s1.dtype))
        into.s2.add_(s2.to(into.s2.dtype))

    def finish(self, total: Statistics, means: Tensor, precisions_cholesky: Tensor) -> Statistics:
        return self.reference.finish(total, means, precisions_cholesky)


_KERNELS: dict[str, FusedKernel] = {}


def kernel_for(covariance: CovarianceType) -> FusedKernel:
    """The fused kernel of ``covariance``'s type (Triton must be installed: see :func:`available`)."""
    if triton is None:
        raise RuntimeError("the fused E-step needs Triton, which cannot be imported here")
    if covariance.name not in _KERNELS:
        _KERNELS[covariance.name] = FusedKernel(covariance)
    return _KERNELS[covariance.name]
