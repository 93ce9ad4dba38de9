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
    assert "iris" in out.stdout and "model        K=3, covariance_type=full" in out.stdout  # the default K, the species
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
    assert scored.stdout.splitlines()[-1] == f"wrote {tmp_path / 's.npy'} ({len(X)} rows)"  # as predict -o says


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
        assert config == FIT_DEFAULTS  # "the defaults, written out": every key, every value
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
    out = run("fit", str(tmp_path / "X.csv"))
    one_error_line(out, "X.csv")
    assert "empty" in out.stderr or "no rows" in out.stderr


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
    one_error_line(run("predict", str(tmp_path / "m.pt"), str(folder / "X.npy")), "is not a", "torchgmm model file")
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


# ------------------------------------------------------------------------------------ what a new user meets (issue 14)


def _model(tmp_path, d=2):
    """A model file of two components on ``d`` columns, fitted in this process."""
    from torchgmm import GaussianMixture

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-4, 1, (30, d)), rng.normal(4, 1, (30, d))])
    GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "m.pt")
    return tmp_path / "m.pt", X


def test_nan_in_a_text_file_is_named_by_its_line_and_column(tmp_path):
    """Checked by the reader before the fit: the file's own line (header and blank lines counted), 1-based column."""
    (tmp_path / "data.csv").write_text("a,b\n1,2\n\n3,nan\n4,5\n")
    out = run("fit", "data.csv", "-o", "m.pt")
    one_error_line(out, "data.csv, line 4, column 2: 'nan' is not a finite number; remove or impute it.")
    assert out.returncode == 2 and out.stdout == "" and not (tmp_path / "m.pt").exists()


