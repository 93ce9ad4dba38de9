"""Faults: checkpoints that resume to exactly the uninterrupted fit, and running out of memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, FITTED_ATTRIBUTES, assert_same_attributes, attribute_values, make_blobs

import torchgmm
import torchgmm.data
import torchgmm.fitter
import torchgmm.passes
import torchgmm.trainer
from torchgmm import (
    ConvergenceWarning,
    DegenerateComponentWarning,
    GaussianMixture,
    OutOfMemoryError,
    OutOfMemoryWarning,
)
from torchgmm.data import ScannedData
from torchgmm.passes import is_out_of_memory, retry_with_fewer_rows

# Everything a fit sets, including what fit adds beyond scikit-learn's attributes.
RESULTS = FITTED_ATTRIBUTES


def hard_data() -> np.ndarray:
    """Blobs plus five copies of one far point: with reg_covar=0 a component collapses and is repaired mid-fit."""
    X, _ = make_blobs(80, 3, 3, 4.0, seed=4)
    return np.concatenate([X, np.repeat([[30.0, 30.0, 30.0]], 5, axis=0)])


def estimator(covariance_type: str, **params) -> GaussianMixture:
    base = dict(
        n_components=4,
        covariance_type=covariance_type,
        n_init=3,
        init_params="random_from_data",
        reg_covar=0.0,
        tol=1e-8,
        max_iter=40,
        random_state=1,
        batch_size=64,
    )
    return GaussianMixture(**{**base, **params})


def fit_quietly(gm: GaussianMixture, X, **kwargs) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X, **kwargs)


def assert_same_fit(a: GaussianMixture, b: GaussianMixture) -> None:
    """Bit for bit: a resumed fit replays the same arithmetic as the uninterrupted one."""
    for name in RESULTS:
        va, vb = getattr(a, name), getattr(b, name)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:
            assert va == vb, name


def interrupt_at(iteration: int):
    def callback(i, running, best):
        if i == iteration:
            raise KeyboardInterrupt

    return callback


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_resumed_fit_equals_the_uninterrupted_one(tmp_path, covariance_type):
    X = hard_data()
    whole = fit_quietly(estimator(covariance_type), X)
    path = tmp_path / "fit.ckpt"
    first = estimator(covariance_type, checkpoint_path=path)
    with pytest.raises(KeyboardInterrupt):
        fit_quietly(first, X, callback=interrupt_at(7))
    assert path.is_file() and not hasattr(first, "means_")
    resumed = fit_quietly(estimator(covariance_type, checkpoint_path=path), X)
    assert_same_fit(whole, resumed)
    assert not path.exists()  # a finished fit removes its checkpoint
    if covariance_type != "tied":  # the collapse the data are built for happened: repairs are in the state too
        assert any(resumed.init_repairs_)


def test_checkpoint_holds_the_last_completed_iteration(tmp_path):
    X = hard_data()
    path = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit_quietly(estimator("full", checkpoint_path=path), X, callback=interrupt_at(5))
    state = torch.load(path, weights_only=True)["state"]
    assert state["iteration"] == 5 and len(state["lower_bounds"]) == 3


def test_periodic_checkpoints_survive_a_killed_process(tmp_path):
    """A process killed outright (no handler runs) leaves the last periodic checkpoint, which resumes exactly."""
    X = hard_data()
    np.save(tmp_path / "X.npy", X)
    path = tmp_path / "fit.ckpt"
    script = textwrap.dedent(
        f"""
        import os, warnings
        import numpy as np
        from torchgmm import GaussianMixture
        warnings.simplefilter("ignore")
        def kill(iteration, running, best):
            if iteration == 8:
                os._exit(3)
        gm = GaussianMixture(4, n_init=3, init_params="random_from_data", reg_covar=0.0, tol=1e-8, max_iter=40,
                             random_state=1, batch_size=64, checkpoint_path={str(path)!r}, checkpoint_interval=3)
        gm.fit(np.load({str(tmp_path / "X.npy")!r}), callback=kill)
        """
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=300).returncode == 3
    assert torch.load(path, weights_only=True)["state"]["iteration"] == 6  # written at 3 and 6
    resumed = fit_quietly(estimator("full", checkpoint_path=path, checkpoint_interval=3), X)
    assert_same_fit(fit_quietly(estimator("full"), X), resumed)


def test_initialisation_is_checkpointed_and_not_redone(tmp_path, monkeypatch):
    X = hard_data()
    path = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit_quietly(estimator("diag", checkpoint_path=path), X, callback=interrupt_at(1))

    def no_init(*args, **kwargs):
        raise AssertionError("a resumed fit initialised again")

    monkeypatch.setattr(torchgmm.fitter, "initialize", no_init)
    resumed = fit_quietly(estimator("diag", checkpoint_path=path), X)
    monkeypatch.undo()
    assert_same_fit(fit_quietly(estimator("diag"), X), resumed)


def test_resume_with_more_iterations_continues_the_fit(tmp_path):
    X = hard_data()
    path = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit_quietly(estimator("spherical", checkpoint_path=path, max_iter=10), X, callback=interrupt_at(6))
    resumed = fit_quietly(estimator("spherical", checkpoint_path=path, max_iter=25), X)
    assert_same_fit(fit_quietly(estimator("spherical", max_iter=25), X), resumed)


def test_an_error_mid_fit_leaves_a_checkpoint(tmp_path, monkeypatch):
    """Running out of memory in an M-step at iteration 4: the state of iteration 3 is saved, and resumes."""
    X = hard_data()
    path = tmp_path / "fit.ckpt"
    real_m_step, calls = torchgmm.trainer.maximise, []

    def failing_m_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_m_step(*args, **kwargs)

    monkeypatch.setattr(torchgmm.trainer, "maximise", failing_m_step)
    with pytest.raises(OutOfMemoryError, match=r"ran out of memory .* in fit"):
        fit_quietly(estimator("tied", checkpoint_path=path), X)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["state"]["iteration"] == 3
    resumed = fit_quietly(estimator("tied", checkpoint_path=path), X)
    assert_same_fit(fit_quietly(estimator("tied"), X), resumed)


def test_checkpoint_of_another_fit_is_refused(tmp_path):
    X = hard_data()
    path = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit_quietly(estimator("full", checkpoint_path=path), X, callback=interrupt_at(2))
    with pytest.raises(ValueError, match=r"checkpoint of another fit: n_components is 4 there and 3 here\. Delete it"):
        estimator("full", n_components=3, checkpoint_path=path).fit(X)
    with pytest.raises(ValueError, match=r"another fit: covariance_type is 'full' there and 'diag' here"):
        estimator("diag", checkpoint_path=path).fit(X)
    with pytest.raises(ValueError, match=r"another fit: dtype is 'torch.float64' there and 'torch.float32' here"):
        estimator("full", checkpoint_path=path).fit(X.astype(np.float32))
    with pytest.raises(ValueError, match=r"another fit: n_samples is 245 there and 244 here"):
        estimator("full", checkpoint_path=path).fit(X[1:])
    with pytest.raises(ValueError, match=r"checkpoint of a fit on other data \(the mean of the rows differs\)"):
        estimator("full", checkpoint_path=path).fit(X + 1.0)
    # reg_covar 0 and 0.0 are the same fit; the refusals left the file for the right one
    assert fit_quietly(estimator("full", checkpoint_path=path, reg_covar=0), X).converged_


def test_a_failed_fit_removes_its_checkpoint(tmp_path):
    path = tmp_path / "fit.ckpt"
    X = 1e200 * np.random.default_rng(0).normal(size=(30, 2))  # squares overflow: every restart fails
    with pytest.raises(ValueError, match="every restart produced non-finite statistics"):
        GaussianMixture(2, checkpoint_path=path).fit(X)
    assert not path.exists()


def test_model_files_keep_repairs(tmp_path):
    gm = fit_quietly(estimator("full"), hard_data())
    assert any(gm.init_repairs_)
    gm.save(tmp_path / "m.pt")
    loaded = GaussianMixture.load(tmp_path / "m.pt")
    assert loaded.repairs_ == gm.repairs_ and loaded.init_repairs_ == gm.init_repairs_
    assert all(isinstance(r, torchgmm.Repair) for r in loaded.repairs_)


def test_cli_resumes_after_ctrl_c(tmp_path, monkeypatch, capsys):
    """`torchgmm fit --checkpoint`: Ctrl-C keeps the state and says so; the same command resumes to the same model."""
    from torchgmm import cli
    from torchgmm.cli.progress import Progress

    X = hard_data()
    np.save(tmp_path / "X.npy", X)
    argv = ["fit", str(tmp_path / "X.npy"), "-k", "4", "--reg-covar", "0", "--tol", "1e-8", "--max-iter", "40"]
    argv += ["--init-params", "random_from_data", "--seed", "1", "--batch-size", "64", "-o"]
    assert cli.main([*argv, str(tmp_path / "whole.pt"), "-q"]) == 0
    real_progress = Progress.__call__

    def interrupted(self, iteration, running, best):
        real_progress(self, iteration, running, best)
        if iteration == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "__call__", interrupted)
    resumable = [*argv, str(tmp_path / "m.pt"), "--checkpoint", str(tmp_path / "c.ckpt"), "--checkpoint-interval", "2"]
    assert cli.main(resumable) == 130
    assert "run the same command to resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert cli.main(resumable) == 0
    assert "resuming from checkpoint" in capsys.readouterr().err
    whole, resumed = GaussianMixture.load(tmp_path / "whole.pt"), GaussianMixture.load(tmp_path / "m.pt")
    np.testing.assert_array_equal(whole.means_, resumed.means_)
    np.testing.assert_array_equal(whole.covariances_, resumed.covariances_)
    assert not (tmp_path / "c.ckpt").exists()


# ----------------------------------------------------------------------------- out of memory


def chunks_over(limit: int, refused: list[int]):
    """``ScannedData.chunks`` where every pass runs out of memory with chunks of more than ``limit`` rows.

    The first pass (fixed chunks of ``rows x D``, no per-component temporaries) is spared.
    """
    real = ScannedData.chunks

    def chunks(source, rows):
        if limit < rows != torchgmm.data._SCAN_ROWS:
            refused.append(rows)
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows} rows")
        return real(source, rows)

    return chunks


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_passes_retry_with_fewer_rows(monkeypatch, covariance_type):
    """Every pass (initialisation, EM, prediction) starts over in halves until its chunks fit, then warns once."""
    X, _ = make_blobs(100, 3, 3, 6.0, seed=0)  # 300 rows: 300 -> 150 -> 75 -> 37
    refused = []
    monkeypatch.setattr(ScannedData, "chunks", chunks_over(40, refused))
    gm = GaussianMixture(3, covariance_type=covariance_type, n_init=2, random_state=0)
    with pytest.warns(OutOfMemoryWarning) as record:
        labels = gm.fit_predict(X)
    messages = [str(w.message) for w in record if w.category is OutOfMemoryWarning]
    assert {m.split(" with compute tiles")[0] for m in messages} == {
        "Ran out of memory on cpu in the initialisation",
        "Ran out of memory on cpu in the E-step",
        "Ran out of memory on cpu in predicting",
    }
    assert all(m.endswith("with compute tiles of 300 rows; it went on with tiles of 37 rows.") for m in messages)
    assert all(w.filename == __file__ for w in record)  # pointed at the caller
    # the E-step kept its smaller chunks: it was refused in its first iteration only
    refused_before_predict = len(refused)
    with pytest.warns(OutOfMemoryWarning, match="in predicting"):  # each call finds out afresh
        gm.predict(X)
    assert len(refused) == refused_before_predict + 3
    monkeypatch.undo()
    # the same arithmetic as steps of 37 rows from the start
    same = GaussianMixture(3, covariance_type=covariance_type, n_init=2, random_state=0, batch_size=37).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(gm, name), getattr(same, name), err_msg=name)
    np.testing.assert_array_equal(labels, same.predict(X))


def test_cpu_allocator_failures_count_as_out_of_memory():
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried")
    assert is_out_of_memory(cpu) and is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocators' errors


def test_other_errors_are_not_retried():
    calls = []

    def run(rows):
        calls.append(rows)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        retry_with_fewer_rows(run, 64, "the E-step", torch.device("cpu"))
    assert calls == [64]


def test_one_row_that_does_not_fit_is_a_clear_error():
    def run(rows):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(
        OutOfMemoryError, match=r"in the E-step even with compute tiles of one row .*Use fewer restarts"
    ):
        retry_with_fewer_rows(run, 8, "the E-step", torch.device("cpu"))


def test_distributed_fits_do_not_retry_on_one_rank(monkeypatch):
    monkeypatch.setattr(torchgmm.passes.distributed, "is_distributed", lambda: True)

    def run(rows):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(
        OutOfMemoryError,
        match=r"with compute tiles of 1000 rows\. A distributed fit cannot start a pass over on one rank: free memory",
    ):
        retry_with_fewer_rows(run, 1000, "the E-step", torch.device("cpu"))


@pytest.mark.parametrize("where", ["fit", "refit", "partial_fit", "predict"])
def test_out_of_memory_outside_the_passes_leaves_the_estimator_as_it_was(monkeypatch, where):
    """An M-step (or any unchunked step) that runs out of memory: a clear error, and no half-set attributes."""
    X, _ = make_blobs(50, 2, 2, 6.0, seed=1)
    gm = GaussianMixture(2, random_state=0)
    if where != "fit":
        gm.fit(X)
    before = attribute_values(gm)

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes.")

    for module in (torchgmm.trainer, torchgmm.online):
        monkeypatch.setattr(module, "maximise", no_memory)
    monkeypatch.setattr(torchgmm.passes, "estimate_log_prob_resp", no_memory)
    call = {
        "fit": lambda: gm.fit(X),
        "refit": lambda: gm.fit(X),
        "partial_fit": lambda: gm.partial_fit(X),
        "predict": lambda: gm.predict(X),
    }[where]
    expected = {  # (predict's densities are per chunk: it shrinks them to one row before it gives up)
        "fit": "on the device in fit",
        "refit": "on the device in fit",
        "partial_fit": "on the device in partial_fit",
        "predict": "on cpu in predicting even with compute tiles of one row",
    }[where]
    with pytest.raises(
        OutOfMemoryError, match=rf"torchgmm ran out of memory {expected} .*Use fewer restarts \(n_init\)"
    ) as info:
        call()
    assert isinstance(info.value, torch.OutOfMemoryError)  # what code catching torch's error expects
    assert "can't allocate memory" in str(info.value.__cause__)
    assert_same_attributes(before, attribute_values(gm))


def test_fitted_attributes_are_set_together(monkeypatch):
    """Running out of memory while computing the last fitted attribute leaves none of the new ones."""
    X, _ = make_blobs(50, 2, 2, 6.0, seed=1)
    gm = GaussianMixture(2, random_state=0).fit(X)
    means = np.copy(gm.means_)
    covariance_type = type(torchgmm.covariance.get_covariance_type("full"))

    def no_memory(self, precisions_cholesky):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(covariance_type, "precisions", no_memory)
    with pytest.raises(OutOfMemoryError):
        gm.fit(X + 5.0)
    np.testing.assert_array_equal(gm.means_, means)


def test_retries_halve_the_compute_tiles_not_the_rows_read(monkeypatch):
    """batch_size sets the rows read per step; running out of memory halves the engine's tiles, not those."""
    X, _ = make_blobs(100, 3, 3, 6.0, seed=0)
    reads = []
    real_read = torchgmm.data.TensorSource.read

    def read(source, rows):
        reads.append(rows)
        return real_read(source, rows)

    monkeypatch.setattr(ScannedData, "chunks", chunks_over(10, []))
    monkeypatch.setattr(torchgmm.data.TensorSource, "read", read)
    with pytest.warns(OutOfMemoryWarning) as record:
        GaussianMixture(3, n_init=2, random_state=0, batch_size=30).fit(X)
    messages = {str(w.message) for w in record if w.category is OutOfMemoryWarning}
    assert {m.split(" in ")[1].split(" with")[0] for m in messages} == {"the initialisation", "the E-step"}
    # the tiles start from the engine's own size (all 300 rows fit its budget), not from batch_size
    assert all("with compute tiles of 300 rows; it went on with tiles of 9 rows." in m for m in messages), messages
    assert set(reads[1:]) == {30}  # (the first read is the one-row peek at the input)
