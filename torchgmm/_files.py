"""Writing files atomically: every file torchgmm writes (models, checkpoints, labels, plots) goes through here.

Owns: writing to a temporary file beside the target and renaming it over the target once complete, so that
an interrupted or failed write never leaves a half-written file or a stray temporary one. Must not know what
is written (its caller passes a function that writes to a path) nor import anything else from torchgmm.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temporary)`` on a temporary path beside ``path``, then rename it over ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    write : callable
        Writes the whole content to the path it is given (``np.save``, ``torch.save``, ``fig.savefig``...).

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist (the error names the folder, not the temporary file).
    IsADirectoryError
        If ``path`` is a folder.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(target.parent))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
