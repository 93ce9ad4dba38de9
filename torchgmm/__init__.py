"""torchgmm: Gaussian mixture models fitted by batched EM on CPU or CUDA with PyTorch."""

from torchgmm._version import __version__
from torchgmm.estimator import GaussianMixture
from torchgmm.exceptions import (
    ConvergenceWarning,
    DegenerateComponentWarning,
    FailedRestartWarning,
    NotFittedError,
    OutOfMemoryError,
    OutOfMemoryWarning,
)
from torchgmm.module import GaussianMixtureModule
from torchgmm.mstep import Repair
from torchgmm.selection import GaussianMixtureSelection

__all__ = [
    "GaussianMixture",
    "GaussianMixtureModule",
    "GaussianMixtureSelection",
    "Repair",
    "ConvergenceWarning",
    "DegenerateComponentWarning",
    "FailedRestartWarning",
    "NotFittedError",
    "OutOfMemoryError",
    "OutOfMemoryWarning",
    "__version__",
]
