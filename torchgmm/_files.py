"""Writing files atomically: every file torchgmm writes (models, checkpoints, labels, plots) goes through here.

Owns: writing to a temporary file beside the target and renaming it over the target once complete, so that
an interrupted or failed write never leaves a half-written file or a stray temporary one, with the mode any
program's new file gets (``0o666`` less the process's umask; an existing file keeps its own). Must not know
what is written (its caller passes a function that writes to a path) nor import anything else from torchgmm.
"""

from __future__ import annotations

import errno
import os
import stat
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
    mode = _mode(target)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(temporary)
        os.chmod(temporary, mode)  # mkstemp makes it 0600: readable by its owner only
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mode(target: Path) -> int:
    """The permissions ``target`` should get: its own if it exists, else those of a new file (0666 & ~umask)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the system says (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # (not thread-safe, hence only where /proc does not say)
    os.umask(mask)
    return mask
