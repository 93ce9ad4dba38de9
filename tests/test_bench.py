"""The benchmark entry point runs (tiny cases) and skips GPU configs cleanly without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("yaml")


def run_bench(*args):
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_L2_SIZE="1048576")  # as on the CI machines
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def test_tiny_cpu_bench_prints_a_table_and_json(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "threads: 1\nrepeats: 2\nceiling_size: 256\n"
        "libraries: [torchgmm, scikit-learn, sklearn-torch, cuvs, nosuchpeer]\n"
        "defaults: {device: cpu, dtype: float32, iterations: 3, n_init: 1, covariance_type: full}\n"
        "cases:\n  - {name: t, n_samples: 2000, n_features: 4, n_components: 3}\n"
        "  - {name: t-diag, n_samples: 2000, n_features: 4, n_components: 3, covariance_type: diag, n_init: 2}\n"
    )
    out = run_bench("--config", str(config), "--out", str(tmp_path / "rows.json"))
    assert out.returncode == 0, out.stderr
    assert "matmul ceiling" in out.stdout and "torchgmm x" in out.stdout
    assert "skipped: unknown library" in out.stdout and "skipped: GPU only" in out.stdout  # (cuvs on CPU)
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    timed = [r for r in rows if "seconds" in r]
    assert {r["library"] for r in timed} == {"torchgmm", "scikit-learn", "sklearn-torch"}
    assert all(r["seconds"] > 0 and r["gflops"] > 0 and r["fit_seconds"] > r["seconds"] for r in timed)
    # every case on both kinds of data, named apart
    assert {(r["name"], r["data"]) for r in rows} == {
        ("t", "isotropic"),
        ("t-aniso", "anisotropic"),
        ("t-diag", "isotropic"),
        ("t-diag-aniso", "anisotropic"),
    }
    # NumPy-based peers run unpinned OpenBLAS kernels: the workers' environment drops the pinning variables
    assert all(r["pinned"] == [] for r in timed) and all(r["blas"] for r in timed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_config_says_skipped_without_cuda():
    out = run_bench("--config", str(ROOT / "configs" / "bench-gpu.yaml"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "skipped: no CUDA device"


def test_memory_bench_runs_on_a_small_memmap(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--gib", "0.004", "--iterations", "2", "--dir", str(tmp_path)]
        + ["--batch-size", "none,4096", "--out", str(tmp_path / "memory.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("peak resident memory") == 2 and "batch_size=4096" in out.stdout
    results = json.loads((tmp_path / "memory.json").read_text())["results"]
    assert [r["params"]["batch_size"] for r in results] == [None, 4096]
    assert not list(tmp_path.glob("*.npy"))  # the data file is removed


def test_memory_bench_takes_a_command_line_config(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--gib", "0.002", "--features", "8", "--iterations", "1"]
        + ["--dir", str(tmp_path), "--config", str(ROOT / "configs" / "large.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "n_components=16" in out.stdout and "batch_size=65536" in out.stdout


def test_faults_bench_runs_quick():
    out = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "checkpoint_interval=1" in out.stdout and "x no checkpoint" in out.stdout
    table = [line for line in out.stdout.splitlines() if line.startswith("| ") and "case" not in line]
    assert len(table) == 20 and all(line.split("|")[3].strip().startswith("ok, bound") for line in table)  # torchgmm


def test_tf32_emulation_rounds_to_ten_mantissa_bits():
    from bench.tf32 import tf32

    values = torch.tensor([1.0, 1.0 + 2.0**-10, 1.0 + 2.0**-12, 1.0 + 3 * 2.0**-12, -3.14159265, 1e-30, 6.5e4])
    rounded = tf32(values).numpy()
    expected = []
    for v in values.tolist():  # the nearest number with 10 bits after the binary point of its mantissa
        exponent = np.floor(np.log2(abs(v)))
        step = 2.0 ** (exponent - 10)
        expected.append(np.round(v / step) * step)
    np.testing.assert_array_equal(rounded, np.float32(expected))


def test_quality_bench_runs_on_a_tiny_case(monkeypatch, tmp_path, capsys):
    import bench.quality as quality

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, (60, 2)) for c in (-4.0, 0.0, 4.0)])
    monkeypatch.setattr(quality, "data_sets", lambda: [("tiny", X, 3, "full", 1e-6)])
    assert quality.main(["--seeds", "2", "--out", str(tmp_path / "q.json")]) == 0
    result = json.loads((tmp_path / "q.json").read_text())
    [row] = result["rows"]
    assert row["data"] == "tiny"
    out = capsys.readouterr().out
    for method in quality.METHODS:
        assert len(row[method]["bounds"]) == 2 and row[method]["median_gap"] >= row[method]["best_gap"], method
        assert row[method]["restart_iterations"] > 0 and method in out


def test_selection_bench_runs_on_tiny_mixtures(monkeypatch, tmp_path, capsys):
    import bench.selection as selection

    monkeypatch.setattr(selection, "KS", range(1, 4))
    monkeypatch.setattr(selection, "TYPES", ("full", "spherical"))
    assert selection.main(["--mixtures", "1", "--out", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())["results"]
    assert set(result) == set(selection.METHODS)
    for record in result.values():
        [[true_k, k, covariance_type]] = record["chosen"]
        assert true_k == 2 and 1 <= k <= 3 and covariance_type in ("full", "spherical")
    assert "init_whiten" in capsys.readouterr().out


def test_weights_bench_runs_on_a_tiny_case(tmp_path, capsys):
    import bench.weights as weights

    out = tmp_path / "w.json"
    assert (
        weights.main(
            [
                "--rows",
                "600",
                "--features",
                "3",
                "--components",
                "2",
                "--iterations",
                "1",
                "--repeats",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * len(weights.TYPES)
    # (one iteration of a tiny fit is within timing noise: only that every case was measured)
    assert {(r["data"], r["covariance_type"]) for r in rows} == {
        (d, t) for d in ("isotropic", "anisotropic") for t in weights.TYPES
    }
    assert all(np.isfinite([r["unweighted"], r["weighted"], r["ratio"]]).all() for r in rows)
    assert "ratio" in capsys.readouterr().out