def test_not_finite_values_of_every_file_type(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from torchgmm import cli

    model, X = _model(tmp_path)
    files = {
        "inf.txt": ("1 2\n# a comment\n3   -inf\n", "inf.txt, line 3, column 2: '-inf' is not a finite number"),
        "big.tsv": ("a\tb\n1e999\t2\n", "big.tsv, line 2, column 1: '1e999' is not a finite number"),
        "both.csv": ("1,2\n3,nan\n5,oops\n", "both.csv, line 2, column 2: 'nan' is not a finite number"),
        "nan.npy": (np.array([[1.0, 2.0], [3.0, np.nan]]), "nan.npy, row 2, column 2: nan is not a finite number"),
        "inf.pt": (torch.tensor([[1.0, 2.0], [float("inf"), 3.0]]), "inf.pt, row 2, column 1: inf is not a finite"),
        "null.parquet": ({"a": [1.0, 2.0, 3.0], "b": [1.0, None, 3.0]}, "null.parquet, row 2, column 2: nan is not"),
    }
    for name, (content, message) in files.items():
        if name.endswith(".npy"):
            np.save(tmp_path / name, content)
        elif name.endswith(".pt"):
            torch.save(content, tmp_path / name)
        elif name.endswith(".parquet"):
            pq.write_table(pa.table(content), tmp_path / name)
        else:
            (tmp_path / name).write_text(content)
        for argv in (["predict", str(model), name], ["score", str(model), name]):
            assert cli.main(argv) == 2
            out = capsys.readouterr()
            assert out.out == "" and out.err.startswith(f"torchgmm: {message}"), out.err
            assert out.err.strip().endswith("remove or impute it.") and len(out.err.splitlines()) == 1


def test_memory_mapped_files_are_scanned_for_nan_in_blocks(tmp_path, monkeypatch):
    from torchgmm.cli import readers

    X = np.arange(2000.0).reshape(500, 4)
    X[377, 3] = -np.inf
    np.save(tmp_path / "X.npy", X)
    blocks, real = [], np.isfinite

    def isfinite(values, *args, **kwargs):
        blocks.append(np.shape(values))
        return real(values, *args, **kwargs)

    monkeypatch.setattr(readers, "BLOCK_VALUES", 400)
    monkeypatch.setattr(readers.np, "isfinite", isfinite)
    with pytest.raises(readers.UsageError, match=r"X.npy, row 378, column 4: -inf is not a finite number"):
        readers.read_data(str(tmp_path / "X.npy"))
    assert blocks == [(100, 4)] * 4  # rows 1-400 in blocks of 400 values, the fourth holding row 378


def test_a_semicolon_csv_with_the_default_k(tmp_path):
    """The separator is found from the first lines; without -k, K is the documented default and the summary says so."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-4, 1, (60, 2)), rng.normal(4, 1, (40, 2))])
    np.savetxt(tmp_path / "semi.csv", X, delimiter=";", header="a;b", comments="")
    out = run("fit", "semi.csv", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert "semi.csv (100 rows x 2 columns)" in out.stdout
    model = next(line for line in out.stdout.splitlines() if line.startswith("model"))
    assert model.startswith(
        "model        K=3 (default: pass -k, or compare K with 'torchgmm select semi.csv -k 1-10'), covariance_type="
    ), model


def test_k_given_is_not_called_a_default(tmp_path, capsys):
    from torchgmm import cli

    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(40, 2)))
    (tmp_path / "k.yaml").write_text("n_components: 3\n")
    for argv in (["-k", "3"], ["--config", "k.yaml"]):
        assert cli.main(["fit", "X.npy", "--n-init", "1", *argv]) == 0
        assert "model        K=3, covariance_type=full, 1 restarts" in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("tab.csv", "a\tb\n1\t2\n3\t4\n", [[1, 2], [3, 4]]),
        ("comma.txt", "1, 2\n3, 4\n", [[1, 2], [3, 4]]),
        ("spaces.txt", "a b\n1  2\n3 4\n", [[1, 2], [3, 4]]),
        ("one-column.csv", "x\n1\n2\n", [[1], [2]]),
        ("excel.csv", "\ufeffa;b\r\n1;2\r\n", [[1, 2]]),
        ("semicolon-in-tsv.tsv", "1;2\n", "semicolon-in-tsv.tsv has a header but no rows."),
        ("decimal-commas.csv", "a;b\n1,5;2\n", "decimal-commas.csv, line 2, column 1: '1,5' is not a number."),
        ("ragged.csv", "1,2\n3,4,5\n", "ragged.csv, line 2: 3 columns where earlier lines have 2."),
        ("single-bad.csv", "x\n1\nfoo\n", "single-bad.csv, line 3, column 1: 'foo' is not a number."),
    ],
)
def test_separators(tmp_path, name, content, expected):
    from torchgmm.cli import readers

    (tmp_path / name).write_text(content, encoding="utf-8", newline="")
    if isinstance(expected, str):
        with pytest.raises(readers.UsageError) as error:
            readers.read_data(name)
        assert str(error.value) == expected
    else:
        np.testing.assert_array_equal(readers.read_data(name), expected)


def test_a_separator_that_is_not_tried_is_named(tmp_path):
    from torchgmm.cli import readers

    for name, content in (("mixed.csv", "1;2\n3,4\n"), ("spaces.csv", "a b\n1 2\n")):
        (tmp_path / name).write_text(content)
        with pytest.raises(
            readers.UsageError, match=f"^{name}: the separator looks wrong: none of comma, semicolon, tab"
        ):
            readers.read_data(name)
    (tmp_path / "pipes.txt").write_text("a|b\n1|2\n3|4\n")
    one_error_line(
        run("fit", "pipes.txt"),
        "torchgmm: pipes.txt: the separator looks wrong: none of comma, semicolon, tab, whitespace splits its first "
        "lines into the same number of numeric columns; separate the columns with one of them.",
    )


def test_the_defaults_have_one_source(capsys):
    """The help shows the defaults table (which configs/default.yaml writes out: test_shipped_configs_are_valid)."""
    from torchgmm.cli.options import FIT_DEFAULTS, SELECT_DEFAULTS, build_parser

    assert FIT_DEFAULTS["n_components"] == 3  # as on iris
    for command, defaults, options in (
        ("fit", FIT_DEFAULTS, ("--n-components", "--n-init", "--max-iter", "--tol", "--covariance-type")),
        ("select", SELECT_DEFAULTS, ("--n-components", "--criterion", "--covariance-types")),
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for option in options:
            value = defaults[option[2:].replace("-", "_")]
            assert re.search(rf"{option} \S+ (?:(?! --).)*?\(default {re.escape(str(value))}\)", text), (
                command,
                option,
            )


def test_refused_input_prints_nothing_on_stdout(tmp_path, capsys):
    """Every command checks everything and computes before it prints (score used to print 'rows' first)."""
    from torchgmm import cli

    model, X = _model(tmp_path)
    np.save(tmp_path / "three.npy", np.ones((10, 3)))
    out = run("score", str(model), "three.npy")
    one_error_line(out, "X has 3 features, but GaussianMixture is expecting 2 features as input.")
    assert out.returncode == 1 and out.stdout == ""
    out = run("select", "three.npy", "-k", "1,2", "--n-init", "0")
    one_error_line(out, "'n_init' must be >= 1, got 0.")  # checked once, before any candidate
    assert out.returncode == 1 and out.stdout == ""
    np.save(tmp_path / "huge.npy", np.random.default_rng(0).normal(size=(10, 2)) * 1e200)
    out = run("select", "huge.npy", "-k", "1,2")
    one_error_line(out, "no model could be fitted; the first failure: K=1, full: Fitting the mixture model failed")
    assert out.returncode == 1 and out.stdout == ""
    for argv in (
        ["predict", str(model), "three.npy"],
        ["predict", str(model), "three.npy", "-o", "labels.npy"],
        ["plot", str(model), "three.npy"],
        ["select", "three.npy", "-k", "1", "--device", "gpu"],
        ["fit", "three.npy", "-k", "20"],
    ):
        assert cli.main(argv) in (1, 2)
        printed = capsys.readouterr()
        assert printed.out == "" and len(printed.err.splitlines()) == 1, (argv, printed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.npy", "m.pt", "three.npy"]


def test_quiet_score_and_select_print_nothing(tmp_path, capsys):
    from torchgmm import cli

    model, X = _model(tmp_path)
    np.save(tmp_path / "X.npy", X)
    assert cli.main(["score", str(model), "X.npy", "--per-sample", "ll.csv", "-q"]) == 0
    assert cli.main(["select", "X.npy", "-k", "1-2", "--n-init", "1", "-o", "best.pt", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "ll.csv").is_file() and (tmp_path / "best.pt").is_file()


def test_a_warning_ends_the_progress_bar_line(monkeypatch):
    """In process: the bar (forced on, as on a terminal), a warning through main's printer, the bar again."""
    import io

    from torchgmm import cli
    from torchgmm.cli.progress import Progress

    err = io.StringIO()
    err.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", err)
    progress = Progress(10, 2, quiet=False)
    progress(1, 2, -1.5)
    cli._show_warning(UserWarning("first"), UserWarning, "f.py", 1)
    cli._show_warning(UserWarning("second"), UserWarning, "f.py", 1)
    progress(2, 1, -1.25)
    progress.close()
    lines = err.getvalue().split("\n")
    assert lines[0].startswith("\r[") and "iteration 1/10" in lines[0]
    assert lines[1:3] == ["torchgmm: warning (UserWarning): first", "torchgmm: warning (UserWarning): second"]
    assert lines[3].startswith("\r[") and "iteration 2/10" in lines[3] and lines[4:] == [""]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_warnings_and_repairs_under_the_bar_on_a_terminal(tmp_path):
    """stderr on a pseudo-terminal: the bar is drawn, each warning and each repair of -v has a line of its own."""
    import pty

    np.save(tmp_path / "ones.npy", np.ones((20, 2)))
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*COMMAND, "fit", "ones.npy", "-k", "2", "--reg-covar", "0", "-v", "--max-iter", "5", "-o", "m.pt"],
        stdout=subprocess.PIPE, stderr=slave, text=True,
    )  # fmt: skip
    os.close(slave)
    received = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # (Linux: the other end closed)
            break
        if not data:
            break
        received += data
    os.close(master)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0, received
    stderr = received.decode().replace("\r\n", "\n")
    assert "\r[" in stderr and "iteration 1/5" in stderr  # the bar
    lines = [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]  # what each line shows at the end
    warning = next(i for i, line in enumerate(lines) if "DegenerateComponentWarning" in line)
    assert lines[warning].startswith("torchgmm: warning (DegenerateComponentWarning): ")
    assert "iteration" in lines[warning - 1] and "torchgmm" not in lines[warning - 1]  # the bar's line, ended
    from torchgmm import GaussianMixture

    repairs = [f"torchgmm: repair in the kept restart: {r}" for r in GaussianMixture.load(tmp_path / "m.pt").repairs_]
    assert repairs and lines[warning + 1 : warning + 1 + len(repairs)] == repairs
    assert all(line.startswith("torchgmm: ") for line in lines[warning:] if line), lines
    assert "K=2" in stdout


