"""The installed ``torchgmm`` command (the README's main job)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from torchgmm.cli.metrics import adjusted_rand_index

# The console script installed beside this interpreter (the README's install puts it there).
SCRIPT = Path(sys.executable).parent / "torchgmm"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [shutil.which("torchgmm") or "torchgmm"]


def run(*args, cwd=None):
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Commands run in the test's own folder: default outputs (torchgmm-model.pt) land there, not in the checkout."""
    monkeypatch.chdir(tmp_path)


def test_fit_on_shipped_iris_prints_what_was_found(tmp_path):
    out = run("fit", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "torchgmm-model.pt").is_file()  # the default output, in the working directory
    assert "iris" in out.stdout and "K=3" in out.stdout
    assert re.search(r"converged\s+\d/4 restarts", out.stdout)
    ari = float(re.search(r"adjusted Rand index ([0-9.]+)", out.stdout).group(1))
    assert ari > 0.85  # a full-covariance mixture recovers the species well


def test_fit_on_a_csv_file_with_header(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-4, 1, (60, 2)), rng.normal(4, 1, (40, 2))])
    path = tmp_path / "points.csv"
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    out = run("fit", str(path), "-k", "2", "--covariance-type", "diag", "--dtype", "float32")
    assert out.returncode == 0, out.stderr
    assert "100 rows x 2 columns" in out.stdout and "covariance_type=diag" in out.stdout
    assert "float32" in out.stdout


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_rand_index_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, 200), rng.integers(0, 3, 200)
    b[:120] = a[:120] % 3
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


# ------------------------------------------------------------------------------------ fit, predict, score, select, plot


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(-5, 1, (150, 3)), rng.normal(5, 1, (100, 3))])
    np.save(folder / "X.npy", X)
    return folder, X


def one_error_line(out, *fragments):
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_fit_writes_model_labels_and_responsibilities_that_reload(blobs, tmp_path):
    folder, X = blobs
    out = run(
        "fit", str(folder / "X.npy"), "-k", "2", "-o", str(tmp_path / "m.pt"),
        "--labels", str(tmp_path / "labels.csv"), "--responsibilities", str(tmp_path / "resp.npy"), "--device", "cpu",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for field in ("K=2", "converged", "lower bound", "BIC", "time", "device       cpu"):
        assert field in out.stdout
    from torchgmm import GaussianMixture

    gm = GaussianMixture.load(tmp_path / "m.pt")
    labels = np.loadtxt(tmp_path / "labels.csv", dtype=np.int64)
    np.testing.assert_array_equal(gm.predict(X), labels)
    np.testing.assert_allclose(np.load(tmp_path / "resp.npy"), gm.predict_proba(X), rtol=1e-12)
    assert gm.get_params()["n_init"] == 4
    # predict and score with the saved model on new data
    predicted = run("predict", str(tmp_path / "m.pt"), str(folder / "X.npy"), "-o", str(tmp_path / "p.npy"))
    assert predicted.returncode == 0, predicted.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), labels)
    to_stdout = run("predict", str(tmp_path / "m.pt"), str(folder / "X.npy"), "--proba")
    np.testing.assert_allclose(np.loadtxt(to_stdout.stdout.splitlines(), delimiter=","), gm.predict_proba(X), atol=1e-6)
    scored = run("score", str(tmp_path / "m.pt"), str(folder / "X.npy"), "--per-sample", str(tmp_path / "s.npy"))
    assert scored.returncode == 0, scored.stderr
    assert float(re.search(r"mean log-likelihood\s+(\S+)", scored.stdout).group(1)) == pytest.approx(
        gm.score(X), abs=1e-6
    )
    assert float(re.search(r"BIC\s+(\S+)", scored.stdout).group(1)) == pytest.approx(gm.bic(X), abs=1e-3)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), gm.score_samples(X))


def test_every_data_format_gives_the_same_fit(blobs, tmp_path):
    """.npy, .csv, .tsv with a header, .pt and .parquet (pyarrow is a test requirement, so it runs in CI)."""
    folder, X = blobs
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    np.savetxt(tmp_path / "plain.csv", X, delimiter=",")
    np.savetxt(tmp_path / "header.tsv", X, delimiter="\t", header="a\tb\tc", comments="")
    torch.save(torch.as_tensor(X), tmp_path / "X.pt")
    pq.write_table(pa.table({f"c{i}": X[:, i] for i in range(3)}), tmp_path / "X.parquet")
    bounds = set()
    for name in (folder / "X.npy", tmp_path / "plain.csv", tmp_path / "header.tsv", tmp_path / "X.pt"):
        out = run("fit", str(name), "-k", "2", "-q", "-o", str(tmp_path / "m.pt"), "--device", "cpu")
        assert out.returncode == 0 and out.stdout == "", out.stderr
        from torchgmm import GaussianMixture

        bounds.add(round(GaussianMixture.load(tmp_path / "m.pt").lower_bound_, 9))
    out = run("fit", str(tmp_path / "X.parquet"), "-k", "2", "-o", str(tmp_path / "m.pt"), "--device", "cpu")
    assert out.returncode == 0 and "250 rows x 3 columns" in out.stdout, out.stderr
    bounds.add(round(GaussianMixture.load(tmp_path / "m.pt").lower_bound_, 9))
    assert len(bounds) == 1


