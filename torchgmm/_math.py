"""Elementwise helpers that keep the hot loops on fast paths.

Owns: ``exp``, ``sqrt`` and log-sum-exp that keep zeros and underflow off the CPU's slow paths, the
normalisation of responsibilities from weighted log-densities (also tempered, for annealing), and the scoped
float32 matmul precision.
Must not: know mixtures, shapes beyond a last axis of components, or anything else in torchgmm.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor


def _floor(dtype: torch.dtype) -> float:
    # log of the smallest normal number: below it exp() returns denormals or
    # zero through a slow path (10-25x slower on x86 for float32).
    return math.log(torch.finfo(dtype).tiny) + 1.0


def exp_(x: Tensor, headroom: float = 1.0) -> Tensor:
    """In-place ``exp`` of log-values that flushes underflow to exact zeros quickly.

    Arguments below the log of the smallest normal number are clamped before
    ``exp`` (which then stays on its fast path) and their results set to 0, so
    an empty component still has exactly zero responsibility, as with a plain
    ``exp`` that underflows (denormal results of order 1e-38 or 1e-308 aside).
    ``headroom``: results are also zero below ``headroom`` times the smallest normal number, so
    that dividing them by up to ``headroom`` leaves no denormals (``sqrt`` and products of
    denormals take the same slow path, 10-50x slower).
    """
    floor = _floor(x.dtype) + math.log(headroom)
    return torch.nn.functional.threshold_(x.clamp_min_(floor).exp_(), 1.5 * math.exp(floor), 0.0)


def sqrt_(x: Tensor) -> Tensor:
    """In-place square root of non-negative values, with zeros kept exact and off the slow path.

    ``sqrt(0)`` takes a slow path on some x86 CPUs (measured 4x slower per call on responsibilities that are
    mostly zeros, see bench/NOTES.md): zeros are raised to the smallest normal number first and set back to
    exact zeros afterwards (any normal input keeps its root).
    """
    tiny = torch.finfo(x.dtype).tiny
    return torch.nn.functional.threshold_(x.clamp_min_(tiny).sqrt_(), 1.5 * math.sqrt(tiny), 0.0)


def logsumexp(x: Tensor, dim: int) -> Tensor:
    """``log(sum(exp(x), dim))`` for finite ``x``, staying on the fast path of ``exp``."""
    top = x.amax(dim, keepdim=True)
    return exp_(x - top).sum(dim).log_().add_(top.squeeze(dim))


def normalise_(log_prob: Tensor) -> tuple[Tensor, Tensor]:
    """Responsibilities from weighted log-densities ``[..., K]``, with one ``exp``.

    Returns ``(log_prob_norm [...], resp [..., K])``; ``log_prob`` may be overwritten.
    """
    if log_prob.is_cuda:
        # GPUs have no slow underflow path: one fused softmax, and the normaliser from
        # its largest entry (>= 1/K, so its log is exact): lse = log_prob[m] - log resp[m].
        resp = torch.softmax(log_prob, -1)
        top, index = resp.max(-1, keepdim=True)
        return log_prob.gather(-1, index).sub_(top.log_()).squeeze(-1), resp
    top = log_prob.amax(-1, keepdim=True)
    resp = exp_(log_prob.sub_(top), headroom=log_prob.shape[-1])  # the total is at most K
    total = resp.sum(-1, keepdim=True)
    resp.div_(total)
    return total.log_().add_(top).squeeze(-1), resp


def tempered_(log_prob: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """The log-likelihood of weighted log-densities ``[..., n, K]`` and responsibilities at inverse temperature
    ``beta`` (broadcasting against them, e.g. ``[R, 1, 1]``): ``resp`` proportional to ``exp(beta log_prob)``.

    Returns ``(log_prob_norm [..., n], resp [..., n, K])``: the normaliser is the untempered one (the true
    log-likelihood), the responsibilities are the tempered ones. ``log_prob`` is overwritten. One ``exp`` more
    than :func:`normalise_`.
    """
    log_prob_norm = logsumexp(log_prob, -1)
    return log_prob_norm, normalise_(log_prob.mul_(beta))[1]


MATMUL_PRECISIONS = ("highest", "high", "medium")


@contextlib.contextmanager
def matmul_precision(precision: str | None, applies: bool = True) -> Iterator[None]:
    """Run the block under ``torch.set_float32_matmul_precision(precision)``, then restore it.

    ``None`` (or ``applies=False``, after the value is checked) leaves torch's
    setting alone. ``'high'`` lets float32 products use TF32 on CUDA (about 3e-4
    relative error per product instead of 1e-7, several times faster on Ampere
    and later); float64 is never affected.
    """
    if precision is not None and precision not in MATMUL_PRECISIONS:
        raise ValueError(
            f"Invalid value for 'matmul_precision': {precision!r}. It must be None or one of {list(MATMUL_PRECISIONS)}."
        )
    if precision is None or not applies:
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