def test_a_damaged_checkpoint_is_refused_naming_the_option(tmp_path):
    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(20, 2)))
    (tmp_path / "fit.ckpt").write_bytes(b"not a checkpoint")
    out = run("fit", "X.npy", "-k", "2", "--checkpoint", "fit.ckpt")
    one_error_line(
        out, "fit.ckpt is not a readable torchgmm checkpoint (", "); delete it or choose another --checkpoint file."
    )
    assert out.returncode == 1 and "checkpoint_path" not in out.stderr


@pytest.mark.filterwarnings("ignore::torchgmm.ConvergenceWarning")
def test_plot_ellipses_stay_visible_and_iterations_are_whole(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Ellipse

    from torchgmm import GaussianMixture
    from torchgmm.cli import plotting

    X = np.random.default_rng(0).normal(size=(300, 3))
    gm = GaussianMixture(3, random_state=0, n_init=2, max_iter=4).fit(X)
    fig = plotting.draw(gm, X, "X.npy")
    try:
        left, right = fig.axes[:2]
        ticks = right.get_xticks()
        assert len(ticks) > 1 and np.all(ticks == np.round(ticks)), ticks
        ellipses = [p for p in left.patches if isinstance(p, Ellipse)]
        assert len(ellipses) == 2 * 3  # 1σ and 2σ per component
        for ellipse in ellipses:
            assert ellipse.get_edgecolor() == to_rgba("black")
            (outline,) = ellipse.get_path_effects()
            assert to_rgba(outline._gc["foreground"]) == to_rgba("white")
            assert outline._gc["linewidth"] > ellipse.get_linewidth()  # a rim on both sides of the line
    finally:
        plt.close(fig)


def test_a_data_file_or_pickle_given_as_the_model_says_what_it_is(blobs, tmp_path):
    """Data and model swapped, or a pickle: one line naming the file's kind, and no warning of torch's own."""
    import pickle

    folder, X = blobs
    np.savetxt(tmp_path / "data.csv", X, delimiter=",")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"means": X[:2].tolist()}))
    out = run("predict", str(tmp_path / "data.csv"), str(folder / "X.npy"))
    one_error_line(out, "data.csv is not a torchgmm model file: it looks like a text file of data", "fit -o")
    out = run("score", str(tmp_path / "model.pkl"), str(folder / "X.npy"))
    one_error_line(out, "model.pkl is not a torchgmm model file: it looks like a Python pickle")
    assert out.stdout == ""


