"""Mutation check: plant plausible bugs in the engine, one at a time, and make sure the tests catch each.

Every entry of :data:`MUTATIONS` is one small edit of one source file (an exact text, found exactly once,
replaced by the bug) and the test files or test ids that must catch it. The runner copies the checkout to a
scratch folder, checks that the selected tests pass there unmutated (otherwise "killed" would mean nothing),
then for each mutation applies the edit to the scratch copy, runs only its tests (``pytest -x``) with the
scratch copy first on ``PYTHONPATH`` (subprocesses and spawned ranks included), and restores the file.

A mutation is *killed* when its tests fail (or time out); it *survives* when they pass, which means a bug of
that kind would land unnoticed. Run it before and after every change to the engine::

    python tests/mutations.py            # every mutation (the full list, several minutes)
    python tests/mutations.py --quick    # the CI profile (a few minutes on two cores)
    python tests/mutations.py --only chunk-rows-whole-data --only no-float64-flush -v
    python tests/mutations.py --list

The last line is ``mutations: K killed, S survived``; the exit status is 1 if any mutation survived or the
unmutated tests failed. Not a pytest module on purpose (its name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", "*.egg-info", "build", "dist"
)


@dataclass(frozen=True)
class Mutation:
    """One planted bug.

    Attributes
    ----------
    name : str
        Short identifier (``--only NAME``).
    area : str
        maths, passes, initialisation, repairs, trainer, distribution, online, files (what users get back:
        written files and outputs), or compatibility (with scikit-learn's classes and array API inputs).
    path : str
        The source file, relative to the repository root.
    old, new : str
        ``old`` occurs exactly once in ``path`` and is replaced by ``new``.
    tests : tuple of str
        Test files or ids (relative to the repository root) that must fail.
    why : str
        The bug in words: what a developer could plausibly get wrong.
    quick : bool
        Part of the CI profile (``--quick``).
    """

    name: str
    area: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str
    quick: bool = False


MUTATIONS: list[Mutation] = [
    # ------------------------------------------------------------------------------------------------ passes
    Mutation(
        "chunk-rows-whole-data",
        "passes",
        "torchgmm/passes.py",
        "    return max(1, min(n_samples, rows))",
        "    return max(1, n_samples)",
        ("tests/test_memory.py",),
        "chunk_rows ignores its budget and returns N: no chunking, an [R, N, K] temporary of the whole data",
        quick=True,
    ),
    Mutation(
        "no-float64-flush",
        "passes",
        "torchgmm/passes.py",
        "        if pending >= FLUSH_ROWS:",
        "        if False:",
        ("tests/test_precision.py",),
        "float32 partial sums are never flushed into float64: a pass of millions of rows loses digits",
        quick=True,
    ),
    Mutation(
        "data-not-centred",
        "passes",
        "torchgmm/data.py",
        "        shift=total / n_samples,",
        "        shift=torch.zeros_like(total),",
        ("tests/test_precision.py", "tests/test_sources.py::test_float32_streaming_with_large_offset"),
        "the data are not centred on their mean: float32 passes on offset data lose their precision",
        quick=True,
    ),
    Mutation(
        "tiles-as-large-as-reads",
        "passes",
        "torchgmm/data.py",
        "for piece in torch.split(raw, rows))",
        "for piece in torch.split(raw, block))",
        ("tests/test_memory.py::test_a_large_batch_size_reads_large_steps_but_keeps_the_tiles",),
        "each step of batch_size rows is computed whole: temporaries grow with batch_size again",
    ),
    Mutation(
        "batch-size-not-read-rows",
        "passes",
        "torchgmm/data.py",
        "    source.read_rows = batch_size\n",
        "    source.read_rows = None\n",
        (
            "tests/test_memory.py::test_a_large_batch_size_reads_large_steps_but_keeps_the_tiles",
            "tests/test_faults.py::test_retries_halve_the_compute_tiles_not_the_rows_read",
        ),
        "batch_size no longer sets the rows read per step: a memmap is read one tile at a time whatever is asked",
    ),
    Mutation(
        "chunk-start-not-advanced",
        "passes",
        "torchgmm/data.py",
        "            start += raw.shape[0]\n            seen += raw.shape[0]",
        "            seen += raw.shape[0]",
        ("tests/test_sources.py::test_initialisation_does_not_depend_on_chunking",),
        "every chunk reports the global index of the first: per-row draws depend on the chunking",
    ),
    Mutation(
        "memmap-ignores-header",
        "passes",
        "torchgmm/data.py",
        "self.file_offset + start * row_bytes + done",
        "start * row_bytes + done",
        ("tests/test_sources.py::test_memmap_with_raw_header_offset",),
        "a memmap is read from the start of its file, header included",
    ),
    # ------------------------------------------------------------------------------------------------- maths
    Mutation(
        "full-m-step-drops-shift",
        "maths",
        "torchgmm/covariance.py",
        "        cov = scatter / nk[..., None, None] - shift.unsqueeze(-1) * shift.unsqueeze(-2)",
        "        cov = scatter / nk[..., None, None]",
        ("tests/test_maths.py::test_m_step_matches_sklearn_for_any_centre",),
        "the full M-step forgets that its scatter is about the previous means, not the new ones",
        quick=True,
    ),
    Mutation(
        "log-det-sign",
        "maths",
        "torchgmm/covariance.py",
        "        return torch.log(torch.diagonal(precisions_cholesky, dim1=-2, dim2=-1)).sum(-1)",
        "        return -torch.log(torch.diagonal(precisions_cholesky, dim1=-2, dim2=-1)).sum(-1)",
        ("tests/test_maths.py::test_log_gaussian_prob_matches_scipy",),
        "log det of the precision factor with the sign of the covariance's",
    ),
    Mutation(
        "whitened-scatter-transposed",
        "maths",
        "torchgmm/kernels.py",
        "        return total._replace(s2=P_inv.mT @ total.s2 @ P_inv)",
        "        return total._replace(s2=P_inv @ total.s2 @ P_inv.mT)",
        ("tests/test_parity.py::test_parity_with_sklearn_same_init",),
        "the whitened scatter is mapped back with the factor on the wrong side",
    ),
    Mutation(
        "s1-not-centred",
        "maths",
        "torchgmm/kernels.py",
        "        into.s1.add_(resp.mT @ X).sub_(nk.unsqueeze(-1) * means)",
        "        into.s1.add_(resp.mT @ X)",
        ("tests/test_parity.py::test_parity_with_sklearn_same_init",),
        "the full E-step's first moment is not taken about the current means",
    ),
    Mutation(
        "diag-centring-factor",
        "maths",
        "torchgmm/kernels.py",
        "centred_s2 = s2 - 2.0 * covariance.squares_pair(means, s1)",
        "centred_s2 = s2 - covariance.squares_pair(means, s1)",
        ("tests/test_parity.py::test_parity_with_sklearn_same_init",),
        "sum r (x - mu)^2 expanded without the factor 2 of the cross term",
    ),
    Mutation(
        "tied-between-dropped",
        "maths",
        "torchgmm/covariance.py",
        "        cov = (scatter - between) / nk.sum(-1)[:, None, None, None]",
        "        cov = scatter / nk.sum(-1)[:, None, None, None]",
        ("tests/test_maths.py::test_m_step_matches_sklearn_for_any_centre",),
        "the tied M-step forgets the between-component term of its centred scatter",
    ),
    Mutation(
        "spherical-not-averaged",
        "maths",
        "torchgmm/covariance.py",
        "(shift * shift).sum(-1, keepdim=True)).squeeze(-1) / D",
        "(shift * shift).sum(-1, keepdim=True)).squeeze(-1)",
        ("tests/test_maths.py::test_m_step_matches_sklearn_for_any_centre",),
        "the spherical variance is the summed, not the mean, variance over features",
    ),
    Mutation(
        "reg-covar-not-added-diag",
        "maths",
        "torchgmm/covariance.py",
        "        return (scatter / nk.unsqueeze(-1) - shift * shift).clamp_min_(0.0) + _per_feature(reg_covar)",
        "        return (scatter / nk.unsqueeze(-1) - shift * shift).clamp_min_(0.0)",
        ("tests/test_parity.py::test_parity_with_large_reg_covar_and_offset",),
        "reg_covar is not added to diagonal covariances",
    ),
    Mutation(
        "normalise-not-divided",
        "maths",
        "torchgmm/_math.py",
        "    resp.div_(total)\n",
        "",
        ("tests/test_parity.py::test_parity_with_sklearn_same_init",),
        "responsibilities are not normalised on the CPU path",
    ),
    Mutation(
        "normaliser-returns-max",
        "maths",
        "torchgmm/_math.py",
        "    return total.log_().add_(top).squeeze(-1), resp",
        "    return top.squeeze(-1), resp",
        ("tests/test_properties.py::test_lower_bound_never_decreases_before_a_repair",),
        "the E-step's per-row log-likelihood is the largest weighted density, not their log-sum-exp",
        quick=True,
    ),
    Mutation(
        "scatter-weighted-by-r",
        "maths",
        "torchgmm/kernels.py",
        "        Y.mul_(sqrt_(resp).mT.unsqueeze(-1))",
        "        Y.mul_(resp.mT.unsqueeze(-1))",
        ("tests/test_properties.py::test_lower_bound_never_decreases_before_a_repair",),
        "the whitened residuals are weighted by r instead of sqrt(r), so the scatter carries r squared",
    ),
    Mutation(
        "fused-scatter-weighted-by-r",
        "maths",
        "torchgmm/fused.py",
        "            weighted = y * tl.sqrt(resp)[:, None]",
        "            weighted = y * resp[:, None]",
        ("tests/test_fused.py::test_statistics_match_the_torch_kernel",),
        "the fused kernel weights the whitened residuals by r instead of sqrt(r) (the scatter carries r squared)",
    ),
    Mutation(
        "fused-log-sum-exp-not-rescaled",
        "maths",
        "torchgmm/fused.py",
        "        return new_top, total * tl.exp(top - new_top) + tl.sum(tl.exp(log_prob - new_top[:, None]), 1)",
        "        return new_top, total + tl.sum(tl.exp(log_prob - new_top[:, None]), 1)",
        ("tests/test_fused.py::test_statistics_match_the_torch_kernel",),
        "the fused kernel's online log-sum-exp forgets to rescale the running total when the maximum grows",
    ),
    Mutation(
        "sqrt-zeros-not-restored",
        "maths",
        "torchgmm/_math.py",
        "    return torch.nn.functional.threshold_(x.clamp_min_(tiny).sqrt_(), 1.5 * math.sqrt(tiny), 0.0)",
        "    return x.clamp_min_(tiny).sqrt_()",
        ("tests/test_maths.py::test_sqrt_keeps_zeros_exact",),
        "zeros raised to the smallest normal number before sqrt (its fast path) are not set back to zero",
    ),
    Mutation(
        "race-keeps-the-worst",
        "trainer",
        "torchgmm/trainer.py",
        "    ranked = sorted(racing, key=lambda r: (-state.lower_bound[r], r))",
        "    ranked = sorted(racing, key=lambda r: (state.lower_bound[r], r))",
        ("tests/test_race.py::test_a_race_is_the_plain_fit_cut_short_by_the_halving_rule",),
        "a race's cut keeps the restarts with the lowest bounds instead of the highest",
    ),
    Mutation(
        "anneal-converges-across-a-level",
        "trainer",
        "torchgmm/trainer.py",
        "        settled = settled and (level_since[r] == 0 or iteration - level_since[r] >= 2)\n",
        "",
        ("tests/test_anneal.py::test_an_annealed_fit_follows_the_schedule_computed_in_numpy",),
        "an annealed restart converges (or leaves a level) on a change that still measures the previous level",
    ),
    Mutation(
        "anneal-level-overstays",
        "trainer",
        "torchgmm/trainer.py",
        "iteration - level_since[r] >= anneal.level_iter:",
        "iteration - level_since[r] > anneal.level_iter:",
        ("tests/test_anneal.py::test_an_annealed_fit_follows_the_schedule_computed_in_numpy",),
        "an annealing level runs one iteration more than anneal_iter allows",
    ),
    Mutation(
        "anneal-levels-reversed",
        "trainer",
        "torchgmm/trainer.py",
        "        return self.beta_start[restart] ** (1.0 - level / self.steps)",
        "        return self.beta_start[restart] ** (level / self.steps)",
        ("tests/test_anneal.py::test_an_annealed_fit_follows_the_schedule_computed_in_numpy",),
        "the annealing levels run from beta = 1 down instead of up to it",
    ),
    Mutation(
        "anneal-tempered-bound",
        "maths",
        "torchgmm/_math.py",
        "    log_prob_norm = logsumexp(log_prob, -1)\n    return log_prob_norm, normalise_(log_prob.mul_(beta))[1]",
        "    return normalise_(log_prob.mul_(beta))",
        ("tests/test_anneal.py::test_the_tempered_e_step_matches_scipy",),
        "the bound of a tempered pass is the tempered normaliser instead of the log-likelihood",
        quick=True,
    ),
    Mutation(
        "anneal-restarts-share-one-beta",
        "passes",
        "torchgmm/passes.py",
        "beta.to(work).view(R, 1, 1))",
        "beta[:1].to(work).view(1, 1, 1))",
        (
            "tests/test_anneal.py::test_the_tempered_e_step_matches_scipy",
            "tests/test_anneal.py::test_restarts_with_different_schedules_in_one_batch_run_as_they_would_alone",
        ),
        "every restart of a batch is tempered with the first restart's beta",
    ),
    Mutation(
        "smem-merge-drops-a-component",
        "trainer",
        "torchgmm/smem.py",
        "            out[c, :, i] += resp[:, j]\n",
        "",
        ("tests/test_split_merge.py::test_moved_parameters_are_one_m_step_of_the_moved_responsibilities",),
        "a merge keeps only one component's responsibilities instead of both",
    ),
    Mutation(
        "smem-split-keeps-every-row",
        "trainer",
        "torchgmm/smem.py",
        "            out[c, :, m.split] = torch.where(side, 0.0, resp[:, m.split])",
        "            out[c, :, m.split] = resp[:, m.split]",
        ("tests/test_split_merge.py::test_moved_parameters_are_one_m_step_of_the_moved_responsibilities",),
        "a split gives the rows of the new half to both halves",
    ),
    Mutation(
        "smem-merges-the-least-overlapping",
        "trainer",
        "torchgmm/smem.py",
        "key=lambda p: (-cosine[p[0]][p[1]], p))",
        "key=lambda p: (cosine[p[0]][p[1]], p))",
        (
            "tests/test_split_merge.py::test_candidates_pair_the_most_overlapping_merge_with_the_worst_explained_split",
            "tests/test_split_merge.py::test_split_and_merge_leaves_a_local_optimum_that_plain_em_keeps",
        ),
        "merges are ranked by the least overlap instead of the most",
    ),
    Mutation(
        "smem-split-score-unnormalised",
        "trainer",
        "torchgmm/smem.py",
        "    worst_fit = (fit / mass).tolist()",
        "    worst_fit = fit.tolist()",
        ("tests/test_split_merge.py::test_candidates_pair_the_most_overlapping_merge_with_the_worst_explained_split",),
        "splits are ranked by a component's summed fit (large components first) instead of its mean",
    ),
    Mutation(
        "smem-keeps-moves-that-do-not-help",
        "trainer",
        "torchgmm/smem.py",
        "        better = math.isfinite(after) and after > bound + config.tol",
        "        better = math.isfinite(after) and after > bound - 1.0",
        ("tests/test_split_merge.py::test_split_and_merge_leaves_a_local_optimum_that_plain_em_keeps",),
        "a move is kept even when it lowers the bound",
    ),
    Mutation(
        "grow-splits-the-best-explained",
        "trainer",
        "torchgmm/smem.py",
        "    moves = [Move(None, order[c % len(order)]) for c in range(count)]",
        "    moves = [Move(None, order[-1 - c % len(order)]) for c in range(count)]",
        ("tests/test_split_merge.py::test_grown_parameters_split_the_worst_explained_components",),
        "a grown candidate splits the components the mixture explains best instead of the worst",
    ),
    Mutation(
        "grow-across-a-gap",
        "trainer",
        "torchgmm/selection.py",
        "if self.grow and smaller is not None and smaller.n_components == k - 1:",
        "if self.grow and smaller is not None:",
        ("tests/test_split_merge.py::test_selection_grows_each_count_from_the_one_before",),
        "a candidate grows from the previous one even when the grid skips a count",
    ),
    Mutation(
        "held-means-scatter-about-moved-means",
        "repairs",
        "torchgmm/mstep.py",
        "        stats = stats._replace(s1=torch.zeros_like(stats.s1))  # about the held means, which do not move\n",
        "",
        ("tests/test_fixed_params.py::test_a_fit_with_held_parameters_follows_constrained_em_in_numpy",),
        "with held means the covariances are taken about the means the M-step would have moved to",
        quick=True,
    ),
    Mutation(
        "held-components-reseeded",
        "repairs",
        "torchgmm/mstep.py",
        "    moves = fixed is None or (fixed.weights is None and fixed.means is None)",
        "    moves = True",
        ("tests/test_fixed_params.py::test_an_empty_component_with_held_mean_and_weight_is_regularised_not_reseeded",),
        "an empty component whose mean and weight are held is re-seeded, which moves them",
    ),
    Mutation(
        "held-weights-follow-the-m-step",
        "repairs",
        "torchgmm/mstep.py",
        "            weights = self.weights.to(weights.device).expand_as(weights)\n",
        "",
        (
            "tests/test_fixed_params.py::test_a_fit_with_held_parameters_follows_constrained_em_in_numpy",
            "tests/test_fixed_params.py::test_held_values_come_back_bit_for_bit",
        ),
        "held weights are replaced by the M-step's",
    ),
    Mutation(
        "weights-of-ignores-offset",
        "distribution",
        "torchgmm/data.py",
        "        return self.weights[start - self.offset : start - self.offset + n]",
        "        return self.weights[start : start + n]",
        ("tests/test_distributed.py::test_two_ranks_weigh_rows_as_one_process",),
        "a tile's weights are looked up by the global row index in this rank's own weights",
    ),
    Mutation(
        "weighted-bound-over-rows",
        "trainer",
        "torchgmm/trainer.py",
        "    new_bound = stats.log_likelihood / data.total_weight",
        "    new_bound = stats.log_likelihood / data.n_samples",
        ("tests/test_sample_weight.py::test_integer_weights_are_repeated_rows",),
        "the bound of a weighted fit is divided by the number of rows instead of the weights' sum",
        quick=True,
    ),
    Mutation(
        "kernel-ignores-weights",
        "passes",
        "torchgmm/kernels.py",
        "        log_prob_norm, resp = log_prob_norm * w, resp.mul_(w.view(1, -1, 1))",
        "        log_prob_norm = log_prob_norm * w",
        ("tests/test_sample_weight.py::test_integer_weights_are_repeated_rows",),
        "the E-step weights the log-likelihood but not the responsibilities",
    ),
    Mutation(
        "lloyd-unweighted",
        "initialisation",
        "torchgmm/init.py",
        "                onehot = onehot * w.to(x.dtype).view(1, -1, 1)",
        "                onehot = onehot",
        ("tests/test_sample_weight.py::test_weighted_lloyd_and_initial_statistics_are_those_of_repeated_rows",),
        "k-means ignores the row weights",
    ),
    Mutation(
        "initial-statistics-unweighted",
        "initialisation",
        "torchgmm/passes.py",
        "            resp = resp * data.weights_of(start, x.shape[0]).view(1, -1, 1)",
        "            resp = resp",
        ("tests/test_sample_weight.py::test_weighted_lloyd_and_initial_statistics_are_those_of_repeated_rows",),
        "the initial M-step's statistics ignore the row weights",
    ),
    Mutation(
        "seeding-sample-unweighted",
        "initialisation",
        "torchgmm/data.py",
        "                chunk_keys = torch.where(w > 0, -torch.log1p(-chunk_keys) / w, math.inf)  # weight 0: never",
        "                chunk_keys = chunk_keys",
        ("tests/test_sample_weight.py::test_rows_of_weight_zero_never_seed_a_component",),
        "the seeding sample ignores the weights, so rows of weight zero become seeds",
    ),
    Mutation(
        "smem-overlaps-of-one-rank",
        "distribution",
        "torchgmm/passes.py",
        "    distributed.all_reduce_(overlap, fit)\n",
        "",
        ("tests/test_distributed.py::test_two_ranks_anneal_and_move_as_one_process",),
        "the moves are scored on each rank's own rows, so ranks try different moves",
    ),
    Mutation(
        "whitening-not-transposed",
        "initialisation",
        "torchgmm/init.py",
        "    W = torch.linalg.solve_triangular(L, eye, upper=False).mT",
        "    W = torch.linalg.solve_triangular(L, eye, upper=False)",
        ("tests/test_init_whiten.py",),
        "the whitening uses L^-1 instead of L^-T, so the seeding rows are not whitened (nor unit-invariant)",
    ),
    Mutation(
        "logsumexp-drops-max",
        "maths",
        "torchgmm/_math.py",
        "    return exp_(x - top).sum(dim).log_().add_(top.squeeze(dim))",
        "    return exp_(x - top).sum(dim).log_()",
        ("tests/test_maths.py::test_log_space_keeps_far_points_finite",),
        "log-sum-exp forgets to add back the maximum it subtracted",
    ),
    Mutation(
        "e-step-drops-log-weights",
        "maths",
        "torchgmm/kernels.py",
        "        constant = (-0.5 * D * LOG_2PI + log_det + torch.log(weights)).unsqueeze(-2)  # [R, 1, K]",
        "        constant = (-0.5 * D * LOG_2PI + log_det).unsqueeze(-2)  # [R, 1, K]",
        ("tests/test_parity.py::test_parity_with_sklearn_same_init",),
        "the fused full E-step forgets the mixture weights in its densities",
    ),
    Mutation(
        "negative-variance-not-clamped",
        "maths",
        "torchgmm/covariance.py",
        "        return (scatter / nk.unsqueeze(-1) - shift * shift).clamp_min_(0.0) + _per_feature(reg_covar)",
        "        return (scatter / nk.unsqueeze(-1) - shift * shift) + _per_feature(reg_covar)",
        ("tests/test_maths.py::test_variance_rounded_below_zero_is_clamped_before_reg_covar",),
        "a diagonal variance that rounding pushed below zero fails the fit instead of being clamped",
    ),
    Mutation(
        "no-float64-fallback",
        "maths",
        "torchgmm/passes.py",
        "    return torch.float64 if fold_rounding(params, covariance) > FOLDING_TOLERANCE else dtype",
        "    return dtype",
        ("tests/test_repair.py::test_float32_tight_clusters_far_apart", "tests/test_repair.py::test_working_dtype"),
        "float32 passes never switch to float64, even when the folded densities round by nats",
    ),
    Mutation(
        "fold-rounding-squared-for-whitened",
        "maths",
        "torchgmm/passes.py",
        "    if covariance.triangular:\n        return 2.0 * eps",
        "    if False:\n        return 2.0 * eps",
        ("tests/test_kernels.py::test_whitened_float32_stays_float32_for_thin_components_far_in_their_own_units",),
        "the whitened kernel's rounding is estimated as eps |mu|_P^2 (the expansion's): float32 fits of thin "
        "components run in float64 for nothing",
    ),
    Mutation(
        "pivot-rule-off",
        "maths",
        "torchgmm/covariance.py",
        "    return max(PIVOT_EPS * torch.finfo(dtype).eps, MIN_PIVOT)",
        "    return 0.0",
        ("tests/test_repair.py::test_factorise_refuses_pivots_below_the_working_precision",),
        "a covariance singular to the working precision is used instead of repaired",
        quick=True,
    ),
    # ---------------------------------------------------------------------------------------- initialisation
    Mutation(
        "no-lloyd",
        "initialisation",
        "torchgmm/init.py",
        "    for _ in range(max_iter):",
        "    for _ in range(0):",
        ("tests/test_init.py",),
        "init_params='kmeans' returns the k-means++ seeds without Lloyd refinement",
        quick=True,
    ),
    Mutation(
        "kmeans-tol-absolute",
        "initialisation",
        "torchgmm/init.py",
        "    tol_abs = float(variance.mean()) / data.total_weight * tol",
        "    tol_abs = tol",
        ("tests/test_init.py",),
        "Lloyd's stopping tolerance is not scaled by the data's variance (scikit-learn's rule)",
    ),
    Mutation(
        "kmeanspp-worst-candidate",
        "initialisation",
        "torchgmm/init.py",
        "        best = dist.to(torch.float64).sum(-1).argmin(-1)  # [R]",
        "        best = dist.to(torch.float64).sum(-1).argmax(-1)  # [R]",
        ("tests/test_init.py",),
        "greedy k-means++ keeps the candidate with the largest potential instead of the smallest",
        quick=True,
    ),
    Mutation(
        "random-resp-local-index",
        "initialisation",
        "torchgmm/init.py",
        "            rows = torch.arange(start, start + x.shape[0], device=device).view(1, -1, 1)",
        "            rows = torch.arange(x.shape[0], device=device).view(1, -1, 1)",
        ("tests/test_sources.py::test_initialisation_does_not_depend_on_chunking",),
        "random responsibilities are drawn by the row's index in its chunk, not in the data",
    ),
    # ----------------------------------------------------------------------------------------------- repairs
    Mutation(
        "regularise-whole-restart",
        "repairs",
        "torchgmm/mstep.py",
        "    todo = ~ok & finite.unsqueeze(-1)",
        "    todo = (~ok).any(-1, keepdim=True).expand_as(ok) & finite.unsqueeze(-1)",
        ("tests/test_repair.py::test_only_the_degenerate_component_is_regularised",),
        "one degenerate component raises reg_covar for every component of its restart",
    ),
    Mutation(
        "reseed-without-offset",
        "repairs",
        "torchgmm/mstep.py",
        "        offset = 0.5 * covariance.principal_axis(covariances[r, donor], D)",
        "        offset = 0.0 * covariance.principal_axis(covariances[r, donor], D)",
        ("tests/test_repair.py::test_empty_component_is_reseeded_by_splitting_the_heaviest",),
        "a re-seeded component is put on top of its donor, so the two never separate",
    ),
    Mutation(
        "reseed-cap-ignored",
        "repairs",
        "torchgmm/mstep.py",
        "    candidates = ~ok & empty & (reseeds < MAX_RESEEDS) & finite.unsqueeze(-1)",
        "    candidates = ~ok & empty & finite.unsqueeze(-1)",
        ("tests/test_repair.py::test_reseeds_are_capped_then_regularised",),
        "an empty component is re-seeded forever instead of regularised after MAX_RESEEDS",
    ),
    Mutation(
        "reg-covar-doubles",
        "repairs",
        "torchgmm/mstep.py",
        "        reg = torch.where(todo, torch.maximum(10.0 * reg, start), reg)",
        "        reg = torch.where(todo, torch.maximum(2.0 * reg, start), reg)",
        ("tests/test_repair.py::test_regularisation_takes_tenfold_steps_until_it_factorises",),
        "the repair raises reg_covar by another factor than the documented tenfold",
        quick=True,
    ),
    # ----------------------------------------------------------------------------------------------- trainer
    Mutation(
        "converge-across-repair",
        "trainer",
        "torchgmm/trainer.py",
        "        settled = r not in state.just_repaired and r not in just_repaired\n",
        "        settled = True\n",
        ("tests/test_batched.py::test_no_convergence_on_a_repair_or_the_iteration_after",),
        "a restart is declared converged on the iteration of a repair or the one after",
        quick=True,
    ),
    Mutation(
        "converge-on-repair",
        "trainer",
        "torchgmm/trainer.py",
        "        settled = r not in state.just_repaired and r not in just_repaired\n",
        "        settled = r not in state.just_repaired\n",
        ("tests/test_batched.py::test_no_convergence_on_a_repair_or_the_iteration_after",),
        "a restart is declared converged on the very iteration of its repair",
    ),
    Mutation(
        "converge-after-repair",
        "trainer",
        "torchgmm/trainer.py",
        "        settled = r not in state.just_repaired and r not in just_repaired\n",
        "        settled = r not in just_repaired\n",
        ("tests/test_batched.py::test_no_convergence_on_a_repair_or_the_iteration_after",),
        "a restart is declared converged on the iteration after its repair (a change measured across it)",
    ),
    Mutation(
        "best-restart-lowest",
        "trainer",
        "torchgmm/trainer.py",
        "        return max(candidates, key=lambda r: (self.lower_bound[r], -r))",
        "        return min(candidates, key=lambda r: (self.lower_bound[r], -r))",
        ("tests/test_batched.py::test_estimator_keeps_best_restart",),
        "the restart with the lowest bound is kept",
    ),
    Mutation(
        "resume-restarts-from-iteration-one",
        "trainer",
        "torchgmm/trainer.py",
        "        for iteration in range(state.iteration + 1, config.max_iter + 1):",
        "        for iteration in range(1, config.max_iter + 1):",
        ("tests/test_faults.py::test_resumed_fit_equals_the_uninterrupted_one",),
        "a fit resumed from a checkpoint counts its iterations from 1 again",
    ),
    Mutation(
        "checkpoint-ignores-data-mean",
        "trainer",
        "torchgmm/checkpoint.py",
        "            and torch.allclose(mean, self.data_mean, rtol=1e-9, atol=1e-9 * scale)\n",
        "",
        ("tests/test_faults.py::test_checkpoint_of_another_fit_is_refused",),
        "a checkpoint of a fit on other data (another mean) is resumed",
        quick=True,
    ),
    Mutation(
        "out-of-memory-retry-one-row-fewer",
        "trainer",
        "torchgmm/passes.py",
        "        rows = max(1, rows // 2)",
        "        rows = max(1, rows - 1)",
        ("tests/test_faults.py::test_passes_retry_with_fewer_rows",),
        "a pass that runs out of memory retries with one row fewer instead of half the rows",
    ),
    Mutation(
        "warm-start-bound-from-minus-inf",
        "trainer",
        "torchgmm/fitter.py",
        "        state = EMState.start(params, repairs, lower_bound=float(warm.lower_bound))",
        "        state = EMState.start(params, repairs)",
        ("tests/test_api.py::test_warm_start_after_convergence_measures_change_from_previous_bound",),
        "a warm start measures its first change from -inf instead of the previous lower bound (scikit-learn's rule)",
    ),
    # ---------------------------------------------------------------------------------------------- files
    Mutation(
        "files-keep-mkstemp-mode",
        "files",
        "torchgmm/_files.py",
        "        os.chmod(temporary, mode)  # mkstemp makes it 0600: readable by its owner only\n",
        "",
        ("tests/test_files.py",),
        "written files keep mkstemp's mode 0600, so other users and services cannot read models or outputs",
        quick=True,
    ),
    Mutation(
        "inference-in-the-model-dtype",
        "files",
        "torchgmm/estimator.py",
        "        return data, params, like, dtype if self.dtype is not None else input_dtype",
        "        return data, params, like, model_dtype",
        ("tests/test_api.py::test_inference_outputs_take_the_input_dtype",),
        "predict_proba and score_samples return the model's dtype instead of following the input's",
    ),
    Mutation(
        "model-file-kind-not-sniffed",
        "files",
        "torchgmm/persistence.py",
        "    if head.startswith(_ZIP):\n        return None",
        "    if True:\n        return None",
        (
            "tests/test_bad_inputs.py",
            "tests/test_cli.py::test_a_data_file_or_pickle_given_as_the_model_says_what_it_is",
        ),
        "a CSV or pickle given as a model is passed to torch.load: a cryptic error and torch's own warnings",
    ),
    # ---------------------------------------------------------------------------------------------- online
    Mutation(
        "online-mean-ignores-step-size",
        "online",
        "torchgmm/online.py",
        "        eta * stats.s1 / n[:, None, None],",
        "        stats.s1 / n[:, None, None],",
        ("tests/test_module.py::test_online_em_reaches_the_batch_log_likelihood",),
        "stepwise EM moves the means by the whole batch's shift instead of a step of size eta",
        quick=True,
    ),
    # ---------------------------------------------------------------------------------------------- distribution
    Mutation(
        "no-seed-broadcast",
        "distribution",
        "torchgmm/fitter.py",
        "    generator = seeded(generator)\n",
        "",
        ("tests/test_distributed.py",),
        "fit does not broadcast rank 0's seed: ranks with other random_state draw other initialisations",
        quick=True,
    ),
    Mutation(
        "shard-offset-zero",
        "distribution",
        "torchgmm/data.py",
        "        offset=sum(shard_counts[: distributed.rank()]) if collective else 0,",
        "        offset=0,",
        ("tests/test_distributed.py",),
        "every shard numbers its rows from 0: per-row draws depend on the number of ranks",
    ),
    Mutation(
        "bound-over-local-rows",
        "distribution",
        "torchgmm/trainer.py",
        "    new_bound = stats.log_likelihood / data.total_weight",
        "    new_bound = stats.log_likelihood / data.local_samples",
        ("tests/test_distributed.py",),
        "the lower bound divides the global log-likelihood by this rank's rows",
    ),
    Mutation(
        "init-statistics-not-reduced",
        "distribution",
        "torchgmm/passes.py",
        "        total = total + Statistics(torch.zeros(R, dtype=ACCUMULATE_DTYPE, device=x.device), *stats)\n"
        "    distributed.all_reduce_(*total)",
        "        total = total + Statistics(torch.zeros(R, dtype=ACCUMULATE_DTYPE, device=x.device), *stats)",
        ("tests/test_distributed.py",),
        "the initialisation's statistics are not summed over ranks",
    ),
    Mutation(
        "lloyd-sums-not-reduced",
        "distribution",
        "torchgmm/init.py",
        "        distributed.all_reduce_(sums, counts)",
        "        pass",
        ("tests/test_distributed.py",),
        "Lloyd iterations average only this rank's rows",
    ),
    Mutation(
        "no-seed-broadcast-online",
        "distribution",
        "torchgmm/fitter.py",
        "data, config, inits, seeded(generator), init_repairs,",
        "data, config, inits, generator, init_repairs,",
        ("tests/test_distributed.py",),
        "the first partial_fit does not broadcast rank 0's seed: ranks initialise from other draws",
    ),
    Mutation(
        "sample-not-merged-across-ranks",
        "distribution",
        "torchgmm/data.py",
        "        if distributed.is_distributed():\n            padded_keys",
        "        if False:\n            padded_keys",
        ("tests/test_distributed.py",),
        "each rank seeds from the sample of its own rows instead of the global one",
    ),
    Mutation(
        "sample-local-share-truncated",
        "distribution",
        "torchgmm/data.py",
        "        keys, kept = _smallest(keys, kept, size)  # in key order",
        "        keys, kept = _smallest(keys, kept, size // distributed.world_size())  # in key order",
        ("tests/test_distributed.py",),
        "each rank sends only size / world_size rows to the merge: wrong once a rank holds more of the "
        "global sample (only with more rows than the sample)",
    ),
    Mutation(
        "sample-merge-not-truncated",
        "distribution",
        "torchgmm/data.py",
        "            keys, kept = _smallest(keys, kept, min(size, self.n_samples))",
        "            keys, kept = _smallest(keys, kept, min(keys.shape[0], self.n_samples))",
        ("tests/test_distributed.py",),
        "the merge keeps every rank's sample, up to world_size * size rows (only with more rows than the sample)",
    ),
    Mutation(
        "checkpoint-written-by-every-rank",
        "distribution",
        "torchgmm/fitter.py",
        "    saving = checkpoint is not None and distributed.rank() == 0",
        "    saving = checkpoint is not None",
        ("tests/test_distributed.py",),
        "every rank writes the shared checkpoint file, racing the others",
    ),
    Mutation(
        "checkpoint-read-by-rank-0-only",
        "distribution",
        "torchgmm/fitter.py",
        "        resumed = checkpoint.load() if checkpoint is not None else None",
        "        resumed = checkpoint.load() if checkpoint is not None and distributed.rank() == 0 else None",
        ("tests/test_distributed.py",),
        "only rank 0 reads the checkpoint: the others start over while it resumes",
    ),
    Mutation(
        "resume-agreement-not-checked",
        "distribution",
        "torchgmm/fitter.py",
        "    distributed.check_same(resumed_from_checkpoint=resumed is not None)\n",
        "",
        ("tests/test_distributed.py",),
        "ranks that disagree on whether there is a checkpoint go on into mismatched collectives",
    ),
    Mutation(
        "partial-fit-ranks-not-checked",
        "distribution",
        "torchgmm/estimator.py",
        "        distributed.check_same(\n"
        "            n_components=self.n_components,\n"
        "            covariance_type=self.covariance_type,\n"
        "            dtype=str(dtype),\n"
        "            batch_size=self.batch_size,\n"
        "            n_iter_=self.n_iter_ if fitted else None,\n"
        "        )\n",
        "",
        ("tests/test_distributed.py",),
        "partial_fit does not check that the ranks agree on its parameters: mismatched collectives kill a rank",
    ),
    Mutation(
        "checkpoint-load-not-together",
        "distribution",
        "torchgmm/fitter.py",
        "    with distributed.together():\n        checkpoint = _checkpoint(",
        "    if True:\n        checkpoint = _checkpoint(",
        ("tests/test_distributed.py",),
        "a checkpoint refused by one rank only is raised there alone: the others wait in the next collective",
    ),
    Mutation(
        "checkpoint-described-by-own-seed",
        "distribution",
        "torchgmm/fitter.py",
        "    seed = distributed.broadcast(describe_seed(config.random_state))",
        "    seed = describe_seed(config.random_state)",
        ("tests/test_distributed.py",),
        "each rank describes the checkpoint by its own random_state: ranks given other seeds refuse to resume",
    ),
    Mutation(
        "scan-errors-not-together",
        "distribution",
        "torchgmm/data.py",
        "    with distributed.together(collective):\n        count, total",
        "    with distributed.together(False):\n        count, total",
        ("tests/test_distributed.py",),
        "an error of one rank's first pass (a NaN in a chunk) is raised there alone, before check_same",
    ),
    Mutation(
        "start-agreement-not-checked",
        "distribution",
        "torchgmm/estimator.py",
        "        distributed.check_same(warm_start=warm, initial_parameters=sorted(inits))\n",
        "",
        ("tests/test_distributed.py",),
        "ranks that warm-start or pass *_init differently are not refused, and take different paths into collectives",
    ),
    # --------------------------------------------------------------------------------------- compatibility
    Mutation(
        "sklearn-classes-not-used",
        "compatibility",
        "torchgmm/exceptions.py",
        "    theirs = _sklearn_class(name)\n",
        "    theirs = None\n",
        ("tests/test_sklearn_compat.py",),
        "the not-fitted error and the convergence warning stay torchgmm's own classes with scikit-learn imported: "
        "pytest.raises(sklearn.exceptions.NotFittedError) and filters on its ConvergenceWarning miss them",
        quick=True,
    ),
    Mutation(
        "sklearn-imported-eagerly",
        "compatibility",
        "torchgmm/exceptions.py",
        "import sys\n",
        "import sys\n\nimport sklearn.exceptions  # noqa: F401\n",
        ("tests/test_sklearn_compat.py::test_import_torchgmm_does_not_import_sklearn_and_uses_its_own_classes",),
        "import torchgmm imports scikit-learn (and SciPy, joblib) to build the compatible classes up front",
    ),
    Mutation(
        "foreign-arrays-as-numpy",
        "compatibility",
        "torchgmm/_validation.py",
        "    namespace = foreign_namespace(like)\n    if namespace is not None:",
        "    namespace = foreign_namespace(like)\n    if False:",
        ("tests/test_sklearn_compat.py::test_array_api_strict_input_gives_outputs_in_its_namespace",),
        "outputs of an array API input (CuPy, array-api-strict) come back as NumPy arrays, not in its namespace",
    ),
    Mutation(
        "chunk-weights-second-element",
        "passes",
        "torchgmm/data.py",
        "    return chunk[-1] if _is_batch(chunk) and len(chunk) >= 2 else None",
        "    return chunk[1] if _is_batch(chunk) and len(chunk) >= 2 else None",
        ("tests/test_sample_weight.py::test_weights_carried_by_chunks_are_repeated_rows",),
        "weights are taken from a batch's second element, so (rows, labels, weights) batches weigh rows by label",
    ),
    Mutation(
        "chunk-weights-unchecked",
        "passes",
        "torchgmm/data.py",
        "    row = first_bad_weight(w)\n    if row is not None:",
        "    row = first_bad_weight(w)\n    if False:",
        ("tests/test_bad_inputs.py::test_bad_input",),
        "negative or NaN weights carried by a batch are not refused",
    ),
    Mutation(
        "score-chunk-weights-ignored",
        "compatibility",
        "torchgmm/estimator.py",
        "        return float((data.weights * scores).sum()), data.total_weight",
        "        return float(scores.sum()), data.total_weight",
        ("tests/test_sample_weight.py::test_weights_carried_by_chunks_are_repeated_rows",),
        "a weighted score sums the rows' log-likelihoods unweighted and divides by the weights' sum",
    ),
    Mutation(
        "selection-bic-unweighted",
        "compatibility",
        "torchgmm/selection.py",
        "gm.bic(fit_rows, sample_weight=fit_weights)",
        "gm.bic(fit_rows)",
        ("tests/test_selection.py::test_weighted_selection_is_the_loop_of_weighted_fits",),
        "a weighted selection ranks candidates by the unweighted BIC",
    ),
    Mutation(
        "selection-held-out-unweighted",
        "compatibility",
        "torchgmm/selection.py",
        "gm.score(held_out, sample_weight=held_weights)",
        "gm.score(held_out)",
        ("tests/test_selection.py::test_weighted_held_out_scores_the_weighted_rows_set_aside",),
        "the rows set aside lose their weights when they are scored",
    ),
    Mutation(
        "selection-grown-unweighted",
        "compatibility",
        "torchgmm/selection.py",
        "gm._fit_grown(fit_rows, smaller, callback=progress, sample_weight=fit_weights)",
        "gm._fit_grown(fit_rows, smaller, callback=progress)",
        ("tests/test_selection.py::test_weights_carried_by_chunks_select_as_weights_beside_them",),
        "grown candidates of a weighted selection are fitted without the weights",
    ),
    Mutation(
        "cli-weight-column-kept",
        "files",
        "torchgmm/cli/readers.py",
        "    return X[:, keep], X[:, index]",
        "    return X, X[:, index]",
        ("tests/test_cli.py::test_a_weight_column_is_split_off_the_features",),
        "--weight-column weighs the rows but also keeps the weights as a feature",
    ),
]


# ------------------------------------------------------------------------------------------------- runner


def markdown_table() -> str:
    """The mutation list as the Markdown table of docs/testing.md (tests/test_mutation_list.py keeps it current)."""
    lines = [
        "| mutation | area | file | the planted bug | tests that must catch it | quick |",
        "|---|---|---|---|---|---|",
    ]
    for m in MUTATIONS:
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in m.tests)
        lines.append(f"| `{m.name}` | {m.area} | `{m.path}` | {m.why} | {tests} | {'yes' if m.quick else ''} |")
    return "\n".join(lines) + "\n"


def _selected(args: argparse.Namespace) -> list[Mutation]:
    names = {m.name for m in MUTATIONS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        raise SystemExit(f"unknown mutation(s) {unknown}; see --list")
    if args.only:
        return [m for m in MUTATIONS if m.name in args.only]
    if args.quick:
        return [m for m in MUTATIONS if m.quick]
    return list(MUTATIONS)


def _env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(scratch), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _pytest(scratch: Path, tests: list[str], timeout: float, stop: bool = True) -> tuple[str, str, float]:
    """Run pytest in the scratch copy; returns (outcome, output, seconds): outcome 'pass', 'fail' or 'timeout'."""
    command = [sys.executable, "-m", "pytest", *(["-x"] if stop else []), "-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [*command, *tests], cwd=scratch, env=_env(scratch), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return "timeout", output, time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode == 0:
        return "pass", output, time.perf_counter() - start
    return "fail", output, time.perf_counter() - start


def _failed_tests(output: str) -> list[str]:
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE) or ["(see output)"]


def _apply(scratch: Path, mutation: Mutation) -> str:
    """Apply the mutation to the scratch copy; returns the original text (to restore)."""
    path = scratch / mutation.path
    original = path.read_text()
    count = original.count(mutation.old)
    if count != 1:
        raise SystemExit(
            f"mutation {mutation.name}: its text occurs {count} times in {mutation.path} (must be exactly once); "
            "update tests/mutations.py to the current source"
        )
    path.write_text(original.replace(mutation.old, mutation.new))
    return original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the CI profile")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--markdown", action="store_true", help="print the list as docs/testing.md's table and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation before it counts as killed")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the test output of survivors")
    parser.add_argument(
        "--every-test", action="store_true", help="run all of a mutation's tests (no -x) and name every one that fails"
    )
    args = parser.parse_args(argv)

    if args.markdown:
        print(markdown_table(), end="")
        return 0
    if args.list:
        for m in MUTATIONS:
            flag = "quick" if m.quick else "     "
            print(f"{m.name:32s} {m.area:15s} {flag} {m.path}: {m.why}")
        print(f"{len(MUTATIONS)} mutations, {sum(m.quick for m in MUTATIONS)} in the quick profile")
        return 0

    selected = _selected(args)
    scratch = Path(tempfile.mkdtemp(prefix="torchgmm-mutations-"))
    try:
        shutil.copytree(ROOT, scratch, ignore=_IGNORE, dirs_exist_ok=True)
        for m in selected:  # every mutation's text must still be in the source, before any time is spent
            text = (scratch / m.path).read_text()
            if text.count(m.old) != 1:
                _apply(scratch, m)
        found = subprocess.run(
            [sys.executable, "-c", "import torchgmm; print(torchgmm.__file__)"],
            cwd=tempfile.gettempdir(),
            env=_env(scratch),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(found).resolve().is_relative_to(scratch.resolve()):
            raise SystemExit(f"the scratch copy is not what gets imported ({found}); cannot run mutations")

        tests = sorted({t for m in selected for t in m.tests})
        print(f"{len(selected)} mutations; checking that their tests pass unmutated ({len(tests)} selections)")
        outcome, output, seconds = _pytest(scratch, tests, args.timeout * 2, stop=False)
        if outcome != "pass":
            print(output[-6000:])
            print(f"the unmutated tests did not pass ({outcome}, {seconds:.0f} s): fix them first")
            print(f"mutations: 0 killed, {len(selected)} survived")
            return 1
        print(f"unmutated: pass in {seconds:.0f} s")

        killed, survived = [], []
        for m in selected:
            original = _apply(scratch, m)
            try:
                outcome, output, seconds = _pytest(scratch, list(m.tests), args.timeout, stop=not args.every_test)
            finally:
                (scratch / m.path).write_text(original)
            if outcome == "pass":
                survived.append(m)
                print(f"SURVIVED {m.name:32s} {seconds:6.1f} s  {m.why}")
                if args.verbose:
                    print(output[-3000:])
            else:
                killed.append(m)
                by = "timeout" if outcome == "timeout" else ", ".join(_failed_tests(output))
                print(f"killed   {m.name:32s} {seconds:6.1f} s  by {by}")
        if survived:
            print("survivors (bugs of these kinds would pass the suite): " + ", ".join(m.name for m in survived))
        print(f"mutations: {len(killed)} killed, {len(survived)} survived")
        return 1 if survived else 0
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
