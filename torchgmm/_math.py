"""Elementwise helpers that keep the hot loops on fast paths."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _floor(dtype: torch.dtype) -> float:
    # log of the smallest normal number: below it exp() returns denormals or
    # zero through a slow path (10-25x slower on x86 for float32).
    return math.log(torch.finfo(dtype).tiny) + 1.0


def exp_(x: Tensor) -> Tensor:
    """In-place ``exp`` of log-values that flushes underflow to exact zeros quickly.

    Arguments below the log of the smallest normal number are clamped before
    ``exp`` (which then stays on its fast path) and their results set to 0, so
    an empty component still has exactly zero responsibility, as with a plain
    ``exp`` that underflows (denormal results of order 1e-38 or 1e-308 aside).
    """
    floor = _floor(x.dtype)
    return torch.nn.functional.threshold_(x.clamp_min_(floor).exp_(), 1.5 * math.exp(floor), 0.0)


def logsumexp(x: Tensor, dim: int) -> Tensor:
    """``log(sum(exp(x), dim))`` for finite ``x``, staying on the fast path of ``exp``."""
    top = x.amax(dim, keepdim=True)
    return exp_(x - top).sum(dim).log_().add_(top.squeeze(dim))


def normalise_(log_prob: Tensor) -> tuple[Tensor, Tensor]:
    """Responsibilities from weighted log-densities ``[..., K]``, with one ``exp``.

    Returns ``(log_prob_norm [...], resp [..., K])``; ``log_prob`` is overwritten.
    """
    top = log_prob.amax(-1, keepdim=True)
    resp = exp_(log_prob.sub_(top))
    total = resp.sum(-1, keepdim=True)
    resp.div_(total)
    return total.log_().add_(top).squeeze(-1), resp