def test_fit_runs_a_race_and_whitened_seeding_as_the_estimator_does(blobs, tmp_path):
    from torchgmm import GaussianMixture, cli

    folder, X = blobs
    argv = ["fit", str(folder / "X.npy"), "-k", "2", "--n-init", "8", "--strategy", "race", "--race-survivors", "2"]
    assert cli.main([*argv, "--race-first-cut", "1", "--init-whiten", "-q", "-o", str(tmp_path / "m.pt")]) == 0
    model = GaussianMixture.load(tmp_path / "m.pt")
    expected = GaussianMixture(
        2, n_init=8, strategy="race", race_survivors=2, race_first_cut=1, init_whiten=True, random_state=0
    ).fit(X)
    np.testing.assert_array_equal(model.init_stopped_early_, expected.init_stopped_early_)
    np.testing.assert_allclose(model.means_, expected.means_, rtol=1e-10)


def test_fit_anneals_and_moves_as_the_estimator_does(blobs, tmp_path):
    from torchgmm import GaussianMixture, cli

    folder, X = blobs
    argv = ["fit", str(folder / "X.npy"), "-k", "3", "--n-init", "2", "--strategy", "auto", "--anneal-beta-start"]
    argv += ["0.2", "--anneal-steps", "2", "--anneal-iter", "3", "--split-merge-candidates", "3"]
    assert cli.main([*argv, "--split-merge-rounds", "2", "-q", "-o", str(tmp_path / "m.pt")]) == 0
    model = GaussianMixture.load(tmp_path / "m.pt")
    expected = GaussianMixture(
        3,
        n_init=2,
        strategy="auto",
        anneal_beta_start=0.2,
        anneal_steps=2,
        anneal_iter=3,
        split_merge_candidates=3,
        split_merge_rounds=2,
        random_state=0,
    ).fit(X)
    assert model.split_merge_rounds_ == expected.split_merge_rounds_ and len(expected.split_merge_rounds_) >= 1
    assert model.lower_bounds_ == pytest.approx(expected.lower_bounds_, rel=1e-10)
    # a config file may give one start per restart (auto runs a third of --n-init, rounded up)
    config = tmp_path / "anneal.yaml"
    config.write_text("strategy: anneal\nn_init: 2\nanneal_beta_start: [0.1, 0.9]\n")
    argv = ["fit", str(folder / "X.npy"), "-k", "3", "--config", str(config), "-q", "-o", str(tmp_path / "a.pt")]
    assert cli.main(argv) == 0
    expected = GaussianMixture(3, n_init=2, strategy="anneal", anneal_beta_start=[0.1, 0.9], random_state=0).fit(X)
    np.testing.assert_allclose(GaussianMixture.load(tmp_path / "a.pt").means_, expected.means_, rtol=1e-10)


