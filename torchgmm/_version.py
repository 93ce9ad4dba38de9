"""The library's version, in a module of its own so that any module can import it without importing the package.

Owns: the version string. Must not import anything from torchgmm.
"""

__version__ = "0.1.0"
