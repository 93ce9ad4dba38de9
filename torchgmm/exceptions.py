"""Exceptions and warnings raised by torchgmm.

Owns: the exception and warning classes users catch and filter. Must not: import anything else from
torchgmm, or raise them itself.
"""

from __future__ import annotations

import torch

__all__ = [
    "ConvergenceWarning",
    "NotFittedError",
    "FailedRestartWarning",
    "DegenerateComponentWarning",
    "OutOfMemoryWarning",
    "OutOfMemoryError",
]


class ConvergenceWarning(UserWarning):
    """The best restart stopped at ``max_iter`` before its lower bound converged."""


class FailedRestartWarning(UserWarning):
    """Some restarts were dropped: their statistics were not finite, or a covariance could not be repaired."""


class DegenerateComponentWarning(UserWarning):
    """Some components were repaired: their ``reg_covar`` raised, or re-seeded (see :mod:`torchgmm.mstep`)."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    Subclasses both ``ValueError`` and ``AttributeError``, as scikit-learn's
    ``NotFittedError`` does, so code written for either keeps working.
    """


class OutOfMemoryWarning(UserWarning):
    """A pass over the data ran out of memory and went on in smaller chunks (see :mod:`torchgmm.passes`)."""


class OutOfMemoryError(torch.cuda.OutOfMemoryError):
    """Memory ran out where smaller chunks do not help; the message says what to change.

    A subclass of torch's ``OutOfMemoryError`` (a ``RuntimeError``), so code
    that catches that keeps working, on CPU too.
    """
