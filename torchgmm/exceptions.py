"""Exceptions and warnings raised by torchgmm."""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "NotFittedError", "FailedRestartWarning", "DegenerateComponentWarning"]


class ConvergenceWarning(UserWarning):
    """The best restart stopped at ``max_iter`` before its lower bound converged."""


class FailedRestartWarning(UserWarning):
    """Some restarts were dropped: their statistics were not finite, or a covariance could not be repaired."""


class DegenerateComponentWarning(UserWarning):
    """Some components were repaired: their ``reg_covar`` raised, or re-seeded (see :mod:`torchgmm.repair`)."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    Subclasses both ``ValueError`` and ``AttributeError``, as scikit-learn's
    ``NotFittedError`` does, so code written for either keeps working.
    """
