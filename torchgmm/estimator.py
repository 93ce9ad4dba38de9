"""``GaussianMixture``: scikit-learn's estimator contract over the batched EM engine."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torchgmm import distributed
from torchgmm._math import matmul_precision
from torchgmm._validation import (
    as_tensor,
    check_array,
    check_scalar,
    make_generator,
    output_like,
    resolve_device,
    resolve_dtype,
)
from torchgmm.covariance import CovarianceType, get_covariance_type
from torchgmm.data import DataSource, TensorSource, is_chunked, make_source
from torchgmm.em import MixtureParameters, chunk_rows, estimate_log_prob_resp, working_dtype
from torchgmm.exceptions import (
    ConvergenceWarning,
    DegenerateComponentWarning,
    FailedRestartWarning,
    NotFittedError,
    OutOfMemoryError,
)
from torchgmm.init import INIT_METHODS, initialize
from torchgmm.memory import is_out_of_memory, out_of_memory_error, retry_with_fewer_rows
from torchgmm.online import check_step_sizes, online_em_step, step_size
from torchgmm.repair import RepairState, describe, repaired_restarts
from torchgmm.trainer import EMState, run_em

__all__ = ["GaussianMixture"]


def _entry_point(method):
    """A public method: run under the estimator's ``matmul_precision``, with clear out-of-memory errors.

    Only full and tied covariances take the precision (see
    :func:`torchgmm._math.matmul_precision`): their products are centred
    (whitened residuals), while the diag and spherical densities expand ``x^2 p -
    2 x mu p + mu^2 p``, whose cancellation TF32's 10-bit mantissa would turn
    into noise. Passes over the data retry smaller chunks when memory runs out
    (:mod:`torchgmm.memory`); running out anywhere else raises
    :class:`~torchgmm.OutOfMemoryError` saying what to change. Either way the
    fitted attributes are set only at the end, so they stay as they were.
    """

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            with matmul_precision(self.matmul_precision, applies=self.covariance_type in ("full", "tied")):
                return method(self, *args, **kwargs)
        except OutOfMemoryError:
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            device = self.device if self.device is not None else "the device"
            raise out_of_memory_error(device, method.__name__.strip("_")) from exc

    return wrapped


_ILL_DEFINED = (
    "Fitting the mixture model failed: every restart produced non-finite statistics or a covariance "
    "that cannot be represented or factorised even after raising its reg_covar (for instance data so "
    "large that their squares overflow). Scale the input data."
)


class GaussianMixture:
    """Gaussian mixture fitted by EM, with all restarts run at once as one batch.

    The constructor, methods and fitted attributes follow
    :class:`sklearn.mixture.GaussianMixture`; inputs may be NumPy arrays or
    torch tensors on any device, and outputs follow the input (NumPy in,
    NumPy out; a tensor in, a tensor out on the same device).

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components ``K``.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Parametrisation of the component covariances.
    tol : float, default=1e-3
        A restart has converged when its lower bound (mean log-likelihood per
        sample) changes by less than ``tol`` in one iteration.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance so it stays positive definite.
    max_iter : int, default=100
        Most EM iterations per restart.
    n_init : int, default=1
        Number of restarts, all run at once; the one with the highest final
        lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How restarts are initialised (see :mod:`torchgmm.init`).
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        User-provided initial weights, means and precisions (shape as
        ``precisions_``); each replaces what ``init_params`` would give.
    random_state : int, numpy RandomState or Generator, default=None
        Seeds every random draw (initialisation and :meth:`sample`).
    warm_start : bool, default=False
        If fitted, the next ``fit`` starts from the current parameters (one restart).
    verbose : int, default=0
        Print progress (2: with timings).
    verbose_interval : int, default=10
        Iterations between progress lines.
    device : str or torch.device, default=None
        Where to compute; by default where the input lives (CPU for NumPy).
    dtype : {'float32', 'float64'} or torch dtype, default=None
        Compute dtype; by default the input's float dtype, float32 for other input.
    batch_size : int, default=None
        Rows per chunk in every pass over the data; device memory is
        ``O(batch_size * K * R * D)`` for full covariances, independent of the
        number of rows. None picks it from the shapes: temporaries of 2**20
        elements on CPU (cache-sized), and on CUDA 2**28 elements or a
        sixteenth of the free device memory, whichever is smaller.
    matmul_precision : {'highest', 'high', 'medium'}, default=None
        Float32 matrix-product precision while fitting and predicting, as
        :func:`torch.set_float32_matmul_precision` (restored afterwards); None
        keeps torch's setting. ``'high'`` opts in to TF32 on CUDA for full and
        tied covariances (diag and spherical always use full float32, whose
        expanded densities TF32 would spoil), with lower bounds within about
        1e-5 relative of float32 (``bench/NOTES.md``). Float64 is never affected.
    learning_decay : float, default=0.7
    learning_offset : float, default=2.0
        Step sizes of :meth:`partial_fit` (stepwise EM): batch ``t`` (from 0)
        gets weight ``(t + learning_offset) ** -learning_decay``; a decay in
        (0.5, 1] makes the running statistics converge.
    checkpoint_path : str or os.PathLike, default=None
        A file for :meth:`fit` to save its EM state in every
        ``checkpoint_interval`` iterations, after the initialisation, and when
        it stops with an error or an interrupt (Ctrl-C). If the file exists
        when ``fit`` starts, the fit resumes from it and ends exactly as an
        uninterrupted fit would (same data, device and ``batch_size``); a file
        of another fit, other parameters or other data is refused. Deleted when
        the fit finishes. Under ``torch.distributed``, rank 0 writes it and
        every rank reads it, so it must be on a file system they share; it
        records rank 0's ``random_state``, the seed every rank uses.
    checkpoint_interval : int, default=10
        EM iterations between checkpoints.

    Attributes
    ----------
    weights_ : array of shape (n_components,)
    means_ : array of shape (n_components, n_features)
    covariances_ : array
        ``(K, D, D)`` full, ``(D, D)`` tied, ``(K, D)`` diag, ``(K,)`` spherical.
    precisions_ : array
        Inverses of the covariances, same shapes.
    precisions_cholesky_ : array
        Upper Cholesky factors of the precisions, same shapes.
    converged_ : bool
        Whether the kept restart converged.
    n_iter_ : int
        Iterations the kept restart ran.
    lower_bound_ : float
        Final lower bound of the kept restart.
    lower_bounds_ : list of float
        The kept restart's lower bound after each iteration.
    init_lower_bounds_ : ndarray of shape (n_init,)
        Final lower bound of every restart (``-inf`` where it failed).
    init_converged_ : ndarray of shape (n_init,), bool
        Whether each restart converged.
    init_lower_bounds_history_ : list of lists of float
        Every restart's lower bound after each of its iterations.
    repairs_ : list of Repair
        Degenerate components of the kept restart that were repaired, in order
        (see "Degenerate components" below).
    init_repairs_ : list of lists of Repair
        The same for every restart.
    n_features_in_ : int

    Notes
    -----
    **Degenerate components.** When an M-step gives a covariance that cannot
    be factorised (a component on one point or on duplicated rows, a constant
    or duplicated feature, a covariance singular to the compute precision),
    only that component is repaired and its restart goes on: an empty
    component is re-seeded by splitting the heaviest component of its
    restart, any other gets its own ``reg_covar`` raised tenfold until it
    factorises (it keeps that value for the rest of the fit). A
    :class:`~torchgmm.DegenerateComponentWarning` summarises what was done,
    and ``repairs_`` / ``init_repairs_`` list every :class:`~torchgmm.Repair`.
    Only a restart whose statistics are not finite is dropped
    (:class:`~torchgmm.FailedRestartWarning`, ``-inf`` in
    ``init_lower_bounds_``), and ``fit`` raises only when every restart is.

    Examples
    --------
    >>> import numpy as np
    >>> from torchgmm import GaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-5, 1, (100, 2)), rng.normal(5, 1, (100, 2))])
    >>> gm = GaussianMixture(n_components=2, n_init=4, random_state=0).fit(X)
    >>> np.sort(gm.means_[:, 0]).round(0)
    array([-5.,  5.])
    >>> gm.predict(X[:3]).shape
    (3,)
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        device: Any = None,
        dtype: Any = None,
        batch_size: int | None = None,
        matmul_precision: str | None = None,
        learning_decay: float = 0.7,
        learning_offset: float = 2.0,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_interval: int = 10,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.matmul_precision = matmul_precision
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.checkpoint_path = checkpoint_path
        self.checkpoint_interval = checkpoint_interval

    # ------------------------------------------------------------------ sklearn protocol

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> GaussianMixture:
        """Set constructor parameters, as scikit-learn's ``set_params``; returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}(). "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = []
        for name in self._param_names():
            value, default = getattr(self, name), defaults[name].default
            same = value is default
            if not same and not isinstance(value, (np.ndarray, Tensor)):
                try:
                    same = bool(value == default)
                except Exception:
                    same = False
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):  # only called by scikit-learn, so the import is safe
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "means_")

    # ------------------------------------------------------------------ checks

    def _check_parameters(self) -> CovarianceType:
        check_scalar(self.n_components, "n_components", int, low=1)
        check_scalar(self.tol, "tol", float, low=0)
        check_scalar(self.reg_covar, "reg_covar", float, low=0)
        check_scalar(self.max_iter, "max_iter", int, low=0)
        check_scalar(self.n_init, "n_init", int, low=1)
        check_scalar(self.warm_start, "warm_start", bool)
        check_scalar(self.verbose, "verbose", int, low=0)
        check_scalar(self.verbose_interval, "verbose_interval", int, low=1)
        if self.batch_size is not None:
            check_scalar(self.batch_size, "batch_size", int, low=1)
        check_scalar(self.checkpoint_interval, "checkpoint_interval", int, low=1)
        if self.checkpoint_path is not None:
            if not isinstance(self.checkpoint_path, (str, os.PathLike)):
                raise TypeError(
                    "'checkpoint_path' must be None, a str or an os.PathLike, got "
                    f"{type(self.checkpoint_path).__name__}."
                )
            path = Path(self.checkpoint_path)
            if path.is_dir():
                raise ValueError(f"checkpoint_path {str(path)!r} is a folder; give a file name inside it.")
            if not path.resolve().parent.is_dir():
                raise ValueError(f"checkpoint_path {str(path)!r}: its folder does not exist.")
        if self.init_params not in INIT_METHODS:
            raise ValueError(
                f"Invalid value for 'init_params': {self.init_params!r}. It must be one of {list(INIT_METHODS)}."
            )
        return get_covariance_type(self.covariance_type)

    def _check_online_parameters(self) -> CovarianceType:
        covariance = self._check_parameters()
        check_step_sizes(self.learning_decay, self.learning_offset)
        return covariance

    def _check_initial_parameters(self, covariance: CovarianceType, n_features: int) -> dict[str, Tensor]:
        """User-given ``*_init`` as float64 CPU tensors, validated against the data shape."""
        K, D = self.n_components, n_features
        given = {}
        for name, expected in (
            ("weights_init", (K,)),
            ("means_init", (K, D)),
            ("precisions_init", covariance.shape(K, D)),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            t = as_tensor(value, name).to("cpu", torch.float64)
            if tuple(t.shape) != expected:
                raise ValueError(
                    f"The parameter '{name}' should have the shape of {expected}, but got {tuple(t.shape)}."
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"The parameter '{name}' contains NaN or infinity.")
            given[name] = t
        if "weights_init" in given:
            w = given["weights_init"]
            if bool((w < 0).any()) or bool((w > 1).any()):
                raise ValueError(
                    "The parameter 'weights_init' should be in the range [0, 1], but got "
                    f"max value {float(w.max()):.5f}, min value {float(w.min()):.5f}."
                )
            if not math.isclose(float(w.sum()), 1.0, rel_tol=0, abs_tol=1e-6):
                raise ValueError(
                    f"The parameter 'weights_init' should be normalized, but got sum(weights) = {float(w.sum()):.5f}."
                )
        if "precisions_init" in given:
            covariance.check_precisions(given["precisions_init"])
        return given

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "means_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    # ------------------------------------------------------------------ fitting

    @_entry_point
    def fit(self, X: Any, y: Any = None, callback: Callable[[int, int, float], None] | None = None) -> GaussianMixture:
        """Fit the mixture by EM, running ``n_init`` restarts at once.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)
        y : ignored
        callback : callable, optional
            Called after every EM iteration as ``callback(iteration, n_running,
            best_lower_bound)`` (restarts still running, best lower bound so
            far), e.g. to drive a progress bar.

        Returns
        -------
        self
        """
        self._fit(X, labels=False, callback=callback)
        return self

    @_entry_point
    def fit_predict(self, X: Any, y: Any = None, callback: Callable[[int, int, float], None] | None = None) -> Any:
        """Fit the mixture, then return the label of each sample (as ``fit(X).predict(X)``).

        ``callback`` is as in :meth:`fit`.

        Raises
        ------
        ValueError
            For invalid parameters or data, or if every restart failed to factorise a covariance.
        """
        return self._fit(X, labels=True, callback=callback)

    @_entry_point
    def partial_fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """One stepwise-EM update from the mini-batch ``X`` (online EM).

        The first call initialises the mixture from that batch (``init_params``,
        or the given ``*_init``; one restart); every call then blends the
        batch's sufficient statistics into the running ones with weight
        ``(t + learning_offset) ** -learning_decay`` and sets the parameters
        from them. Batches may differ in size; features, device and dtype must
        stay the same. Under ``torch.distributed`` every rank calls it together
        (with the same ``n_components``, ``covariance_type``, dtype and
        ``batch_size``, on estimators that made as many updates) and the
        statistics are summed over ranks.

        Sets the fitted attributes of :meth:`fit`; ``n_iter_`` counts the
        updates, ``lower_bounds_`` holds each batch's mean log-likelihood under
        the parameters before its update, and ``converged_`` stays False.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For invalid parameters or data, or if the update makes a covariance
            impossible to factorise (the model is then left as it was).

        Examples
        --------
        >>> import numpy as np
        >>> from torchgmm import GaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> gm = GaussianMixture(2, random_state=0)
        >>> for _ in range(20):
        ...     centres = rng.choice([-5.0, 5.0], size=(256, 1))
        ...     gm = gm.partial_fit(centres + rng.normal(size=(256, 2)))
        >>> np.sort(gm.means_[:, 0]).round(0)
        array([-5.,  5.])
        """
        fitted = hasattr(self, "means_")
        with distributed.together():  # (see _fit)
            covariance = self._check_online_parameters()
            data, like = self._source(X, self.n_features_in_ if fitted else None)
            if fitted:
                data.dtype = resolve_dtype(self.dtype, as_tensor(self.means_))
        distributed.check_same(
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            dtype=str(data.dtype),
            batch_size=self.batch_size,
            n_iter_=self.n_iter_ if fitted else None,
        )
        data.scan(check_finite=not isinstance(data, TensorSource))
        device, dtype, shift = data.device, data.dtype, data.shift
        if fitted:
            params, _ = self._fitted_parameters(device, dtype, shift)
            step, history = self.n_iter_, list(self.lower_bounds_)
            previous_repairs = list(getattr(self, "repairs_", []))
        else:
            if data.n_samples < self.n_components:
                raise ValueError(
                    f"Expected n_samples >= n_components in the first partial_fit batch but got "
                    f"n_components = {self.n_components}, n_samples = {data.n_samples}."
                )
            with distributed.together():
                inits = self._check_initial_parameters(covariance, data.n_features)
                generator = make_generator(self.random_state, device)
            if distributed.is_distributed():
                generator.manual_seed(distributed.broadcast_int(generator.initial_seed()))
            init_repairs = RepairState.start(1, self.n_components, covariance, self.reg_covar, device)
            params, ok = self._initial_parameters(
                data, covariance, inits, generator, n_restarts=1, repairs=init_repairs
            )
            if ok is not None and not bool(ok.all()):
                raise ValueError(_ILL_DEFINED + _float32_advice(dtype))
            step, history = 0, []
            previous_repairs = init_repairs.events[0]
        eta = step_size(step, self.learning_decay, self.learning_offset)
        new, ok, log_likelihood, repairs = online_em_step(
            data, params, covariance, self.reg_covar, eta, self.batch_size, step=step
        )
        if not bool(ok.all()):
            raise ValueError(
                "The online EM update gave non-finite statistics or a covariance that could not be repaired; "
                "the model is unchanged. Scale the input data." + _float32_advice(dtype)
            )
        new_repairs = ([] if fitted else previous_repairs) + repairs[0]
        if new_repairs:
            warnings.warn(
                f"Degenerate components were repaired in this update: {describe([new_repairs])}. "
                "A larger reg_covar, fewer components or float64 data avoid them.",
                DegenerateComponentWarning,
                stacklevel=3,
            )
        self._set_fitted(new, covariance, shift, self.means_ if fitted else like)
        self.n_features_in_ = data.n_features
        self.n_iter_ = step + 1
        self.lower_bounds_ = history + [float(log_likelihood[0])]
        self.lower_bound_ = self.lower_bounds_[-1]
        self.converged_ = False
        self.init_lower_bounds_ = np.asarray([self.lower_bound_], dtype=np.float64)
        self.init_converged_ = np.zeros(1, dtype=bool)
        self.init_lower_bounds_history_ = [list(self.lower_bounds_)]
        self.repairs_ = previous_repairs + repairs[0]
        self.init_repairs_ = [list(self.repairs_)]
        return self

    def save(self, path: Any) -> None:
        """Write the fitted model to ``path``, a file read back without executing code.

        See :mod:`torchgmm.persistence`: plain tensors and values through
        ``torch.save``, with the constructor parameters and the library
        version; written to a temporary file first, so it is never left half
        written.

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> from torchgmm import GaussianMixture
        >>> X = np.random.default_rng(0).normal(size=(100, 2))
        >>> gm = GaussianMixture(2, random_state=0).fit(X)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> gm.save(path)
        >>> bool((GaussianMixture.load(path).predict(X) == gm.predict(X)).all())
        True
        """
        from torchgmm import persistence

        persistence.save(self, path)

    @classmethod
    def load(cls, path: Any, map_location: Any = None) -> GaussianMixture:
        """Read a model written by :meth:`save` (with ``torch.load(weights_only=True)``).

        ``map_location`` moves tensor outputs elsewhere (e.g. ``'cpu'``).

        Raises
        ------
        ValueError
            If the file is not a torchgmm model file.
        """
        from torchgmm import persistence

        return persistence.load(path, map_location)

    def to_module(self, learnable: bool = False, check_finite: bool = True):
        """The fitted mixture as a :class:`~torchgmm.module.GaussianMixtureModule`.

        On the estimator's device (or where the fitted attributes live) and in
        their dtype; ``learnable=True`` makes the parameters trainable.

        Examples
        --------
        >>> import torch
        >>> from torchgmm import GaussianMixture
        >>> X = torch.cat([torch.randn(200, 2) - 4, torch.randn(200, 2) + 4])
        >>> module = GaussianMixture(2, random_state=0).fit(X).to_module()
        >>> module.log_prob(X[:5]).shape
        torch.Size([5])
        """
        from torchgmm.module import GaussianMixtureModule

        self._check_is_fitted()
        means = as_tensor(self.means_)
        device = resolve_device(self.device, means)
        return GaussianMixtureModule(
            as_tensor(self.weights_).to(device),
            means.to(device),
            as_tensor(self.precisions_cholesky_).to(device, means.dtype),
            self.covariance_type,
            learnable=learnable,
            reg_covar=self.reg_covar,
            learning_decay=self.learning_decay,
            learning_offset=self.learning_offset,
            check_finite=check_finite,
        )

    def _fit(self, X: Any, labels: bool, callback: Callable[[int, int, float], None] | None = None) -> Any:
        # Called from fit and fit_predict under their precision wrapper: stacklevel=4 is the caller.
        # Under torch.distributed, what fails on one rank only (its parameters, its shard, its reading of the
        # checkpoint) fails on every rank: each such step runs in distributed.together().
        with distributed.together():
            covariance = self._check_parameters()
            data, like = self._source(X)
        distributed.check_same(
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            n_init=self.n_init,
            dtype=str(data.dtype),
            batch_size=self.batch_size,
        )
        data.scan(check_finite=not isinstance(data, TensorSource))
        n_samples, n_features = data.n_samples, data.n_features
        if n_samples < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {n_samples}."
            )
        device, dtype = data.device, data.dtype
        warm = self.warm_start and hasattr(self, "converged_")
        with distributed.together():
            inits = self._check_initial_parameters(covariance, n_features)
            generator = make_generator(self.random_state, device)
            if warm and self.n_features_in_ != n_features:
                raise ValueError(
                    f"X has {n_features} features, but the warm-started GaussianMixture was fitted on "
                    f"{self.n_features_in_} features."
                )
        # (ranks that start differently would take different paths, each into collectives the others never reach)
        distributed.check_same(warm_start=warm, initial_parameters=sorted(inits))
        if distributed.is_distributed():  # every rank draws what rank 0 draws
            generator.manual_seed(distributed.broadcast_int(generator.initial_seed()))
        shift = data.shift

        # the checkpoint describes the fit by rank 0's random_state, the seed every rank used
        seed = distributed.broadcast(_seed_description(self.random_state))
        with distributed.together():
            checkpoint = self._checkpoint(data, inits, warm, seed)
            resumed = checkpoint.load() if checkpoint is not None else None
        distributed.check_same(resumed_from_checkpoint=resumed is not None)
        if resumed is not None:
            plain, data.shift = resumed  # the state's parameters are centred on the saved mean
            with distributed.together():
                try:
                    state = EMState.from_plain(plain, device, dtype)
                    expected = (1 if warm else self.n_init, self.n_components, n_features)
                    if tuple(state.params.means.shape) != expected or len(state.lower_bound) != expected[0]:
                        raise ValueError(f"its means have shape {tuple(state.params.means.shape)}, not {expected}")
                except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
                    raise checkpoint.damaged(exc) from None
            if self.verbose:
                print(f"Resuming from {checkpoint.path} after iteration {state.iteration}")
        elif warm:
            params, _ = self._fitted_parameters(device, dtype, data.shift)
            state = EMState.start(params, covariance, self.reg_covar, lower_bound=float(self.lower_bound_))
        else:
            repairs = RepairState.start(self.n_init, self.n_components, covariance, self.reg_covar, device)
            params, ok = self._initial_parameters(data, covariance, inits, generator, repairs=repairs)
            state = EMState.start(params, covariance, self.reg_covar, ok, repairs=repairs)
        save = None
        if checkpoint is not None and distributed.rank() == 0:

            def save(state: EMState) -> None:
                checkpoint.save(state.to_plain())

            if resumed is None:
                save(state)  # the initialisation is not redone on resume
        shift = data.shift

        result = run_em(
            data,
            state.params,
            covariance,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            rows=self.batch_size,
            verbose=self.verbose,
            verbose_interval=self.verbose_interval,
            callback=callback,
            resume=state,
            checkpoint=save,
            checkpoint_interval=self.checkpoint_interval,
        )
        best = result.best()
        if best is None:
            if save is not None:
                checkpoint.remove()  # the failure is deterministic: resuming would fail again
            raise ValueError(_ILL_DEFINED + _float32_advice(dtype))
        if any(result.failed):
            failed = [r for r, f in enumerate(result.failed) if f]
            warnings.warn(
                f"{len(failed)} of {len(result.failed)} restarts were dropped because their statistics were "
                f"not finite or a covariance could not be repaired (restarts {failed}); the best of the others "
                "is kept. Scale the input data to keep them.",
                FailedRestartWarning,
                stacklevel=4,
            )
        events = result.repairs.events
        if repaired_restarts(events):
            warnings.warn(
                f"Degenerate components were repaired in {repaired_restarts(events)} of "
                f"{len(events)} restarts ({len(events[best])} repairs in the kept one): "
                f"{describe(events)}. See repairs_ and init_repairs_; a larger reg_covar, fewer "
                "components or float64 data avoid them.",
                DegenerateComponentWarning,
                stacklevel=4,
            )
        if not result.converged[best] and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=4,
            )

        kept = result.params.select(torch.tensor([best], device=device))
        self._set_fitted(kept, covariance, shift, like)
        self.converged_ = bool(result.converged[best])
        self.n_iter_ = int(result.n_iter[best])
        self.lower_bound_ = float(result.lower_bound[best])
        self.lower_bounds_ = list(result.lower_bounds[best])
        self.init_lower_bounds_ = np.asarray(result.lower_bound, dtype=np.float64)
        self.init_converged_ = np.asarray(result.converged, dtype=bool)
        self.init_lower_bounds_history_ = [list(h) for h in result.lower_bounds]
        self.init_repairs_ = [list(restart) for restart in events]
        self.repairs_ = list(events[best])
        self.n_features_in_ = n_features
        if save is not None:
            checkpoint.remove()
        if not labels:
            return None
        # Labels from the kept parameters, so fit_predict(X) == fit(X).predict(X).
        return output_like(self._map_chunks(data, lambda _, log_resp: log_resp.argmax(-1), 4), like)

    def _checkpoint(self, data: DataSource, inits: dict[str, Tensor], warm: bool, seed: int | None):
        """The :class:`~torchgmm.persistence.Checkpoint` of this fit, described by all that decides its result.

        ``seed`` is rank 0's :func:`_seed_description`: under ``torch.distributed`` every rank draws with rank
        0's seed, so the other ranks' ``random_state`` does not change the fit (nor refuse its checkpoint).
        """
        from torchgmm.persistence import Checkpoint  # (persistence imports the package)

        if self.checkpoint_path is None:
            return None
        names = ("n_components", "covariance_type", "tol", "reg_covar", "n_init", "init_params", "warm_start")
        fit = {name: getattr(self, name) for name in names}
        fit["random_state"] = seed
        fit.update(dtype=str(data.dtype), n_samples=data.n_samples, n_features=data.n_features, **inits)
        fit["warm_start"] = warm
        return Checkpoint(self.checkpoint_path, fit, data.shift)

    def _initial_parameters(
        self,
        data: DataSource,
        covariance: CovarianceType,
        inits: dict[str, Tensor],
        generator: torch.Generator,
        n_restarts: int | None = None,
        repairs: RepairState | None = None,
    ) -> tuple[MixtureParameters, Tensor | None]:
        R, K = n_restarts or self.n_init, self.n_components
        device, dtype = data.device, data.dtype
        if len(inits) == 3:
            params, ok = None, None
        else:
            # Out of memory, initialisation starts over in smaller chunks, with the same draws and no repairs.
            seed_state = generator.get_state()
            pristine = repairs.copy() if repairs is not None else None
            # halving starts from the E-step's chunks; the first try leaves each pass its own (or batch_size)
            planned = chunk_rows(
                data.n_samples, covariance.elements_per_row(R, K, data.n_features), device, self.batch_size
            )
            first = self.batch_size

            def run(rows: int):
                generator.set_state(seed_state)
                state = pristine.copy() if pristine is not None else None
                out = initialize(
                    self.init_params,
                    data,
                    K,
                    R,
                    covariance,
                    self.reg_covar,
                    generator,
                    rows=first if rows == planned else rows,
                    state=state,
                    covariances_used="precisions_init" not in inits,
                )
                return out, state

            ((params, ok), state), _ = retry_with_fewer_rows(run, planned, "the initialisation", device, 5)
            if repairs is not None:
                repairs.reg_covar, repairs.reseeds, repairs.events = state.reg_covar, state.reseeds, state.events
        weights = inits.get("weights_init")
        means = inits.get("means_init")
        precisions = inits.get("precisions_init")

        def batch(t: Tensor) -> Tensor:
            return t.to(device, dtype).unsqueeze(0).expand(R, *t.shape).contiguous()

        weights = batch(weights) if weights is not None else params.weights
        means = batch(means - data.shift.to("cpu", torch.float64)) if means is not None else params.means
        if precisions is not None:
            P = covariance.precisions_cholesky_from_precisions(precisions)
            cov = covariance.covariances_from_precisions_cholesky(P)
            P, cov = batch(P), batch(cov)
        else:
            P, cov = params.precisions_cholesky, params.covariances
        if ok is not None and precisions is not None:
            ok = torch.ones_like(ok)
        return MixtureParameters(weights, means, cov, P), ok

    def _fitted_parameters(
        self, device: torch.device, dtype: torch.dtype, shift: Tensor | None = None
    ) -> tuple[MixtureParameters, Tensor]:
        """The fitted attributes as a batch of one restart, with means centred on ``shift``.

        ``shift`` (float64, ``[D]``) defaults to the mixture mean, a stand-in for
        the data mean that the model alone gives. Returns ``(params, shift)``.
        """

        def get(name: str, to_dtype: torch.dtype = dtype) -> Tensor:
            return as_tensor(getattr(self, name)).to(device, to_dtype).unsqueeze(0)

        weights, means = get("weights_", torch.float64), get("means_", torch.float64)
        if shift is None:
            shift = (weights.unsqueeze(-1) * means).sum(1).squeeze(0)
        params = MixtureParameters(
            weights.to(dtype), (means - shift).to(dtype), get("covariances_"), get("precisions_cholesky_")
        )
        return params, shift

    def _set_fitted(self, params: MixtureParameters, covariance: CovarianceType, shift: Tensor, like: Any) -> None:
        params = params.map(lambda t: t.squeeze(0))
        # every value first, then the attributes: running out of memory half-way leaves the old ones
        values = {
            "weights_": output_like(params.weights, like),
            "means_": output_like((params.means.to(torch.float64) + shift).to(params.means.dtype), like),
            "covariances_": output_like(params.covariances, like),
            "precisions_cholesky_": output_like(params.precisions_cholesky, like),
            "precisions_": output_like(covariance.precisions(params.precisions_cholesky), like),
        }
        for name, value in values.items():
            setattr(self, name, value)

    # ------------------------------------------------------------------ inference

    def _source(self, X: Any, n_features: int | None = None) -> tuple[DataSource, Any]:
        """The data source for ``X`` and what outputs should look like (see :mod:`torchgmm.data`).

        An in-memory array is checked whole here; a chunked source is checked
        chunk by chunk by its first pass.
        """
        if is_chunked(X):
            data = make_source(X, self.batch_size)
            first = data.peek()
            if n_features is not None and first.shape[-1] != n_features:
                raise ValueError(
                    f"X has {first.shape[-1]} features, but GaussianMixture is expecting "
                    f"{n_features} features as input."
                )
            like = first if data.gives_tensors else np.empty(0)
        else:
            first = check_array(X, n_features=n_features)
            data = TensorSource(first)
            like = X
        data.device = resolve_device(self.device, first)
        data.dtype = resolve_dtype(self.dtype, first)
        return data, like

    def _map_chunks(self, data: DataSource, fn: Callable[[Tensor, Tensor], Tensor], stacklevel: int = 3) -> Tensor:
        """``fn(log_prob_norm [n], log_resp [n, K])`` of every chunk of a scanned source, concatenated.

        A pass that runs out of memory starts over in smaller chunks (see
        :mod:`torchgmm.memory`); ``stacklevel`` (1: the caller's line) points its warning at the user's call.
        """
        covariance = get_covariance_type(self.covariance_type)
        params, _ = self._fitted_parameters(data.device, data.dtype, data.shift)
        K, D = params.means.shape[1:]
        work = working_dtype(params, covariance)
        params = params.map(lambda t: t.to(work))

        def run(rows: int) -> Tensor:
            parts = []
            for _, x in data.chunks(rows):
                log_prob_norm, log_resp = estimate_log_prob_resp(x.to(work), params, covariance)
                parts.append(fn(log_prob_norm.squeeze(0).to(data.dtype), log_resp.squeeze(0).to(data.dtype)))
            return torch.cat(parts)

        rows = chunk_rows(data.local_samples, covariance.elements_per_row(1, K, D), data.device, self.batch_size)
        return retry_with_fewer_rows(run, rows, "predicting", data.device, stacklevel + 1)[0]

    def _checked(self, X: Any) -> tuple[DataSource, Any]:
        """A scanned source for inference on this process's rows (no collectives)."""
        self._check_is_fitted()
        data, like = self._source(X, self.n_features_in_)
        # the model's dtype unless one was asked for
        data.dtype = resolve_dtype(self.dtype, as_tensor(self.means_))
        data.scan(collective=False, check_finite=not isinstance(data, TensorSource))
        return data, like

    @_entry_point
    def predict(self, X: Any) -> Any:
        """Most likely component of each sample, shape ``(n_samples,)``, int64."""
        data, like = self._checked(X)
        return output_like(self._map_chunks(data, lambda _, log_resp: log_resp.argmax(-1)), like)

    @_entry_point
    def predict_proba(self, X: Any) -> Any:
        """Responsibilities, shape ``(n_samples, n_components)``; rows sum to 1."""
        data, like = self._checked(X)
        return output_like(self._map_chunks(data, lambda _, log_resp: log_resp.exp()), like)

    @_entry_point
    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of each sample under the mixture, shape ``(n_samples,)``."""
        data, like = self._checked(X)
        return output_like(self._map_chunks(data, lambda log_prob_norm, _: log_prob_norm), like)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per sample (higher is better; used by ``GridSearchCV``)."""
        total, n = self._total_log_likelihood(X)
        return total / n

    def _n_parameters(self) -> int:
        K, D = self.n_components, self.n_features_in_
        return get_covariance_type(self.covariance_type).n_parameters(K, D) + K * D + K - 1

    @_entry_point
    def _total_log_likelihood(self, X: Any) -> tuple[float, int]:
        data, _ = self._checked(X)
        total = self._map_chunks(data, lambda log_prob_norm, _: log_prob_norm.to(torch.float64).sum().view(1), 4).sum()
        return float(total), data.local_samples

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        total, n = self._total_log_likelihood(X)
        return -2.0 * total + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        total, _ = self._total_log_likelihood(X)
        return -2.0 * total + 2.0 * self._n_parameters()

    def sample(self, n_samples: int = 1) -> tuple[Any, Any]:
        """Draw samples from the fitted mixture.

        Returns
        -------
        X : array of shape (n_samples, n_features)
            Samples grouped by component, in component order.
        y : array of shape (n_samples,)
            Their component labels.

        Same type and device as the fitted attributes. Seeded by
        ``random_state``, so an int seed gives the same draws on every call.
        """
        self._check_is_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample."
            )
        covariance = get_covariance_type(self.covariance_type)
        means = as_tensor(self.means_)
        device = resolve_device(self.device, means)
        dtype = resolve_dtype(self.dtype, means)
        params, shift = self._fitted_parameters(device, dtype)
        params = params.map(lambda t: t.squeeze(0))
        generator = make_generator(self.random_state, device)
        labels = torch.multinomial(params.weights, int(n_samples), replacement=True, generator=generator)
        counts = torch.bincount(labels, minlength=self.n_components).tolist()
        parts = []
        for k, count in enumerate(counts):
            if count:
                z = torch.randn(count, means.shape[1], generator=generator, device=device, dtype=dtype)
                offset = (params.means[k].to(torch.float64) + shift).to(dtype)
                parts.append(offset + covariance.colour(z, params.precisions_cholesky, k))
        y = torch.repeat_interleave(torch.arange(self.n_components, device=device), torch.tensor(counts, device=device))
        return output_like(torch.cat(parts), self.means_), output_like(y, self.means_)


def _seed_description(random_state: Any) -> int | None:
    """``random_state`` as a checkpoint describes it: an int seed, or None (no seed, or a NumPy generator)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return None


def _float32_advice(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return " The numerical accuracy can also be improved by passing float64 data instead of float32."
    return ""