def test_select_grows_as_the_selection_does(blobs, tmp_path):
    from torchgmm import GaussianMixtureSelection, cli

    folder, X = blobs
    argv = ["select", str(folder / "X.npy"), "-k", "1-3", "--covariance-types", "diag", "--grow", "-q"]
    assert cli.main([*argv, "-o", str(tmp_path / "b.pt")]) == 0
    from torchgmm import GaussianMixture

    expected = GaussianMixtureSelection(range(1, 4), ["diag"], n_init=4, random_state=0, grow=True).fit(X)
    loaded = GaussianMixture.load(tmp_path / "b.pt")
    assert loaded.n_components == expected.best_params_["n_components"]
    np.testing.assert_allclose(np.sort(loaded.means_, 0), np.sort(expected.best_estimator_.means_, 0), rtol=1e-9)


def test_fit_weighs_rows_from_a_file(blobs, tmp_path):
    from torchgmm import GaussianMixture, cli

    folder, X = blobs
    w = np.random.default_rng(0).integers(0, 3, len(X)).astype(float)
    np.savetxt(tmp_path / "w.csv", w)
    np.save(tmp_path / "w.npy", w)
    for name in ("w.csv", "w.npy"):
        argv = ["fit", str(folder / "X.npy"), "-k", "2", "--sample-weight", str(tmp_path / name), "-q"]
        assert cli.main([*argv, "-o", str(tmp_path / "m.pt")]) == 0
        expected = GaussianMixture(2, n_init=4, random_state=0).fit(X, sample_weight=w)
        np.testing.assert_allclose(GaussianMixture.load(tmp_path / "m.pt").means_, expected.means_, rtol=1e-10)
    np.save(tmp_path / "short.npy", w[:-1])
    out = run("fit", str(folder / "X.npy"), "-k", "2", "--sample-weight", str(tmp_path / "short.npy"))
    one_error_line(out, f"short.npy has {len(X) - 1} weights for the {len(X)} rows of")
    assert out.returncode == 2
    np.save(tmp_path / "two.npy", np.ones((len(X), 2)))
    out = run("fit", str(folder / "X.npy"), "-k", "2", "--sample-weight", str(tmp_path / "two.npy"))
    one_error_line(out, "--sample-weight needs one column")
    np.save(tmp_path / "negative.npy", -w)
    out = run("fit", str(folder / "X.npy"), "-k", "2", "--sample-weight", str(tmp_path / "negative.npy"))
    one_error_line(out, "sample_weight must be finite and non-negative")
    assert out.returncode == 1