def test_config_file_with_command_line_overrides(blobs, tmp_path):
    folder, _ = blobs
    config = tmp_path / "c.yaml"
    config.write_text("n_components: 3\ncovariance_type: diag\nn_init: 2\nseed: 5\n")
    out = run("fit", str(folder / "X.npy"), "--config", str(config), "-k", "2", "-o", str(tmp_path / "m.pt"))
    assert out.returncode == 0, out.stderr
    assert "K=2, covariance_type=diag, 2 restarts" in out.stdout


@pytest.mark.parametrize("name", ["default", "large", "gpu"])
def test_shipped_configs_are_valid(name, blobs, tmp_path):
    import yaml

    from torchgmm.cli.options import FIT_DEFAULTS

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml").read_text())
    assert set(config) <= set(FIT_DEFAULTS)
    if name == "default":
        folder, _ = blobs
        out = run(
            "fit", "--config", "configs/default.yaml", "-o", str(tmp_path / "m.pt"), cwd=Path(__file__).parent.parent
        )
        assert out.returncode == 0 and "iris" in out.stdout, out.stderr


def test_select_reports_a_table_and_the_best(blobs, tmp_path):
    folder, _ = blobs
    out = run(
        "select",
        str(folder / "X.npy"),
        "-k",
        "1-3",
        "--covariance-types",
        "full,spherical",
        "-o",
        str(tmp_path / "b.pt"),
    )
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if re.match(r"\s+\d+\s+(full|spherical)\s", line)]
    assert len(rows) == 6
    assert re.search(r"best by BIC: K=2, covariance_type=(full|spherical)", out.stdout)
    from torchgmm import GaussianMixture

    assert GaussianMixture.load(tmp_path / "b.pt").n_components == 2


def test_plot_writes_a_valid_png(blobs, tmp_path):
    folder, _ = blobs
    assert run("fit", str(folder / "X.npy"), "-k", "2", "-q", "-o", str(tmp_path / "m.pt")).returncode == 0
    out = run("plot", str(tmp_path / "m.pt"), str(folder / "X.npy"), "-o", str(tmp_path / "p.png"))
    assert out.returncode == 0, out.stderr
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "p.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_help_is_complete():
    top = run("--help")
    assert top.returncode == 0
    for command in ("fit", "predict", "score", "select", "plot"):
        assert command in top.stdout
        sub = run(command, "--help")
        assert sub.returncode == 0 and "usage: torchgmm " + command in sub.stdout
    fit_help = run("fit", "--help").stdout
    for option in ("--config", "--device", "--dtype", "--seed", "--quiet", "--labels", "--responsibilities"):
        assert option in fit_help


def test_installed_console_script():
    assert SCRIPT.exists(), f"no torchgmm script beside {sys.executable}: install the package (pip install -e .)"
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("torchgmm ")


# ------------------------------------------------------------------------------------ bad input


def test_missing_file_is_one_clear_line(tmp_path):
    one_error_line(run("fit", str(tmp_path / "nope.npy")), "cannot read", "no such file")


def test_unreadable_file(tmp_path):
    (tmp_path / "X.npy").write_bytes(b"definitely not numpy")
    one_error_line(run("fit", str(tmp_path / "X.npy")), "cannot read", "X.npy")


def test_unknown_file_type(tmp_path):
    (tmp_path / "X.xlsx").write_text("1,2\n")
    one_error_line(run("fit", str(tmp_path / "X.xlsx")), "unknown file type .xlsx")


def test_csv_with_a_non_numeric_cell_names_line_and_column(tmp_path):
    (tmp_path / "X.csv").write_text("a,b\n1,2\n3,4\n5,oops\n")
    one_error_line(run("fit", str(tmp_path / "X.csv")), "line 4, column 2: 'oops' is not a number")


def test_ragged_csv(tmp_path):
    (tmp_path / "X.csv").write_text("1,2\n3,4,5\n")
    one_error_line(run("fit", str(tmp_path / "X.csv")), "line 2: 3 columns where earlier lines have 2")


