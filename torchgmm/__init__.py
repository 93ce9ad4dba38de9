"""torchgmm: Gaussian mixture models fitted by batched EM on CPU or CUDA with PyTorch."""

from torchgmm.estimator import GaussianMixture
from torchgmm.exceptions import ConvergenceWarning, FailedRestartWarning, NotFittedError
from torchgmm.module import GaussianMixtureModule

__all__ = [
    "GaussianMixture",
    "GaussianMixtureModule",
    "ConvergenceWarning",
    "FailedRestartWarning",
    "NotFittedError",
    "__version__",
]

__version__ = "0.1.0"