def test_a_weight_column_is_split_off_the_features(blobs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from torchgmm import GaussianMixture, GaussianMixtureSelection, cli

    folder, X = blobs
    w = np.random.default_rng(1).integers(0, 3, len(X)).astype(float)
    # the weights in the middle of the features, in a header line with quotes, and as a Parquet column
    table = np.column_stack([X[:, :1], w, X[:, 1:]])
    names = ["x0", "w"] + [f"x{i}" for i in range(1, X.shape[1])]
    np.savetxt(tmp_path / "d.csv", table, delimiter=",", header=",".join(f'"{n}"' for n in names), comments="")
    pq.write_table(pa.table({n: table[:, i] for i, n in enumerate(names)}), tmp_path / "d.parquet")
    expected = GaussianMixture(2, n_init=4, random_state=0).fit(X, sample_weight=w)
    for name in ("d.csv", "d.parquet"):
        data = str(tmp_path / name)
        assert cli.main(["fit", data, "-k", "2", "--weight-column", "w", "-q", "-o", str(tmp_path / "m.pt")]) == 0
        fitted = GaussianMixture.load(tmp_path / "m.pt")
        np.testing.assert_allclose(fitted.means_, expected.means_, rtol=1e-10)
        out = run("score", str(tmp_path / "m.pt"), data, "--weight-column", "w")
        assert out.returncode == 0, out.stderr
        assert f"mean log-likelihood  {expected.score(X, sample_weight=w):.6f}" in out.stdout
        assert f"BIC          {expected.bic(X, sample_weight=w):.3f}" in out.stdout
        out = run("predict", str(tmp_path / "m.pt"), data, "--weight-column", "w")
        np.testing.assert_array_equal(np.loadtxt(out.stdout.splitlines(), dtype=int), expected.predict(X))
    argv = ["select", str(tmp_path / "d.csv"), "-k", "1-3", "--covariance-types", "diag", "--weight-column", "w"]
    assert cli.main([*argv, "-q", "-o", str(tmp_path / "b.pt")]) == 0
    selection = GaussianMixtureSelection(range(1, 4), ["diag"], n_init=4, random_state=0).fit(X, sample_weight=w)
    best = GaussianMixture.load(tmp_path / "b.pt")
    assert best.n_components == selection.best_params_["n_components"]
    np.testing.assert_allclose(best.means_, selection.best_estimator_.means_, rtol=1e-10)
    np.save(tmp_path / "w.npy", w)
    argv = ["select", str(folder / "X.npy"), "-k", "1-3", "--covariance-types", "diag", "--sample-weight"]
    assert cli.main([*argv, str(tmp_path / "w.npy"), "-q", "-o", str(tmp_path / "c.pt")]) == 0
    np.testing.assert_allclose(GaussianMixture.load(tmp_path / "c.pt").means_, best.means_, rtol=1e-10)
