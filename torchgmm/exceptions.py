"""Exceptions and warnings raised by torchgmm.

Owns: the exception and warning classes users catch and filter, and their scikit-learn-compatible
forms. Must not: import anything else from torchgmm, import scikit-learn, or raise them itself.

Code written for scikit-learn catches ``sklearn.exceptions.NotFittedError`` and filters
``sklearn.exceptions.ConvergenceWarning``. When scikit-learn is already imported in the process,
:func:`compatible` gives the class to raise or warn with: a subclass of both torchgmm's class and
scikit-learn's of the same name, so ``except`` and ``filterwarnings`` on either one catch it. When
scikit-learn is not imported, nobody can be matching on its classes, so torchgmm's own class is used and
``import torchgmm`` never imports scikit-learn.
"""

from __future__ import annotations

import sys
from typing import TypeVar

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


# ---------------------------------------------------------------- scikit-learn-compatible forms

_T = TypeVar("_T", bound=type)
_COMPATIBLE_NAMES = ("NotFittedError", "ConvergenceWarning")
_compatible_cache: dict[str, type] = {}


def _sklearn_class(name: str) -> type | None:
    """scikit-learn's ``sklearn.exceptions.<name>`` if scikit-learn is imported (never imports it otherwise)."""
    if "sklearn" not in sys.modules:
        return None
    try:
        import sklearn.exceptions  # already loaded with sklearn itself: costs a dictionary lookup
    except ImportError:  # a broken or partial install: torchgmm's own class still works
        return None
    return getattr(sklearn.exceptions, name, None)


def compatible(cls: _T) -> _T:
    """``cls``, or a subclass of ``cls`` and of scikit-learn's class of the same name if scikit-learn is imported.

    For :class:`NotFittedError` and :class:`ConvergenceWarning` only; the subclass is built once per process
    and keeps ``cls``'s name, so tracebacks and warning lines read the same either way.
    """
    name = cls.__name__
    if name not in _COMPATIBLE_NAMES or globals().get(name) is not cls:
        raise ValueError(f"compatible() takes NotFittedError or ConvergenceWarning, got {cls!r}.")
    if name in _compatible_cache:
        return _compatible_cache[name]
    theirs = _sklearn_class(name)
    if theirs is None:
        return cls
    both = type(name, (cls, theirs), {"__module__": __name__, "__doc__": cls.__doc__, "__reduce__": _reduce})
    _compatible_cache[name] = both
    return both


def _reduce(self):
    # an instance pickles by the name of its torchgmm class, and unpickles into the form that suits the
    # receiving process (which may or may not have scikit-learn imported)
    return (_rebuild, (type(self).__name__, self.args))


def _rebuild(name: str, args: tuple):
    return compatible(globals()[name])(*args)
