"""Split-and-merge moves (Ueda, Nakano, Ghahramani and Hinton, 2000) on a converged mixture.

Owns what ``strategy='split-merge'`` adds after EM has converged: the scores of the moves (one pass over the
data: how much two components' responsibilities overlap, how poorly the rows a component holds are explained),
the candidate moves of a round (merge the two components ``i, j`` whose rows overlap most into ``i``, and split
the worst-explained component ``k`` into ``k`` and the freed ``j``, so ``K`` stays fixed), their initial
parameters (one M-step of the moved responsibilities: ``r_i + r_j`` for the merge, ``r_k`` divided between the two
halves along ``k``'s principal axis for the split), and the rounds: the candidates of a round run as the restarts
of one batch, raced down to one (:class:`~torchgmm.trainer.Race`), which is kept only if its bound beats the
current one by more than ``tol``. Must not: validate input, warn, read files or checkpoint (a resumed fit
replays its moves: they are deterministic given the converged mixture).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from torchgmm.covariance import CovarianceType
from torchgmm.data import ScannedData
from torchgmm.em import ACCUMULATE_DTYPE, MixtureParameters, estimate_log_prob_resp
from torchgmm.mstep import RepairState, maximise
from torchgmm.passes import responsibility_overlaps, statistics_from_resp
from torchgmm.trainer import EMConfig, EMState, Race, run_em

__all__ = [
    "SplitMerge",
    "Move",
    "Round",
    "Moved",
    "split_order",
    "candidate_moves",
    "moved_parameters",
    "grown_parameters",
    "split_and_merge",
]


@dataclass(frozen=True)
class SplitMerge:
    """Settings of the moves.

    Attributes
    ----------
    candidates : int
        Moves tried per round, as restarts of one batch (raced down to one after two iterations).
    rounds : int
        Most rounds; they also stop at the first round whose best move does not raise the bound.
    """

    candidates: int
    rounds: int


@dataclass(frozen=True)
class Move:
    """Merge components ``merged`` (into its first) and split ``split`` into itself and ``merged[1]``; or, with
    ``merged`` None, split ``split`` into itself and a new last component (a mixture of ``K + 1``)."""

    merged: tuple[int, int] | None
    split: int


class Round(NamedTuple):
    """One round of moves: its best move, the bound before and after it, and whether it was kept.

    The fitted ``split_merge_rounds_`` attribute lists them (``merged``: the two components merged into the
    first; ``split``: the one split into itself and ``merged[1]``; indices before the move). ``cost``: the
    round's compute in restart-iterations (E-step passes times restarts: every candidate's iterations, plus
    one for the scores and one per candidate for its moved M-step).
    """

    merged: tuple[int, int]
    split: int
    lower_bound_before: float
    lower_bound_after: float
    kept: bool
    cost: int


class Moved(NamedTuple):
    """What the rounds give: the last kept round's batch (None if no move was kept) and its kept restart, the
    kept rounds' bounds after every iteration, their iterations, and every round's outcome."""

    state: EMState | None
    kept: int
    lower_bounds: list[float]
    n_iter: int
    rounds: list[Round]


def split_order(overlap: Tensor, fit: Tensor) -> list[int]:
    """Components from the worst-explained to the best: by the mean log-likelihood of the rows each holds
    (``fit / sum_n r_nk``, lowest first; ties: the lower index). ``overlap [K, K]``, ``fit [K]``."""
    mass = overlap.sum(-1).clamp_min(1e-300)  # sum_l sum_n r_nk r_nl = sum_n r_nk
    worst_fit = (fit / mass).tolist()
    return sorted(range(overlap.shape[-1]), key=lambda k: (worst_fit[k], k))


def candidate_moves(overlap: Tensor, fit: Tensor, count: int) -> list[Move]:
    """The ``count`` most promising moves of one mixture, from :func:`torchgmm.passes.responsibility_overlaps`.

    Merges are ranked by the cosine between the components' responsibility vectors, splits by the mean
    log-likelihood of the rows a component holds (lowest first); a move pairs a merge with a split of a third
    component, and moves are taken in the order of the sum of the two ranks (ties: the merge's rank first).
    ``overlap [K, K]``, ``fit [K]``; no moves with fewer than three components.
    """
    K = overlap.shape[-1]
    if K < 3 or count < 1:
        return []
    norms = overlap.diagonal().clamp_min(1e-300).sqrt()
    cosine = (overlap / (norms.unsqueeze(0) * norms.unsqueeze(1))).tolist()
    pairs = sorted(itertools.combinations(range(K), 2), key=lambda p: (-cosine[p[0]][p[1]], p))
    splits = split_order(overlap, fit)
    ranked = []
    for a, (i, j) in enumerate(pairs):
        for b, k in enumerate(splits):
            if k not in (i, j):
                ranked.append((a + b, a, Move((i, j), k)))
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [move for *_, move in ranked[:count]]


def moved_parameters(
    data: ScannedData,
    params: MixtureParameters,
    moves: list[Move],
    covariance: CovarianceType,
    repairs: RepairState,
    rows: int | None = None,
) -> tuple[MixtureParameters, list[bool]]:
    """Initial parameters of each move (one restart each) from one mixture ``params`` (one restart).

    One pass: the mixture's responsibilities of each tile, moved (merge: ``r_i + r_j``; split: ``r_k`` of the
    rows on either side of ``k``'s mean along its principal axis), then one M-step with ``repairs`` (of
    ``len(moves)`` restarts). Moves that grow the mixture (``merged`` None, all of them) give ``K + 1``
    components, the new one last. Returns the parameters (float64) and whether each move's M-step worked.
    """
    C, (K, D) = len(moves), params.means.shape[1:]
    grow = moves[0].merged is None
    out_k = K + 1 if grow else K
    params64 = params.map(lambda t: t.to(ACCUMULATE_DTYPE))
    variances = params64.covariances[0]
    axes = torch.stack(
        [covariance.principal_axis(variances[m.split if covariance.per_component else 0], D) for m in moves]
    )
    centre = torch.cat([params64.means, params64.means[:, :1]], 1) if grow else params64.means
    centre = centre.expand(C, out_k, D).clone()
    for c, m in enumerate(moves):
        centre[c, K if grow else m.merged[1]] = params64.means[0, m.split]

    def resp_fn(start: int, x: Tensor) -> Tensor:
        x = x.to(ACCUMULATE_DTYPE)
        resp = estimate_log_prob_resp(x, params64, covariance)[1][0].exp_()  # [n, K]
        if grow:
            resp = torch.cat([resp, resp.new_zeros(resp.shape[0], 1)], 1)
        out = resp.expand(C, *resp.shape).clone()
        for c, m in enumerate(moves):
            side = ((x - params64.means[0, m.split]) @ axes[c]) > 0
            if grow:
                j = K
            else:
                i, j = m.merged
                out[c, :, i] += resp[:, j]
            out[c, :, j] = torch.where(side, resp[:, m.split], 0.0)
            out[c, :, m.split] = torch.where(side, 0.0, resp[:, m.split])
        return out

    stats = statistics_from_resp(data, resp_fn, centre, covariance, rows)
    restarts = torch.arange(C, device=centre.device)
    step = maximise(stats, centre, covariance, repairs, restarts, data.dtype, iteration=0)
    return step.params, step.ok


def grown_parameters(
    data: ScannedData, params: MixtureParameters, count: int, covariance: CovarianceType, reg_covar: float
) -> tuple[MixtureParameters, list[bool], RepairState]:
    """``count`` starts of ``K + 1`` components from a fitted mixture of ``K`` (one restart, compute dtype).

    Restart ``c`` splits the ``c``-th worst-explained component (:func:`split_order`; cycling when ``count``
    exceeds ``K``) into two halves along its principal axis, the new one last (:func:`moved_parameters`). Two
    passes. Returns the parameters in the compute dtype, whether each M-step worked, and their repairs.
    """
    overlap, fit = responsibility_overlaps(data, params, covariance)
    order = split_order(overlap[0], fit[0])
    moves = [Move(None, order[c % len(order)]) for c in range(count)]
    repairs = RepairState.start(count, params.means.shape[1] + 1, covariance, reg_covar, params.means.device)
    start, ok = moved_parameters(data, params, moves, covariance, repairs)
    return start.map(lambda t: t.to(params.means.dtype)), ok, repairs


def split_and_merge(
    data: ScannedData,
    params: MixtureParameters,
    lower_bound: float,
    settings: SplitMerge,
    config: EMConfig,
    reg_covar: float,
) -> Moved:
    """Rounds of moves from the converged mixture ``params`` (one restart, compute dtype) and its bound.

    Each round: the scores (one pass), the moves' initial parameters (one pass), then EM on the moves as one
    batch, raced down to one after two iterations (``config``'s tolerance and ``max_iter``), and kept if its
    bound beats the current one by more than ``config.tol``.
    """
    covariance, dtype, device = config.covariance, params.means.dtype, params.means.device
    K = params.means.shape[1]
    em = EMConfig(covariance, config.tol, config.max_iter, config.rows, Race(first_cut=2, survivors=1))
    kept_state, kept, history, n_iter, rounds = None, 0, [], 0, []
    current, bound = params, lower_bound
    for _ in range(settings.rounds):
        overlap, fit = responsibility_overlaps(data, current, covariance)
        moves = candidate_moves(overlap[0], fit[0], settings.candidates)
        if not moves:
            break
        repairs = RepairState.start(len(moves), K, covariance, reg_covar, device)
        start, ok = moved_parameters(data, current, moves, covariance, repairs)
        state = run_em(data, EMState.start(start.map(lambda t: t.to(dtype)), repairs, ok), em)
        best = state.best()
        if best is None:
            break
        after = state.lower_bound[best]
        better = math.isfinite(after) and after > bound + config.tol
        cost = sum(state.n_iter) + len(moves) + 1
        rounds.append(Round(moves[best].merged, moves[best].split, bound, after, better, cost))
        if not better:
            break
        kept_state, kept = state, best
        history, n_iter = history + state.lower_bounds[best], n_iter + state.n_iter[best]
        current, bound = state.params.select(torch.tensor([best], device=device)), after
    return Moved(kept_state, kept, history, n_iter, rounds)
