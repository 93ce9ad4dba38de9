"""Files torchgmm writes get the mode any program's new files get (0666 less the umask), not mkstemp's 0600.

Models (``save``, ``torchgmm fit -o``), checkpoints, labels, responsibilities, per-sample scores and plots all
go through one atomic writer (``torchgmm._files.write_atomic``); under a umask of 022 they must be readable by
everyone, under 077 by their owner only, and a file that already exists keeps its own mode.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_blobs

from torchgmm import GaussianMixture
from torchgmm._files import write_atomic

SCRIPT = Path(sys.executable).parent / "torchgmm"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process's umask for the test, and restore it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(value: int) -> None:
        os.umask(value)

    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_0666_less_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    write_atomic(tmp_path / "a.txt", lambda name: Path(name).write_text("x"))
    assert mode(tmp_path / "a.txt") == expected
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left


def test_an_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "model.pt"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, lambda name: Path(name).write_text("new"))
    assert target.read_text() == "new" and mode(target) == 0o640


def test_models_and_checkpoints_are_readable_by_others(tmp_path, umask):
    umask(0o022)
    X, _ = make_blobs(60, 2, 3, 5.0, seed=0)
    gm = GaussianMixture(3, random_state=0).fit(X)
    gm.save(tmp_path / "model.pt")
    assert mode(tmp_path / "model.pt") == 0o644

    class Stop(Exception):
        pass

    def stop(iteration, running, best):
        raise Stop

    with pytest.raises(Stop):
        GaussianMixture(3, random_state=0, checkpoint_path=tmp_path / "fit.ckpt").fit(X, callback=stop)
    assert mode(tmp_path / "fit.ckpt") == 0o644


def test_command_line_outputs_are_readable_by_others(tmp_path):
    X, _ = make_blobs(60, 2, 3, 5.0, seed=0)
    np.save(tmp_path / "X.npy", X)

    def run(*args: str) -> None:
        done = subprocess.run(
            [str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
            preexec_fn=lambda: os.umask(0o022),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    run("fit", "X.npy", "-k", "3", "-q", "-o", "m.pt", "--labels", "labels.csv", "--responsibilities", "resp.npy")
    run("score", "m.pt", "X.npy", "--per-sample", "scores.npy")
    run("predict", "m.pt", "X.npy", "-o", "predicted.csv")
    run("plot", "m.pt", "X.npy", "-o", "plot.png", "-q")
    written = ["m.pt", "labels.csv", "resp.npy", "scores.npy", "predicted.csv", "plot.png"]
    assert {name: oct(mode(tmp_path / name)) for name in written} == {name: oct(0o644) for name in written}
