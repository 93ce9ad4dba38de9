"""Initialisation of ``R`` restarts at once, on the compute device.

Owns: the ``init_params`` methods (seeding on a sample of the rows, k-means++ and Lloyd iterations, random
responsibilities, random rows) and the initial M-step. Must not: run EM, read the data other than through
its passes, or draw anything per row that depends on chunking or the number of ranks.

Each method yields initial responsibilities (as a function of a chunk) and
the means to centre the statistics on; one pass of
:func:`~torchgmm.passes.statistics_from_resp` and an M-step then give the
initial parameters, as in scikit-learn:

``kmeans``
    k-means++ seeds refined by batched Lloyd iterations; hard labels. With ``init_whiten``, on whitened rows.
``k-means++``
    Greedy k-means++ seeds; each seed is one component (one-point responsibilities).
``random``
    Uniform random responsibilities, normalised per row.
``random_from_data``
    ``K`` distinct rows drawn uniformly; each is one component.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from torchgmm import distributed
from torchgmm.covariance import CovarianceType
from torchgmm.data import ScannedData, uniform_hash
from torchgmm.em import MixtureParameters, Statistics
from torchgmm.mstep import EMPTY_MASS, RepairState, maximise
from torchgmm.passes import chunk_rows, statistics_from_resp

__all__ = ["INIT_METHODS", "initialize", "kmeans_plusplus", "kmeans", "squared_distances", "whitening"]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")

# k-means++ seeding looks at a uniform sample of at most this many
# (row x restart x trial) distances per step; see kmeans_plusplus.
_SEEDING_BUDGET = 1 << 23
_SEEDING_ROWS = 1 << 17


def squared_distances(X: Tensor, centres: Tensor) -> Tensor:
    """``|x - c|^2`` for rows ``X [N, D]`` and ``centres [..., K, D]``: ``[..., N, K]``."""
    sq = (centres * centres).sum(-1).unsqueeze(-2) - 2.0 * X @ centres.mT
    return (sq + (X * X).sum(-1).unsqueeze(-1)).clamp_min_(0.0)


def kmeans_plusplus(X: Tensor, n_clusters: int, n_restarts: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding, batched over restarts.

    Each new seed is the best of ``2 + log(K)`` candidates drawn with
    probability proportional to the squared distance to the closest seed so
    far (Arthur and Vassilvitskii 2007; the greedy variant scikit-learn uses).

    Parameters
    ----------
    X : Tensor of shape (M, D)
    n_clusters, n_restarts : int
    generator : torch.Generator
        On the device of ``X``.

    Returns
    -------
    Tensor of shape (R, K), int64
        Row indices of the seeds in ``X``.
    """
    M = X.shape[0]
    R, K = n_restarts, n_clusters
    n_trials = 2 + int(math.log(K))
    device = X.device
    rows = torch.arange(R, device=device)
    indices = torch.empty(R, K, dtype=torch.long, device=device)
    indices[:, 0] = torch.randint(M, (R,), generator=generator, device=device)
    closest = squared_distances(X, X[indices[:, 0]].unsqueeze(1)).squeeze(-1)  # [R, M]
    for c in range(1, K):
        cumulative = closest.to(torch.float64).cumsum(-1)
        targets = torch.rand(R, n_trials, generator=generator, device=device, dtype=torch.float64)
        targets = targets * cumulative[:, -1:]
        candidates = torch.searchsorted(cumulative, targets, right=True).clamp_max_(M - 1)
        dist = squared_distances(X, X[candidates]).mT  # [R, T, M]
        dist = torch.minimum(dist, closest.unsqueeze(1))
        best = dist.to(torch.float64).sum(-1).argmin(-1)  # [R]
        closest = dist[rows, best]
        indices[:, c] = candidates[rows, best]
    return indices


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def _sample(data: ScannedData, n_clusters: int, n_restarts: int, generator: torch.Generator) -> Tensor:
    """A uniform sample of the rows for seeding (all of them when the data are small)."""
    n_trials = 2 + int(math.log(n_clusters))
    size = max(min(_SEEDING_BUDGET // (n_restarts * n_trials), _SEEDING_ROWS), 32 * n_clusters)
    return data.sample(size, _draw_seed(generator))


def _seed(data: ScannedData, n_clusters: int, n_restarts: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeds ``[R, K, D]``, on a uniform sample of the rows when the data are large."""
    X = _sample(data, n_clusters, n_restarts, generator)
    return X[kmeans_plusplus(X, n_clusters, n_restarts, generator)]


def kmeans(
    data: ScannedData, centres: Tensor, max_iter: int = 100, tol: float = 1e-4, rows: int | None = None
) -> Tensor:
    """Batched Lloyd iterations from ``centres [R, K, D]``; returns the final centres.

    Stops when every restart moved its centres by at most ``tol`` times the
    mean feature variance (squared Frobenius norm, scikit-learn's rule).
    An emptied cluster is moved to the row farthest from its centre.
    """
    R, K, D = centres.shape
    rows = chunk_rows(data.n_samples, 2 * R * K + D, data.device, rows)
    variance = torch.zeros(D, dtype=torch.float64, device=data.device)
    for start, x in data.chunks(rows):
        squares = x.to(torch.float64) ** 2
        w = data.weights_of(start, x.shape[0])
        variance += (squares if w is None else w.unsqueeze(-1) * squares).sum(0)
    distributed.all_reduce_(variance)
    # data are centred on their (unweighted) mean, so this is about the mean variance
    tol_abs = float(variance.mean()) / data.total_weight * tol
    for _ in range(max_iter):
        sums = torch.zeros(R, K, D, dtype=torch.float64, device=data.device)
        counts = torch.zeros(R, K, dtype=torch.float64, device=data.device)
        for start, x in data.chunks(rows):
            onehot = F.one_hot(squared_distances(x, centres).argmin(-1), K).to(x.dtype)
            w = data.weights_of(start, x.shape[0])
            if w is not None:  # weighted Lloyd: a row of weight w counts w times
                onehot = onehot * w.to(x.dtype).view(1, -1, 1)
            sums += (onehot.mT @ x).to(torch.float64)
            counts += onehot.sum(1).to(torch.float64)
        distributed.all_reduce_(sums, counts)
        new = (sums / counts.clamp_min(1).unsqueeze(-1)).to(centres.dtype)
        empty = counts == 0
        if bool(empty.any()):
            new = _relocate_empty(data, new, empty, rows)
        moved = ((new - centres) ** 2).sum((1, 2))
        centres = new
        if bool((moved <= tol_abs).all()):
            break
    return centres


def _relocate_empty(data: ScannedData, centres: Tensor, empty: Tensor, rows: int) -> Tensor:
    """Move each empty cluster onto one of the rows farthest from their closest centre."""
    R, K, D = centres.shape
    # -1 marks "no row": a shard with fewer than K rows pads its candidates
    best_dist = torch.full((R, K), -1.0, dtype=centres.dtype, device=centres.device)
    best_rows = torch.zeros(R, K, D, dtype=centres.dtype, device=centres.device)

    def keep_farthest(dist: Tensor, rows_: Tensor) -> tuple[Tensor, Tensor]:
        keep = dist.topk(K, dim=-1).indices
        return dist.gather(1, keep), rows_.gather(1, keep.unsqueeze(-1).expand(-1, -1, D))

    for start, x in data.chunks(rows):
        dist = squared_distances(x, centres).min(-1).values  # [R, n]
        w = data.weights_of(start, x.shape[0])
        if w is not None:  # a row of weight zero is not data: never a centre
            dist = torch.where(w > 0, dist, -1.0)
        top = dist.topk(min(K, dist.shape[1]), dim=-1)
        best_dist, best_rows = keep_farthest(
            torch.cat([best_dist, top.values], 1), torch.cat([best_rows, x[top.indices]], 1)
        )
    if distributed.is_distributed():
        best_dist, best_rows = keep_farthest(
            torch.cat(distributed.all_gather_tensors(best_dist), 1),
            torch.cat(distributed.all_gather_tensors(best_rows), 1),
        )
    # the j-th empty cluster of a restart takes its j-th farthest row
    rank = (empty.cumsum(-1) - 1).clamp(0, K - 1)
    far = best_rows.gather(1, rank.unsqueeze(-1).expand(-1, -1, D))
    return torch.where(empty.unsqueeze(-1), far, centres)


class _Whitened:
    """The rows of ``data`` (centred on their mean) times ``W``, with the parts of ScannedData k-means reads."""

    def __init__(self, data: ScannedData, W: Tensor) -> None:
        self.data, self.W = data, W
        self.n_samples, self.n_features, self.device, self.dtype = data.n_samples, W.shape[1], data.device, data.dtype
        self.weights, self.total_weight = data.weights, data.total_weight

    def weights_of(self, start: int, n: int) -> Tensor | None:
        return self.data.weights_of(start, n)

    def chunks(self, rows: int):
        for start, x in self.data.chunks(rows):
            yield start, x @ self.W

    def sample(self, size: int, seed: int) -> Tensor:
        return self.data.sample(size, seed) @ self.W


def whitening(data: ScannedData, rows: int | None = None) -> tuple[Tensor, Tensor]:
    """``(W, W_inv)`` with ``x W`` of identity covariance: ``W = L^-T`` for the rows' covariance ``L L^T``.

    One pass in float64 (summed over ranks). A ridge of ``1e-10`` of the mean variance keeps constant or
    collinear features from making it singular: they stay (nearly) constant after whitening.
    """
    D = data.n_features
    rows = chunk_rows(data.n_samples, D, data.device, rows)
    scatter = torch.zeros(D, D, dtype=torch.float64, device=data.device)
    for start, x in data.chunks(rows):
        x = x.to(torch.float64)
        w = data.weights_of(start, x.shape[0])
        scatter += x.mT @ (x if w is None else w.unsqueeze(-1) * x)
    distributed.all_reduce_(scatter)
    covariance = scatter / data.total_weight  # about the (unweighted) mean: whitening only needs a scale
    ridge = 1e-10 * float(covariance.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny))
    eye = torch.eye(D, dtype=torch.float64, device=data.device)
    L = torch.linalg.cholesky(covariance + ridge * eye)
    W = torch.linalg.solve_triangular(L, eye, upper=False).mT
    return W.to(data.dtype), L.mT.to(data.dtype)


def initial_responsibilities(
    method: str,
    data: ScannedData,
    n_components: int,
    n_restarts: int,
    generator: torch.Generator,
    rows: int | None = None,
    whiten: bool = False,
) -> tuple[Callable[[int, Tensor], Tensor] | None, Tensor]:
    """Initial responsibilities of ``method`` and the centre for their statistics.

    Returns ``(resp_fn, centre)``; ``resp_fn`` is None when every component is
    a single row (``k-means++`` and ``random_from_data``), whose statistics
    about that row are known without a pass over the data. Everything drawn
    per row is a function of the seed and the row's global index, so the
    result does not depend on chunk sizes or the number of ranks.

    ``whiten``: ``kmeans`` and ``k-means++`` measure distances between whitened rows (:func:`whitening`), so
    that neither the features' units nor a strongly elongated data cloud decide the clusters; the centres
    are mapped back to the data's coordinates.
    """
    R, K, D = n_restarts, n_components, data.n_features
    device, dtype = data.device, data.dtype
    if whiten and method in ("kmeans", "k-means++"):
        W, W_inv = whitening(data, rows)
        view = _Whitened(data, W)
        if method == "k-means++":
            return None, _seed(view, K, R, generator) @ W_inv
        white = kmeans(view, _seed(view, K, R, generator), rows=rows)

        def whitened_labels(start: int, x: Tensor) -> Tensor:
            return F.one_hot(squared_distances(x @ W, white).argmin(-1), K).to(x.dtype)

        return whitened_labels, white @ W_inv
    if method == "kmeans":
        centres = kmeans(data, _seed(data, K, R, generator), rows=rows)
        return lambda start, x: F.one_hot(squared_distances(x, centres).argmin(-1), K).to(x.dtype), centres
    if method == "k-means++":
        return None, _seed(data, K, R, generator)
    if method == "random_from_data":
        X = _sample(data, K, R, generator)
        picks = torch.stack([torch.randperm(X.shape[0], generator=generator, device=device)[:K] for _ in range(R)])
        return None, X[picks]
    if method == "random":
        seed = _draw_seed(generator)
        cells = torch.arange(R * K, device=device).view(R, 1, K)

        def random_resp(start: int, x: Tensor) -> Tensor:
            rows = torch.arange(start, start + x.shape[0], device=device).view(1, -1, 1)
            resp = uniform_hash(seed, rows * (R * K) + cells).to(dtype)
            return resp / resp.sum(-1, keepdim=True)

        # random responsibilities put every mean near the data mean, the origin here
        return random_resp, torch.zeros(R, K, D, dtype=dtype, device=device)
    raise ValueError(f"Invalid value for 'init_params': {method!r}. It must be one of {list(INIT_METHODS)}.")


def initialize(
    method: str,
    data: ScannedData,
    n_components: int,
    n_restarts: int,
    covariance: CovarianceType,
    generator: torch.Generator,
    state: RepairState,
    rows: int | None = None,
    covariances_used: bool = True,
    whiten: bool = False,
) -> tuple[MixtureParameters, list[bool]]:
    """Initial parameters of ``R`` restarts; returns ``(params, ok)``, ``ok`` one flag per restart.

    The M-step starts from ``state``'s ``reg_covar``; degenerate initial components are repaired as in EM
    (see :mod:`torchgmm.mstep`), recorded as iteration 0 in ``state``, and ``ok`` is False for restarts that
    could not be repaired. With ``covariances_used=False`` (the caller replaces them) nothing is repaired.
    ``whiten``: k-means on whitened rows (see :func:`initial_responsibilities`).
    """
    resp_fn, centre = initial_responsibilities(method, data, n_components, n_restarts, generator, rows, whiten)
    if resp_fn is None:
        # One row per component: nk = 1 and zero scatter about that row.
        R, K, D = centre.shape
        zeros_s2 = covariance.scatter(
            torch.zeros(1, D, dtype=centre.dtype, device=centre.device),
            torch.zeros(R, 1, K, dtype=centre.dtype, device=centre.device),
            torch.zeros_like(centre),
        )
        stats = Statistics(
            torch.zeros(R, dtype=torch.float64, device=centre.device),
            torch.ones(R, K, dtype=torch.float64, device=centre.device),
            torch.zeros(R, K, D, dtype=torch.float64, device=centre.device),
            zeros_s2.to(torch.float64),
        )
    else:
        stats = statistics_from_resp(data, resp_fn, centre, covariance, rows)
    restarts = torch.arange(centre.shape[0], device=centre.device)
    empty_mass = EMPTY_MASS * data.mean_weight  # half a row of mean weight
    step = maximise(
        stats,
        centre,
        covariance,
        state,
        restarts,
        data.dtype,
        iteration=0,
        repair=covariances_used,
        empty_mass=empty_mass,
    )
    return step.params, step.ok