@pytest.mark.parametrize("content", ["", "\n\n", "a,b\n"])
def test_empty_file(tmp_path, content):
    (tmp_path / "X.csv").write_text(content)
    one_error_line(run("fit", str(tmp_path / "X.csv")), "X.csv")
    assert (
        "empty" in run("fit", str(tmp_path / "X.csv")).stderr or "no rows" in run("fit", str(tmp_path / "X.csv")).stderr
    )


def test_unknown_config_key_is_named_with_the_valid_ones(tmp_path):
    (tmp_path / "c.yaml").write_text("n_components: 2\nn_compnents: 3\n")
    one_error_line(
        run("fit", "--config", str(tmp_path / "c.yaml")), "unknown key 'n_compnents'", "valid keys:", "n_components"
    )


def test_missing_config(tmp_path):
    one_error_line(run("fit", "--config", str(tmp_path / "nope.yaml")), "cannot read config")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(tmp_path):
    one_error_line(run("fit", "--device", "cuda", "-o", str(tmp_path / "m.pt")), "CUDA is not available")
    assert not (tmp_path / "m.pt").exists()


def test_fit_failure_exits_one_without_a_model(tmp_path):
    np.save(tmp_path / "X.npy", 1e200 * np.random.default_rng(0).normal(size=(20, 2)))  # squares overflow
    out = run("fit", str(tmp_path / "X.npy"), "-k", "2", "-o", str(tmp_path / "m.pt"))
    one_error_line(out, "every restart produced non-finite statistics", "Scale the input data")
    assert out.returncode == 1 and not (tmp_path / "m.pt").exists()


def test_degenerate_data_fit_with_a_one_line_warning(tmp_path):
    """Constant data with reg_covar=0: the component is repaired, the fit succeeds, stderr says so in one line."""
    np.save(tmp_path / "X.npy", np.ones((20, 2)))
    out = run("fit", str(tmp_path / "X.npy"), "-k", "2", "--reg-covar", "0", "-q", "-o", str(tmp_path / "m.pt"))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert any(
        line.startswith("torchgmm: warning (DegenerateComponentWarning): Degenerate components") for line in lines
    )
    assert all(line.startswith("torchgmm: warning") for line in lines), out.stderr
    assert (tmp_path / "m.pt").exists()


def test_model_file_that_is_not_a_model(blobs, tmp_path):
    folder, _ = blobs
    (tmp_path / "m.pt").write_bytes(b"garbage")
    one_error_line(run("predict", str(tmp_path / "m.pt"), str(folder / "X.npy")), "not a readable torchgmm model file")
    one_error_line(run("score", str(tmp_path / "nope.pt"), str(folder / "X.npy")), "cannot read model", "no such file")


def test_predict_with_the_wrong_number_of_columns(blobs, tmp_path):
    folder, X = blobs
    assert run("fit", str(folder / "X.npy"), "-k", "2", "-q", "-o", str(tmp_path / "m.pt")).returncode == 0
    np.save(tmp_path / "two.npy", X[:, :2])
    one_error_line(run("predict", str(tmp_path / "m.pt"), str(tmp_path / "two.npy")), "X has 2 features", "expecting 3")


def test_bad_select_range(blobs):
    folder, _ = blobs
    one_error_line(run("select", str(folder / "X.npy"), "-k", "a-3"), "invalid range 'a-3'")


def test_ctrl_c_leaves_no_model_file(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "big.npy", rng.normal(size=(200_000, 16)).astype(np.float32))
    process = subprocess.Popen(
        [*COMMAND, "fit", str(tmp_path / "big.npy"), "-k", "16", "--max-iter", "10000", "--tol", "0",
         "--n-init", "1", "-o", str(tmp_path / "m.pt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )  # fmt: skip
    try:
        time.sleep(6)  # import, first pass, into the EM loop
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Seen twice on a loaded machine: the interrupt was lost and EM went on. SIGABRT makes the
            # fault handler print where every thread is, so the failure says where it was lost.
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate(timeout=30)
            pytest.fail(f"Ctrl-C did not stop the fit within 60 s; where it was:\n{stderr[-6000:]}")
    finally:
        if process.poll() is None:  # never leave a fit running for the rest of the suite
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert stderr.strip().splitlines() == ["torchgmm: interrupted; no model file was written."]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]  # no model, no temporary file


def test_saving_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves neither a partial model nor a temporary file."""
    import torch

    from torchgmm import GaussianMixture

    gm = GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(50, 2)))

    def broken(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")  # (the temporary file's path)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(KeyboardInterrupt):
        gm.save(tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []
