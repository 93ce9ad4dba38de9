"""Every row of ``docs/errors.md``: the bad input it names fails with the documented error and message.

The table is parsed from the document; ``CASES`` maps each row's id to a callable that feeds that bad input.
A library row's callable must raise (the documented exception type, with a message matching the documented
one); a command-line row's callable runs ``torchgmm.cli.main`` in this process and returns what it printed on
stderr and its exit status. A callable may try several calls of one row (``_each``, ``list`` of results):
every one of them is checked. A row without a case, or a case without a row, fails
``test_every_row_has_a_case_and_every_case_a_row``.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchgmm
import torchgmm.fused
import torchgmm.online
import torchgmm.passes
import torchgmm.trainer
from torchgmm import GaussianMixture, GaussianMixtureModule, GaussianMixtureSelection, cli
from torchgmm.exceptions import compatible

DOC = Path(__file__).parents[1] / "docs" / "errors.md"
COLUMNS = ["id", "where", "bad input", "error", "message"]

# ------------------------------------------------------------------------------------ the document


@dataclass(frozen=True)
class Row:
    id: str
    where: str
    bad_input: str
    error: str
    message: str


def read_rows(path: Path = DOC) -> list[Row]:
    """The rows of every table in ``path`` (each table has the columns ``COLUMNS``)."""
    rows, header = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            assert header == COLUMNS, f"{path.name}:{number}: table columns {header}, expected {COLUMNS}"
            continue
        if not "".join(cells).strip("-: "):
            continue  # the |---|---| line
        assert len(cells) == len(COLUMNS), f"{path.name}:{number}: {len(cells)} cells: {line}"
        message = cells[4]
        assert len(message) > 2 and message[0] == message[-1] == "`", f"{path.name}:{number}: message not in backticks"
        rows.append(Row(cells[0], cells[1], cells[2], cells[3], message[1:-1]))
    return rows


def normalise(text: str) -> str:
    return " ".join(text.split())


def message_pattern(documented: str) -> re.Pattern:
    """The documented message as a regex: literal text, with ``<placeholder>`` and ``…`` matching anything."""
    literal_parts = re.split(r"<[^<>]*>|…", normalise(documented))
    return re.compile(".*?".join(re.escape(part) for part in literal_parts), re.S)


def matches(documented: str, actual: str) -> bool:
    return message_pattern(documented).fullmatch(normalise(actual)) is not None


ROWS = read_rows()

# ------------------------------------------------------------------------------------ helpers

_WORKDIR: list[Path] = []  # the scratch folder of this module's run, made on first use
_MADE: dict[str, Any] = {}  # things made once per run (fitted models, model files)


@pytest.fixture(scope="module", autouse=True)
def _scratch():
    yield
    for folder in _WORKDIR:
        shutil.rmtree(folder, ignore_errors=True)
    _WORKDIR.clear()
    _MADE.clear()


def _path(name: str) -> Path:
    if not _WORKDIR:
        _WORKDIR.append(Path(tempfile.mkdtemp(prefix="torchgmm-bad-inputs-")))
    return _WORKDIR[0] / name


def _once(name: str, make: Callable[[], Any]) -> Any:
    if name not in _MADE:
        _MADE[name] = make()
    return _MADE[name]


def _text(name: str, content: str) -> Path:
    path = _path(name)
    path.write_text(content)
    return path


def _bytes(name: str, content: bytes) -> Path:
    path = _path(name)
    path.write_bytes(content)
    return path


def _npy(name: str, array: np.ndarray) -> Path:
    path = _path(name)
    np.save(path, array)
    return path


def _torch_file(name: str, obj: Any) -> Path:
    path = _path(name)
    torch.save(obj, path)
    return path


def _blobs(n: int = 20, d: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-4, 1, (n // 2, d)), rng.normal(4, 1, (n - n // 2, d))])


X = _blobs()  # 20 rows, 2 features
X3 = _blobs(d=3)


def _with_nan(array: np.ndarray, row: int = 3, column: int = 1, value: float = np.nan) -> np.ndarray:
    array = array.copy()
    array[row, column] = value
    return array


def _fitted() -> GaussianMixture:
    """A fresh copy of a model fitted once on ``X`` (NumPy outputs)."""
    return copy.deepcopy(_once("fitted", lambda: GaussianMixture(2, random_state=0, max_iter=20).fit(X)))


def _model_file() -> Path:
    return _once("model_file", lambda: (_fitted().save(_path("model.pt")), _path("model.pt"))[1])


def _model_content() -> dict:
    return torch.load(_model_file(), weights_only=True)


def _fit(**params: Any) -> GaussianMixture:
    return GaussianMixture(**{"n_components": 2, "max_iter": 5, **params}).fit(X)


def _pairs(weights: Any = None, rows: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """``X`` as ``(rows, weights)`` batches of ``rows`` rows (weights of one by default)."""
    weights = np.ones(len(X)) if weights is None else weights
    return [(X[i : i + rows], weights[i : i + rows]) for i in range(0, len(X), rows)]


def _each(*calls: Callable[[], Any]) -> None:
    """Run every call; each must raise. Raises the first error, with all of them as ``variants``."""
    errors = []
    for call in calls:
        try:
            call()
        except Exception as exc:  # the test checks its type
            errors.append(exc)
        else:
            raise AssertionError(f"call {len(errors) + 1} of {len(calls)} raised nothing")
    first = errors[0]
    first.variants = errors
    raise first


def _parameter(name: str, value: Any, **extra: Any) -> None:
    """``fit`` with one bad parameter."""
    _fit(**{name: value}, **extra)


W, M, P = torch.ones(2) / 2, torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3)


def _module(**kwargs: Any) -> GaussianMixtureModule:
    return GaussianMixtureModule(**{"weights": W, "means": M, "precisions_cholesky": P, **kwargs})


def _step_size_parameter(name: str, value: Any) -> None:
    """A bad ``learning_decay`` / ``learning_offset`` where each surface checks it."""
    _each(
        lambda: GaussianMixture(2, **{name: value}).partial_fit(X),
        lambda: _fitted().set_params(**{name: value}).to_module(),
        lambda: _module(**{name: value}),
    )


def _reg_covar(value: Any) -> None:
    _each(lambda: _parameter("reg_covar", value), lambda: _module(reg_covar=value))


class _Shrinking:
    """Chunks that lose their last chunk on every other pass over them."""

    def __init__(self, chunks: list[np.ndarray]) -> None:
        self.chunks, self.passes = chunks, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.chunks if self.passes % 2 else self.chunks[:-1])


def _truncated_memmap() -> None:
    path = _npy("truncated.npy", X)
    mapped = np.load(path, mmap_mode="r")
    os.truncate(path, path.stat().st_size - X[0].nbytes * 5)  # the last 5 rows are gone
    GaussianMixture(2).fit(mapped)


def _ranks_disagree() -> None:
    """Two ranks of a distributed fit, the other asking for one more component."""

    def gather(out: list, values: Any) -> None:  # (raise_together gathers None from ranks without an error)
        out[0] = values
        disagree = isinstance(values, dict) and "n_components" in values
        out[1] = {**values, "n_components": values["n_components"] + 1} if disagree else values

    distributed = torchgmm.distributed
    with (
        mock.patch.object(distributed, "is_distributed", return_value=True),
        mock.patch.object(distributed, "world_size", return_value=2),
        mock.patch.object(distributed.dist, "all_gather_object", side_effect=gather),
    ):
        _each(lambda: GaussianMixture(2).fit(X), lambda: GaussianMixture(2).partial_fit(X))


def _rank_failed() -> None:
    """Rank 0 of a distributed fit (and partial_fit) whose rank 1 has an empty shard."""

    def gather(out: list, value: Any) -> None:  # check_same gathers a dict, raise_together a message or None
        failed = "X has 0 samples (shape (0, 2)); at least 1 is required."
        out[:] = [value, value if isinstance(value, dict) else failed]

    distributed = torchgmm.distributed
    with (
        mock.patch.object(distributed, "is_distributed", return_value=True),
        mock.patch.object(distributed, "world_size", return_value=2),
        mock.patch.object(distributed, "rank", return_value=0),
        mock.patch.object(distributed.dist, "all_gather_object", side_effect=gather),
    ):
        _each(lambda: GaussianMixture(2).fit(X), lambda: GaussianMixture(2).partial_fit(X))


def _sparse(array: np.ndarray) -> Any:
    return pytest.importorskip("scipy.sparse").csr_matrix(array)


class _Code:
    """Pickles as a call: a file holding it holds code, which loading must refuse to run."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _saved_with(name: str, change: Callable[[dict], None]) -> Path:
    content = _model_content()
    change(content)
    return _torch_file(name, content)


def _cuda_model_file() -> Path:
    def make() -> Path:
        gm = GaussianMixture(2, random_state=0, max_iter=20).fit(torch.as_tensor(X))  # tensor outputs
        gm.save(_path("torch-model.pt"))
        content = torch.load(_path("torch-model.pt"), weights_only=True)
        content["device"] = "cuda:0"
        return _torch_file("cuda-model.pt", content)

    return _once("cuda_model_file", make)


# ------------------------------------------------------------------------------------ command line


@dataclass
class CliResult:
    code: int
    stderr: str


def _show_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _modules(replacements: dict[str, Any]):
    """``sys.modules`` entries replaced (``None``: the import fails) for the block; only those are restored."""
    missing = object()
    saved = {name: sys.modules.get(name, missing) for name in replacements}
    sys.modules.update(replacements)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is missing:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _cli(*argv: Any, modules: dict[str, Any] | None = None) -> CliResult:
    """``torchgmm ARGV`` in this process; warnings are printed to its stderr, as a console script would."""
    err = io.StringIO()
    with contextlib.ExitStack() as stack:
        if modules is not None:
            stack.enter_context(_modules(modules))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("always")
        warnings.showwarning = _show_on_stderr
        code = cli.main([str(a) for a in argv])
    return CliResult(code, err.getvalue())


def _data() -> Path:
    return _once("X.npy", lambda: _npy("X.npy", X))


def _out(name: str = "out.pt") -> list[str]:
    return ["-q", "-o", str(_path(name))]


def _every_command(data: Path) -> list[CliResult]:
    """Each command that reads a data file, given ``data``."""
    return [
        _cli("fit", data, *_out()),
        _cli("predict", _model_file(), data),
        _cli("score", _model_file(), data),
        _cli("select", data, "-k", "1"),
        _cli("plot", _model_file(), data, *_out("plot.png")),
    ]


def _every_config_command(config: Path) -> list[CliResult]:
    """Each command that takes ``--config``, given ``config``."""
    return [_cli("fit", _data(), "--config", config, *_out()), _cli("select", _data(), "-k", "1", "--config", config)]


def _every_model_command(model: Path) -> list[CliResult]:
    """Each command that reads a model file, given ``model``."""
    return [
        _cli("predict", model, _data()),
        _cli("score", model, _data()),
        _cli("plot", model, _data(), *_out("p.png")),
    ]


def _no_folder(name: str) -> Path:
    return _path("no-such-folder") / name


def _fake_pyarrow(columns: dict[str, tuple[np.ndarray, str]]) -> dict[str, types.ModuleType]:
    """A stand-in for ``pyarrow`` whose ``parquet.read_table`` gives these columns (values, arrow type)."""
    table = types.SimpleNamespace(
        column_names=list(columns),
        columns=[types.SimpleNamespace(to_numpy=lambda v=v: v, type=t) for v, t in columns.values()],
    )
    parquet = types.ModuleType("pyarrow.parquet")
    parquet.read_table = lambda path: table
    pyarrow = types.ModuleType("pyarrow")
    pyarrow.parquet = parquet
    return {"pyarrow": pyarrow, "pyarrow.parquet": parquet}


def _parquet() -> Path:
    return _bytes("X.parquet", b"PAR1 stand-in")


def _cli_checkpoint() -> Path:
    """The checkpoint ``torchgmm fit X.npy -k 2 --checkpoint fit-cli.ckpt`` keeps when interrupted at iteration 2."""

    def make() -> Path:
        from torchgmm.cli.progress import Progress

        def interrupt(self, iteration, running, best):
            if iteration == 2:
                raise KeyboardInterrupt

        with mock.patch.object(Progress, "__call__", interrupt):
            assert _cli("fit", _data(), "-k", "2", "--checkpoint", _path("fit-cli.ckpt"), *_out()).code == 130
        return _path("fit-cli.ckpt")

    return _once("cli_checkpoint", make)


# ------------------------------------------------------------------------------------ the cases


def _no_cuda():
    return mock.patch("torch.cuda.is_available", return_value=False)


def _device_no_cuda() -> None:
    with _no_cuda():
        _each(lambda: _parameter("device", "cuda"), lambda: _parameter("device", torch.device("cuda")))


def _device_index() -> None:
    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.device_count", return_value=1),
    ):
        _parameter("device", "cuda:3")


def _load_without_cuda(path: Path) -> None:
    with _no_cuda():
        GaussianMixture.load(path)


def _checkpoint() -> Path:
    """The checkpoint of ``_fit()`` interrupted after its second iteration."""

    def make() -> Path:
        path = _path("fit.ckpt")

        def interrupt(iteration, running, best):
            if iteration == 2:
                raise KeyboardInterrupt

        with contextlib.suppress(KeyboardInterrupt):
            GaussianMixture(2, max_iter=5, checkpoint_path=path).fit(X, callback=interrupt)
        return path

    return _once("checkpoint", make)


def _checkpoint_with(name: str, change: Callable[[dict], None]) -> Path:
    content = torch.load(_checkpoint(), weights_only=True)
    change(content)
    return _torch_file(name, content)


def _given_means(content: dict) -> None:
    """A checkpoint of a fit that was given ``means_init`` (this one is not)."""
    content["fit"]["means_init"] = torch.zeros(2, 2, dtype=torch.float64)


def _out_of_memory_in(target: str, call: Callable[[], Any], fails_after: int = 0) -> None:
    """``call`` with ``target`` running out of memory (the CPU allocator's error) after ``fails_after`` calls."""
    real, calls = _resolve(target), []

    def no_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) > fails_after:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes.")
        return real(*args, **kwargs)

    with warnings.catch_warnings(), mock.patch(target, no_memory):
        warnings.simplefilter("ignore")
        call()


def _resolve(target: str) -> Any:
    module, name = target.rsplit(".", 1)
    return getattr(sys.modules[module], name)


def _out_of_memory_distributed() -> None:
    def no_memory(rows: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory.")

    with mock.patch.object(torchgmm.distributed, "is_distributed", return_value=True):
        torchgmm.passes.retry_with_fewer_rows(no_memory, 4096, "the E-step", torch.device("cuda", 0))


def _select(sample_weight: Any = None, **params: Any) -> Any:
    return GaussianMixtureSelection(**{"n_components": [1, 2], "max_iter": 5, **params}).fit(
        X, sample_weight=sample_weight
    )


def _with_kernel_env(value: str, run: Callable[[], Any], triton_missing: bool = False) -> Any:
    with mock.patch.dict(os.environ, {torchgmm.fused.KERNEL_ENV: value}):
        if not triton_missing:
            return run()
        with mock.patch.object(torchgmm.fused, "triton", None):
            return run()


CASES: dict[str, Callable[[], Any]] = {
    # -- estimator parameters
    "n-components-type": lambda: _each(
        lambda: _parameter("n_components", 1.5),
        lambda: _parameter("n_components", True),
        lambda: _parameter("n_components", "3"),
    ),
    "n-components-range": lambda: _parameter("n_components", 0),
    "n-components-above-samples": lambda: _parameter("n_components", 25),
    "covariance-type-unknown": lambda: _each(
        lambda: _parameter("covariance_type", "banana"),
        lambda: _parameter("covariance_type", ["full"]),
        lambda: _fitted().set_params(covariance_type="banana").predict(X),
        lambda: _module(covariance_type="banana"),
        lambda: GaussianMixtureModule.from_covariances(W, M, torch.eye(3).expand(2, 3, 3), "banana"),
    ),
    "tol-type": lambda: _each(lambda: _parameter("tol", "0.1"), lambda: _parameter("tol", None)),
    "tol-range": lambda: _parameter("tol", -1),
    "tol-not-finite": lambda: _each(lambda: _parameter("tol", math.nan), lambda: _parameter("tol", math.inf)),
    "reg-covar-type": lambda: _reg_covar("1e-6"),
    "reg-covar-range": lambda: _reg_covar(-1.0),
    "reg-covar-not-finite": lambda: _each(lambda: _reg_covar(math.inf), lambda: _reg_covar(math.nan)),
    "max-iter-type": lambda: _parameter("max_iter", 10.0),
    "max-iter-range": lambda: _parameter("max_iter", -1),
    "n-init-type": lambda: _parameter("n_init", "3"),
    "n-init-range": lambda: _parameter("n_init", 0),
    "init-params-unknown": lambda: _each(
        lambda: _parameter("init_params", "kmeans++"), lambda: _parameter("init_params", None)
    ),
    "warm-start-type": lambda: _parameter("warm_start", 1),
    "verbose-type": lambda: _parameter("verbose", 1.0),
    "verbose-range": lambda: _parameter("verbose", -1),
    "verbose-interval-type": lambda: _parameter("verbose_interval", "10"),
    "verbose-interval-range": lambda: _parameter("verbose_interval", 0),
    "batch-size-type": lambda: _each(
        lambda: _parameter("batch_size", 1.5),
        lambda: _parameter("batch_size", True),
        lambda: GaussianMixture(2, batch_size=1.5).fit([X[:10], X[10:]]),
    ),
    "batch-size-range": lambda: _each(
        lambda: _parameter("batch_size", 0), lambda: GaussianMixture(2, batch_size=-3).fit([X[:10], X[10:]])
    ),
    "random-state-negative": lambda: _each(
        lambda: _parameter("random_state", -1), lambda: _fitted().set_params(random_state=-1).sample(1)
    ),
    "random-state-type": lambda: _each(
        lambda: _parameter("random_state", 1.5),
        lambda: _parameter("random_state", "seed"),
        lambda: _fitted().set_params(random_state="seed").sample(1),
    ),
    "dtype-unknown": lambda: _each(
        lambda: _parameter("dtype", "float16"),
        lambda: _parameter("dtype", "double"),
        lambda: _parameter("dtype", torch.int32),
        lambda: _parameter("dtype", [1]),
        lambda: _fitted().set_params(dtype="float16").predict(X),
    ),
    "device-unknown": lambda: _each(
        lambda: _parameter("device", "gpu"),
        lambda: _parameter("device", "cpu:x"),
        lambda: _fitted().set_params(device="gpu").sample(1),
        lambda: _fitted().set_params(device="gpu").to_module(),
    ),
    "device-no-cuda": _device_no_cuda,
    "device-index": _device_index,
    "matmul-precision-unknown": lambda: _each(
        lambda: _parameter("matmul_precision", "tf32"),
        lambda: _fitted().set_params(matmul_precision="low").predict(X),
    ),
    "kernel-env-unknown": lambda: _with_kernel_env("cuda", lambda: _fit()),
    "kernel-env-no-triton": lambda: _with_kernel_env("triton", lambda: _fit(), triton_missing=True),
    "strategy-unknown": lambda: _each(
        lambda: _parameter("strategy", "annealing"), lambda: _parameter("strategy", None)
    ),
    "race-survivors-type": lambda: _each(
        lambda: _parameter("race_survivors", 2.5, strategy="race"), lambda: _parameter("race_survivors", "2")
    ),
    "race-survivors-range": lambda: _parameter("race_survivors", 0, strategy="race"),
    "race-first-cut-type": lambda: _each(
        lambda: _parameter("race_first_cut", 1.5), lambda: _parameter("race_first_cut", None, strategy="race")
    ),
    "race-first-cut-range": lambda: _parameter("race_first_cut", 0, strategy="race"),
    "sample-weight-shape": lambda: _each(
        lambda: GaussianMixture(2).fit(X, sample_weight=np.ones(len(X) - 1)),
        lambda: GaussianMixture(2).fit(X, sample_weight=np.ones((len(X), 1))),
        lambda: GaussianMixture(2).partial_fit(X, sample_weight=np.ones(3)),
        lambda: _fitted().score(X, sample_weight=np.ones(len(X) + 1)),
        lambda: _select(sample_weight=np.ones(len(X) - 1)),
        lambda: _select(sample_weight=np.ones(len(X) - 1), criterion="held-out"),
    ),
    "sample-weight-value": lambda: _each(
        lambda: GaussianMixture(2).fit(X, sample_weight=np.r_[-1.0, np.ones(len(X) - 1)]),
        lambda: GaussianMixture(2).fit(X, sample_weight=np.r_[np.ones(len(X) - 1), np.nan]),
        lambda: GaussianMixture(2).fit(X, sample_weight=np.r_[np.inf, np.ones(len(X) - 1)]),
        lambda: _fitted().bic(X, sample_weight=np.r_[-0.5, np.ones(len(X) - 1)]),
        lambda: _select(sample_weight=np.r_[np.nan, np.ones(len(X) - 1)]),
    ),
    "sample-weight-all-zero": lambda: _each(
        lambda: GaussianMixture(2).fit(X, sample_weight=np.zeros(len(X))),
        lambda: _fitted().score(X, sample_weight=np.zeros(len(X))),
        lambda: _select(sample_weight=np.zeros(len(X))),
    ),
    "sample-weight-string": lambda: _each(
        lambda: GaussianMixture(2).fit(X, sample_weight="heavy"),
        lambda: GaussianMixture(2).partial_fit(_pairs(), sample_weight="chunk"),
        lambda: _fitted().score(X, sample_weight="Chunks"),
        lambda: _select(sample_weight="heavy", criterion="held-out"),
    ),
    "sample-weight-type": lambda: _each(
        lambda: GaussianMixture(2).fit(X, sample_weight=object()),
        lambda: GaussianMixture(2).fit(X, sample_weight=[{}]),
        lambda: _select(sample_weight=[{}] * len(X)),
    ),
    "fixed-params-letter": lambda: _parameter("fixed_params", "wx", means_init=X[:2]),
    "fixed-params-name": lambda: _each(
        lambda: _parameter("fixed_params", ["means", "variances"], means_init=X[:2]),
        lambda: _parameter("fixed_params", ("Weights",)),
    ),
    "fixed-params-type": lambda: _each(lambda: _parameter("fixed_params", None), lambda: _parameter("fixed_params", 3)),
    "fixed-params-no-initial-value": lambda: _each(
        lambda: _parameter("fixed_params", ["means"]), lambda: _parameter("fixed_params", "wc", means_init=X[:2])
    ),
    "fixed-params-moving-strategy": lambda: _each(
        lambda: _parameter("fixed_params", "w", strategy="split-merge"),
        lambda: _parameter("fixed_params", ["weights"], strategy="auto"),
    ),
    "anneal-beta-start-type": lambda: _each(
        lambda: _parameter("anneal_beta_start", "0.1", strategy="anneal"),
        lambda: _parameter("anneal_beta_start", True),
        lambda: _parameter("anneal_beta_start", [0.1, "x"], n_init=2, strategy="anneal"),
    ),
    "anneal-beta-start-range": lambda: _each(
        lambda: _parameter("anneal_beta_start", 0.0, strategy="anneal"),
        lambda: _parameter("anneal_beta_start", 1.5),
        lambda: _parameter("anneal_beta_start", -0.1, strategy="anneal"),
        lambda: _parameter("anneal_beta_start", float("nan"), strategy="anneal"),
        lambda: _parameter("anneal_beta_start", [0.1, 2.0], n_init=2, strategy="anneal"),
    ),
    "anneal-beta-start-length": lambda: _each(
        lambda: _parameter("anneal_beta_start", [0.1, 0.2, 0.3], n_init=2, strategy="anneal"),
        lambda: _parameter("anneal_beta_start", [], strategy="anneal"),
        lambda: _parameter("anneal_beta_start", np.full((1, 1), 0.5), strategy="anneal"),
        lambda: _parameter("anneal_beta_start", [0.1, 0.2, 0.3], n_init=4, strategy="auto"),  # auto runs 2
    ),
    "anneal-steps-type": lambda: _each(
        lambda: _parameter("anneal_steps", 2.5, strategy="anneal"), lambda: _parameter("anneal_steps", "4")
    ),
    "anneal-steps-range": lambda: _parameter("anneal_steps", 0, strategy="anneal"),
    "anneal-iter-type": lambda: _each(
        lambda: _parameter("anneal_iter", 2.5, strategy="anneal"), lambda: _parameter("anneal_iter", None)
    ),
    "anneal-iter-range": lambda: _parameter("anneal_iter", 0, strategy="anneal"),
    "split-merge-candidates-type": lambda: _each(
        lambda: _parameter("split_merge_candidates", 2.0, strategy="split-merge"),
        lambda: _parameter("split_merge_candidates", "8"),
    ),
    "split-merge-candidates-range": lambda: _parameter("split_merge_candidates", 0, strategy="split-merge"),
    "split-merge-rounds-type": lambda: _each(
        lambda: _parameter("split_merge_rounds", 1.5, strategy="split-merge"),
        lambda: _parameter("split_merge_rounds", None),
    ),
    "split-merge-rounds-range": lambda: _parameter("split_merge_rounds", -1, strategy="split-merge"),
    "init-whiten-type": lambda: _each(lambda: _parameter("init_whiten", "yes"), lambda: _parameter("init_whiten", 1)),
    "learning-decay-type": lambda: _step_size_parameter("learning_decay", "0.7"),
    "learning-decay-above-one": lambda: _step_size_parameter("learning_decay", 2),
    "learning-decay-too-small": lambda: _step_size_parameter("learning_decay", 0.5),
    "learning-decay-not-finite": lambda: _step_size_parameter("learning_decay", math.nan),
    "learning-offset-type": lambda: _step_size_parameter("learning_offset", "2"),
    "learning-offset-range": lambda: _step_size_parameter("learning_offset", 0.5),
    "learning-offset-not-finite": lambda: _step_size_parameter("learning_offset", math.inf),
    "checkpoint-interval-type": lambda: _parameter("checkpoint_interval", 2.5),
    "checkpoint-interval-range": lambda: _parameter("checkpoint_interval", 0),
    "checkpoint-path-type": lambda: _parameter("checkpoint_path", 3),
    "checkpoint-path-folder": lambda: _parameter("checkpoint_path", _path("")),
    "checkpoint-path-no-folder": lambda: _parameter("checkpoint_path", _no_folder("fit.ckpt")),
    "set-params-unknown": lambda: GaussianMixture(2).set_params(tol=0.5, n_component=3),
    # -- initial parameters
    "weights-init-shape": lambda: _each(
        lambda: _parameter("weights_init", np.full(3, 1 / 3)),
        lambda: GaussianMixture(2, weights_init=[1.0]).partial_fit(X),
    ),
    "means-init-shape": lambda: _each(
        lambda: _parameter("means_init", np.zeros((2, 3))), lambda: _parameter("means_init", np.zeros(4))
    ),
    "precisions-init-shape": lambda: _each(
        lambda: _parameter("precisions_init", np.ones((2, 2))),
        lambda: _parameter("precisions_init", np.ones((2, 2, 2)), covariance_type="tied"),
        lambda: _parameter("precisions_init", np.ones(2), covariance_type="diag"),
        lambda: _parameter("precisions_init", np.ones((2, 2)), covariance_type="spherical"),
    ),
    "init-not-finite": lambda: _each(
        lambda: _parameter("weights_init", [0.5, np.nan]),
        lambda: _parameter("means_init", _with_nan(np.zeros((2, 2)), 1, 1)),
        lambda: _parameter("precisions_init", np.full(2, np.inf), covariance_type="spherical"),
    ),
    "init-not-numeric": lambda: _each(
        lambda: _parameter("weights_init", ["a", "b"]),
        lambda: _parameter("means_init", np.array([[1.0, "a"], [2.0, 3.0]], dtype=object)),
    ),
    "init-complex": lambda: _each(
        lambda: _parameter("means_init", np.ones((2, 2), dtype=complex)),
        lambda: _parameter("weights_init", torch.full((2,), 0.5, dtype=torch.complex64)),
    ),
    "init-not-array": lambda: _parameter("means_init", [[1.0, 2.0], [3.0]]),
    "init-sparse": lambda: _parameter("means_init", _sparse(np.zeros((2, 2)))),
    "weights-init-range": lambda: _parameter("weights_init", [-0.5, 1.5]),
    "weights-init-sum": lambda: _parameter("weights_init", [0.3, 0.3]),
    "precisions-init-not-spd": lambda: _each(
        lambda: _parameter("precisions_init", np.stack([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])),
        lambda: _parameter("precisions_init", np.array([[2.0, 0.5], [0.0, 2.0]]), covariance_type="tied"),
    ),
    "precisions-init-not-positive": lambda: _each(
        lambda: _parameter("precisions_init", np.array([[1.0, 1.0], [1.0, 0.0]]), covariance_type="diag"),
        lambda: _parameter("precisions_init", [1.0, -1.0], covariance_type="spherical"),
    ),
    # -- data in memory
    "x-not-finite": lambda: _each(
        lambda: GaussianMixture(2).fit(_with_nan(X)),
        lambda: GaussianMixture(2).fit(torch.as_tensor(_with_nan(X), dtype=torch.float32)),
        lambda: _fitted().predict(_with_nan(X)),
        lambda: _fitted().score(_with_nan(X, 7, 0, -np.inf)),
    ),
    "x-1d": lambda: _each(lambda: GaussianMixture(1).fit(X[:, 0]), lambda: _fitted().predict(X[0])),
    "x-scalar": lambda: _each(lambda: GaussianMixture(1).fit(5.0), lambda: _fitted().predict(torch.tensor(1.0))),
    "x-not-2d": lambda: _each(
        lambda: GaussianMixture(1).fit(np.zeros((4, 5, 2))),
        lambda: _fitted().predict(torch.zeros(3, 4, 2)),
    ),
    "x-empty": lambda: _each(lambda: GaussianMixture(1).fit([]), lambda: GaussianMixture(1).fit(np.array([]))),
    "x-no-rows": lambda: _each(
        lambda: GaussianMixture(1).fit(np.empty((0, 2))), lambda: _fitted().predict(torch.empty(0, 2))
    ),
    "x-no-features": lambda: _each(lambda: GaussianMixture(1).fit(np.empty((10, 0))), lambda: _fitted().predict([[]])),
    "x-not-numeric": lambda: _each(
        lambda: GaussianMixture(1).fit(np.array([["a", "b"], ["c", "d"]])),
        lambda: GaussianMixture(1).fit(np.array([["a", 1.0], [2.0, 3.0]], dtype=object)),
        lambda: _fitted().predict("abc"),
    ),
    "x-not-numbers": lambda: _each(
        lambda: GaussianMixture(1).fit(np.array([[{"a": 1}, 1.0], [2.0, 3.0]], dtype=object)),
        lambda: GaussianMixture(1).fit({"a": [1.0, 2.0]}),
        lambda: _fitted().predict(np.array([[1.0, {2.0}]], dtype=object)),
    ),
    "x-ragged": lambda: GaussianMixture(1).fit([[1.0, 2.0], [3.0]]),
    "x-complex": lambda: _each(
        lambda: GaussianMixture(1).fit(np.ones((3, 2), dtype=complex)),
        lambda: GaussianMixture(1).fit(torch.ones(3, 2, dtype=torch.complex64)),
        lambda: _fitted().predict(torch.ones(3, 2, dtype=torch.complex128)),
    ),
    "x-sparse": lambda: _each(
        lambda: GaussianMixture(1).fit(_sparse(np.eye(5))), lambda: _fitted().predict(_sparse(np.eye(2)))
    ),
    "x-features-mismatch": lambda: _each(
        *(
            lambda method=method: getattr(_fitted(), method)(X3)
            for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic")
        ),
        lambda: GaussianMixture(2, random_state=0).partial_fit(X).partial_fit(X3),
    ),
    "warm-start-features": lambda: _fitted().set_params(warm_start=True).fit(X3),
    "partial-fit-first-batch-small": lambda: GaussianMixture(5).partial_fit(X[:3]),
    "not-fitted": lambda: _each(
        *(
            lambda method=method: getattr(GaussianMixture(2), method)(X)
            for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic")
        ),
        lambda: GaussianMixture(2).sample(),
        lambda: GaussianMixture(2).save(_path("never.pt")),
        lambda: GaussianMixture(2).to_module(),
    ),
    "sample-count": lambda: _each(
        lambda: _fitted().sample(0),
        lambda: _fitted().sample(-3),
        lambda: _fitted().sample(2.5),
        lambda: _fitted().sample("10"),
    ),
    "distributed-disagree": _ranks_disagree,
    "distributed-rank-failed": _rank_failed,
    # -- chunked data
    "chunk-iterator": lambda: _each(
        lambda: GaussianMixture(2).fit(iter([X[:10], X[10:]])),
        lambda: GaussianMixture(2).fit(chunk for chunk in [X[:10], X[10:]]),
        lambda: _fitted().predict(iter([X[:10], X[10:]])),
    ),
    "chunk-not-finite": lambda: _each(
        lambda: GaussianMixture(2).fit([X[:10], _with_nan(X[10:], 2, 1)]),
        lambda: GaussianMixture(2).fit(DataLoader(TensorDataset(torch.as_tensor(_with_nan(X))), batch_size=4)),
        lambda: _fitted().predict([torch.as_tensor(X[:10]), torch.as_tensor(_with_nan(X[10:]))]),
    ),
    "chunk-width": lambda: _each(
        lambda: GaussianMixture(2).fit([X[:10], X3[10:]]),
        lambda: _fitted().predict([torch.as_tensor(X[:10]), torch.as_tensor(X3[10:])]),
    ),
    "chunk-not-2d": lambda: _each(
        lambda: GaussianMixture(2).fit([X[:10], np.zeros((4, 3, 2))]),
        lambda: GaussianMixture(2).fit(DataLoader(TensorDataset(torch.zeros(10, 3, 2)), batch_size=4)),
        lambda: GaussianMixture(1).fit({1.0, 2.0, 3.0}),
    ),
    "chunk-not-numeric": lambda: _each(
        lambda: GaussianMixture(2).fit([X[:10], np.array([["a", "b"]])]),
        lambda: GaussianMixture(2).fit(DataLoader([{"x": torch.zeros(2)}] * 4, batch_size=2)),
        lambda: GaussianMixture(2).fit([X[:10], np.array([[{"a": 1}, 1.0]], dtype=object)]),
    ),
    "chunk-complex": lambda: _each(
        lambda: GaussianMixture(2).fit([X[:10], np.ones((2, 2), dtype=complex)]),
        lambda: GaussianMixture(2).fit([torch.as_tensor(X[:10]), torch.ones(2, 2, dtype=torch.complex64)]),
    ),
    "chunk-empty": lambda: _each(
        lambda: GaussianMixture(2).fit(DataLoader(TensorDataset(torch.empty(0, 2)), batch_size=4)),
        lambda: GaussianMixture(2).fit([np.empty((0, 2)), np.empty((0, 2))]),
        lambda: _fitted().predict([torch.empty(0, 2)]),
    ),
    "chunk-pass-changes": lambda: _each(
        lambda: GaussianMixture(2).fit(_Shrinking([X[:5], X[5:15], X[15:]])),
        lambda: _fitted().predict(_Shrinking([X[:5], X[5:15], X[15:]])),
    ),
    "chunk-weights-source": lambda: _each(
        lambda: GaussianMixture(2).fit(X, sample_weight="chunks"),
        lambda: GaussianMixture(2).fit(torch.as_tensor(X), sample_weight="chunks"),
        lambda: _fitted().score(X, sample_weight="chunks"),
    ),
    "chunk-weights-missing": lambda: _each(
        lambda: GaussianMixture(2).fit([(X[:10], np.ones(10)), X[10:]], sample_weight="chunks"),
        lambda: GaussianMixture(2).fit([X[:10], (X[10:], np.ones(len(X) - 10))], sample_weight="chunks"),
        lambda: GaussianMixture(2).fit(
            DataLoader(TensorDataset(torch.as_tensor(X)), batch_size=8), sample_weight="chunks"
        ),
        lambda: _fitted().bic([X[:10], X[10:]], sample_weight="chunks"),
    ),
    "chunk-weights-shape": lambda: _each(
        lambda: GaussianMixture(2).fit([(X[:10], np.ones(9)), (X[10:], np.ones(len(X) - 10))], sample_weight="chunks"),
        lambda: GaussianMixture(2).fit(_pairs(np.ones((len(X), 2))), sample_weight="chunks"),
        lambda: GaussianMixture(2).partial_fit([(X[:10], 1.0)], sample_weight="chunks"),
    ),
    "chunk-weights-value": lambda: _each(
        lambda: GaussianMixture(2).fit(_pairs(np.r_[np.ones(12), -1.0, np.ones(len(X) - 13)]), sample_weight="chunks"),
        lambda: GaussianMixture(2).fit(_pairs(np.r_[np.nan, np.ones(len(X) - 1)]), sample_weight="chunks"),
        lambda: _fitted().aic(_pairs(np.r_[np.ones(len(X) - 1), np.inf]), sample_weight="chunks"),
    ),
    "chunk-weights-type": lambda: _each(
        lambda: GaussianMixture(2).fit([(X[:10], ["a"] * 10)], sample_weight="chunks"),
        lambda: GaussianMixture(2).fit([(X[:10], {"w": 1})], sample_weight="chunks"),
    ),
    "chunk-weights-all-zero": lambda: _each(
        lambda: GaussianMixture(2).fit(_pairs(np.zeros(len(X))), sample_weight="chunks"),
        lambda: GaussianMixture(2).fit(
            DataLoader(TensorDataset(torch.as_tensor(X), torch.zeros(len(X))), batch_size=8), sample_weight="chunks"
        ),
        lambda: _fitted().score(_pairs(np.zeros(len(X))), sample_weight="chunks"),
    ),
    "chunk-features-mismatch": lambda: _each(
        *(
            lambda method=method: getattr(_fitted(), method)([X3[:10], X3[10:]])
            for method in ("predict", "score_samples", "score", "bic")
        ),
    ),
    "memmap-not-finite": lambda: GaussianMixture(2).fit(np.load(_npy("nan.npy", _with_nan(X)), mmap_mode="r")),
    "memmap-1d": lambda: GaussianMixture(2).fit(np.load(_npy("1d.npy", X[:, 0]), mmap_mode="r")),
    "memmap-not-2d": lambda: GaussianMixture(2).fit(np.load(_npy("3d.npy", np.zeros((4, 3, 2))), mmap_mode="r")),
    "memmap-not-numeric": lambda: GaussianMixture(2).fit(
        np.load(_npy("str.npy", np.array([["a", "b"]] * 4)), mmap_mode="r")
    ),
    "memmap-complex": lambda: GaussianMixture(2).fit(np.load(_npy("complex.npy", X.astype(complex)), mmap_mode="r")),
    "memmap-truncated": _truncated_memmap,
    # -- the torch module
    "selection-k-empty": lambda: _each(lambda: _select(n_components=range(1, 1)), lambda: _select(n_components=[])),
    "selection-k-type": lambda: _each(
        lambda: _select(n_components="1-8"), lambda: _select(n_components=2.5), lambda: _select(n_components=[2, 3.5])
    ),
    "selection-k-range": lambda: _select(n_components=range(0, 3)),
    "selection-k-above-rows": lambda: _select(n_components=range(1, len(X) + 2)),
    "selection-covariance-types": lambda: _each(
        lambda: _select(covariance_types=("full", "banana")), lambda: _select(covariance_types=())
    ),
    "selection-criterion-unknown": lambda: _select(criterion="bic2"),
    "selection-nothing-fitted": lambda: GaussianMixtureSelection([1, 2], ["full", "diag"]).fit(X * 1e200),
    "selection-grow-type": lambda: _each(lambda: _select(grow="yes"), lambda: _select(grow=1)),
    "selection-strategy-settings": lambda: _each(
        lambda: _select(strategy="anneal", anneal_beta_start=2.0), lambda: _select(anneal_beta_start=0.0)
    ),
    "selection-validation-fraction": lambda: _each(
        lambda: _select(criterion="held-out", validation_fraction=0.0),
        lambda: _select(criterion="held-out", validation_fraction=1.0),
    ),
    "selection-held-out-chunk-weights": lambda: GaussianMixtureSelection([1, 2], criterion="held-out").fit(
        _pairs(), sample_weight="chunks"
    ),
    "selection-held-out-too-few-rows": lambda: _select(criterion="held-out", validation_fraction=0.001),
    "module-param-not-tensor": lambda: _each(
        lambda: _module(weights=None),
        lambda: _module(weights="ab"),
        lambda: _module(means=[[0.0, 0.0, 0.0], [0.0, 0.0]]),
        lambda: GaussianMixtureModule.from_covariances(W, M, "eye"),
    ),
    "module-param-not-float": lambda: _each(
        lambda: _module(means=torch.zeros(2, 3, dtype=torch.long)),
        lambda: _module(weights=torch.tensor([True, False])),
        lambda: _module(means=torch.zeros(2, 3, dtype=torch.complex64)),
        lambda: GaussianMixtureModule.from_covariances(W, M, torch.eye(3, dtype=torch.long).expand(2, 3, 3)),
    ),
    "module-means-shape": lambda: _module(means=torch.zeros(3)),
    "module-weights-shape": lambda: _module(weights=torch.ones(3) / 3),
    "module-precisions-shape": lambda: _each(
        lambda: _module(precisions_cholesky=torch.ones(2, 3)),
        lambda: _module(covariance_type="tied"),
        lambda: _module(covariance_type="spherical"),
    ),
    "module-not-finite": lambda: _each(
        lambda: _module(means=torch.full((2, 3), math.nan)), lambda: _module(precisions_cholesky=P * math.inf)
    ),
    "module-weights-not-simplex": lambda: _each(
        lambda: _module(weights=torch.tensor([0.5, 1.0])), lambda: _module(weights=torch.tensor([1.0, 0.0]))
    ),
    "module-precisions-diagonal": lambda: _each(
        lambda: _module(precisions_cholesky=-P),
        lambda: _module(precisions_cholesky=torch.tensor([1.0, 0.0]), covariance_type="spherical"),
    ),
    "module-precisions-triangular": lambda: _module(precisions_cholesky=torch.ones(2, 3, 3)),
    "module-covariances-shape": lambda: _each(
        lambda: GaussianMixtureModule.from_covariances(W, M, torch.eye(3)),
        lambda: GaussianMixtureModule.from_covariances(W, M, torch.ones(2, 3)),
    ),
    "module-covariances-not-spd": lambda: _each(
        lambda: GaussianMixtureModule.from_covariances(W, M, -torch.eye(3).expand(2, 3, 3)),
        lambda: GaussianMixtureModule.from_covariances(W, M, -torch.ones(2, 3), "diag"),
    ),
    "module-input-not-tensor": lambda: _each(
        lambda: _module().log_prob(np.zeros((2, 3))),
        lambda: _module().posterior([[0.0, 0.0, 0.0]]),
        lambda: _module().predict(np.zeros((2, 3))),
        lambda: _module().partial_fit(np.zeros((2, 3))),
    ),
    "module-input-not-float": lambda: _each(
        lambda: _module().log_prob(torch.zeros(2, 3, dtype=torch.long)),
        lambda: _module().posterior(torch.zeros(2, 3, dtype=torch.bool)),
        lambda: _module().partial_fit(torch.zeros(2, 3, dtype=torch.complex64)),
    ),
    "module-input-shape": lambda: _each(
        lambda: _module().log_prob(torch.zeros(5, 4)),
        lambda: _module().posterior(torch.tensor(1.0)),
        lambda: _module().predict(torch.zeros(2)),
    ),
    "module-input-device": lambda: _each(
        lambda: _module().log_prob(torch.zeros(2, 3, device="meta")),
        lambda: _module()(torch.zeros(2, 3, device="meta")),
    ),
    "module-input-not-finite": lambda: _each(
        lambda: _module().log_prob(torch.tensor([[0.0, 0.0, 0.0], [0.0, math.nan, 0.0]])),
        lambda: _module().partial_fit(torch.tensor([[0.0, math.inf, 0.0]])),
    ),
    "module-sample-count": lambda: _each(
        lambda: _module().sample(0), lambda: _module().sample(2.5), lambda: _module().sample(True)
    ),
    "module-partial-fit-not-2d": lambda: _each(
        lambda: _module().partial_fit(torch.zeros(2, 2, 3)), lambda: _module().partial_fit(torch.zeros(3))
    ),
    "module-partial-fit-empty": lambda: _module().partial_fit(torch.zeros(0, 3)),
    # -- model files
    "save-no-folder": lambda: _fitted().save(_no_folder("model.pt")),
    "save-to-folder": lambda: _fitted().save(_path("")),
    "load-missing": lambda: GaussianMixture.load(_path("missing.pt")),
    "load-other-file": lambda: _each(
        lambda: GaussianMixture.load(_bytes("garbage.pt", b"not a torch file")),
        lambda: GaussianMixture.load(_data()),
        lambda: GaussianMixture.load(_text("data.csv", "a,b\n1,2\n3,4\n")),
        lambda: GaussianMixture.load(_bytes("pickled.pkl", pickle.dumps({"weights": [0.5, 0.5]}))),
        lambda: GaussianMixture.load(_bytes("empty.pt", b"")),
    ),
    "load-unreadable": lambda: _each(
        lambda: GaussianMixture.load(_bytes("truncated.pt", _model_file().read_bytes()[:100])),
        lambda: GaussianMixture.load(_torch_file("code.pt", {"format": "torchgmm-model", "x": _Code()})),
    ),
    "load-not-model": lambda: GaussianMixture.load(_torch_file("other.pt", {"weights": torch.ones(3)})),
    "load-newer-format": lambda: GaussianMixture.load(
        _saved_with("future.pt", lambda content: content.update(format_version=99))
    ),
    "load-bad-version": lambda: _each(
        lambda: GaussianMixture.load(_saved_with("no-version.pt", lambda content: content.pop("format_version"))),
        lambda: GaussianMixture.load(_saved_with("str-version.pt", lambda content: content.update(format_version="1"))),
    ),
    "load-damaged": lambda: _each(
        lambda: GaussianMixture.load(_saved_with("no-fitted.pt", lambda content: content.pop("fitted"))),
        lambda: GaussianMixture.load(_saved_with("no-means.pt", lambda content: content["fitted"].pop("means_"))),
        lambda: GaussianMixture.load(_saved_with("bad-params.pt", lambda content: content.update(params=[1, 2]))),
    ),
    "load-cuda-unavailable": lambda: _load_without_cuda(_cuda_model_file()),
    "load-map-location": lambda: _each(
        lambda: GaussianMixture.load(_model_file(), map_location="gpu"),
        lambda: GaussianMixture.load(_model_file(), map_location=[1]),
    ),
    # -- checkpoints and memory
    "checkpoint-unreadable": lambda: _each(
        lambda: _parameter("checkpoint_path", _bytes("garbage.ckpt", b"not a torch file")),
        lambda: _parameter(
            "checkpoint_path", _torch_file("code.ckpt", {"format": "torchgmm-checkpoint", "x": _Code()})
        ),
    ),
    "checkpoint-not-checkpoint": lambda: _each(
        lambda: _parameter("checkpoint_path", _model_file()),
        lambda: _parameter("checkpoint_path", _torch_file("tensor.ckpt", torch.ones(3))),
    ),
    "checkpoint-format-version": lambda: _parameter(
        "checkpoint_path", _checkpoint_with("future.ckpt", lambda content: content.update(format_version=3))
    ),
    "checkpoint-damaged": lambda: _each(
        lambda: _parameter("checkpoint_path", _checkpoint_with("no-state.ckpt", lambda c: c.update(state=[1, 2]))),
        lambda: _parameter("checkpoint_path", _checkpoint_with("no-params.ckpt", lambda c: c["state"].pop("params"))),
        lambda: _parameter(
            "checkpoint_path",
            _checkpoint_with("bad-means.ckpt", lambda c: c["state"]["params"].update(means=torch.zeros(1, 2, 5))),
        ),
    ),
    "checkpoint-other-fit": lambda: _each(
        lambda: _parameter("checkpoint_path", _checkpoint(), n_components=3),
        lambda: _parameter("checkpoint_path", _checkpoint(), tol=1e-2),
        lambda: GaussianMixture(2, max_iter=5, checkpoint_path=_checkpoint()).fit(X[1:]),
        lambda: GaussianMixture(2, max_iter=5, checkpoint_path=_checkpoint()).fit(X.astype(np.float32)),
        lambda: _parameter("checkpoint_path", _checkpoint(), means_init=X[:2]),
        lambda: _parameter("checkpoint_path", _checkpoint_with("with-init.ckpt", lambda c: _given_means(c))),
    ),
    "checkpoint-other-data": lambda: GaussianMixture(2, max_iter=5, checkpoint_path=_checkpoint()).fit(X + 1),
    "out-of-memory": lambda: _each(
        lambda: _out_of_memory_in("torchgmm.trainer.maximise", lambda: _fit()),
        lambda: _out_of_memory_in("torchgmm.passes.working_dtype", lambda: _fitted().predict(X)),
        lambda: _out_of_memory_in("torchgmm.online.maximise", lambda: GaussianMixture(2).partial_fit(X)),
    ),
    "out-of-memory-one-row": lambda: _each(
        lambda: _out_of_memory_in("torchgmm.passes.estimate_log_prob_resp", lambda: _fitted().predict(X)),
        lambda: _out_of_memory_in("torchgmm.trainer.e_step", lambda: _fit()),
    ),
    "out-of-memory-distributed": lambda: _out_of_memory_distributed(),
    # -- command line
    "cli-data-missing": lambda: _every_command(_path("missing.csv")),
    "cli-data-folder": lambda: _every_command(_path("")),
    "cli-data-suffix": lambda: _every_command(_text("X.xlsx", "1,2\n")) + _every_command(_text("X", "1,2\n")),
    "cli-data-empty-file": lambda: [
        _cli("fit", _text("empty.csv", ""), *_out()),
        _cli("fit", _text("blank.csv", "\n\n"), *_out()),
    ],
    "cli-data-header-only": lambda: [
        _cli("fit", _text("header.csv", "a,b\n"), *_out()),
        _cli("fit", _text("header.txt", "a b\n"), *_out()),
    ],
    "cli-data-ragged": lambda: _cli("fit", _text("ragged.csv", "1,2\n3,4,5\n"), *_out()),
    "cli-data-not-number": lambda: _cli("fit", _text("cell.csv", "a,b\n1,2\n3,4\n5,oops\n"), *_out()),
    "cli-data-not-finite": lambda: [
        _cli("fit", _text("nan.csv", "a,b\n1,2\n\n3,nan\n"), *_out()),
        _cli("predict", _model_file(), _text("inf.csv", "1,2\n3,inf\n")),
        _cli("score", _model_file(), _text("huge.txt", "# x y\n1 2\n1e999 3\n")),
        _cli("select", _text("nan.tsv", "1\t2\nNaN\t3\n"), "-k", "1"),
        _cli("plot", _model_file(), _text("ninf.csv", "1;2\n3;-inf\n"), *_out("plot.png")),
    ],
    "cli-data-separator": lambda: [
        _cli("fit", _text("pipes.csv", "a|b\n1|2\n3|4\n"), *_out()),
        _cli("predict", _model_file(), _text("mixed.csv", "1;2\n3,4\n")),
        _cli("select", _text("colons.txt", "1:2\n3:4\n"), "-k", "1"),
    ],
    "cli-data-unparsable": lambda: _cli("fit", _text("underscore.csv", "1_000,2\n3,4\n"), *_out()),
    "cli-data-unreadable": lambda: [
        _cli("fit", _bytes("garbage.npy", b"definitely not numpy"), *_out()),
        _cli("fit", _bytes("garbage.pt", b"definitely not torch"), *_out()),
        _cli("fit", _npy("objects.npy", np.array([[1, "a"]], dtype=object)), *_out()),
    ],
    "cli-data-pt-not-tensor": lambda: _cli("fit", _torch_file("dict.pt", {"a": torch.ones(2)}), *_out()),
    "cli-data-not-2d": lambda: [
        _cli("fit", _npy("1d.npy", X[:, 0]), *_out()),
        _cli("fit", _torch_file("3d.pt", torch.zeros(2, 3, 4)), *_out()),
    ],
    "cli-data-empty-array": lambda: [
        _cli("fit", _npy("no-rows.npy", np.empty((0, 3))), *_out()),
        _cli("fit", _torch_file("no-columns.pt", torch.empty(5, 0)), *_out()),
    ],
    "cli-array-not-finite": lambda: [
        _cli("fit", _npy("nan.npy", _with_nan(X)), *_out()),
        _cli("score", _model_file(), _torch_file("nan.pt", torch.tensor([[1.0, float("nan")]]))),
        _cli("predict", _model_file(), _parquet(), modules=_fake_pyarrow({"x": (np.array([1.0, np.inf]), "double")})),
        _cli("select", _npy("inf.npy", _with_nan(X, value=-np.inf)), "-k", "1"),
        _cli("plot", _model_file(), _npy("nan.npy", _with_nan(X)), *_out("plot.png")),
    ],
    "cli-parquet-needs-pyarrow": lambda: _cli(
        "fit", _parquet(), *_out(), modules={"pyarrow": None, "pyarrow.parquet": None}
    ),
    "cli-parquet-not-numeric": lambda: _cli(
        "fit",
        _parquet(),
        *_out(),
        modules=_fake_pyarrow(
            {"x": (np.ones(3), "double"), "name": (np.array(["a", "b", "c"], dtype=object), "string")}
        ),
    ),
    "cli-parquet-empty": lambda: [
        _cli("fit", _parquet(), *_out(), modules=_fake_pyarrow({})),
        _cli("fit", _parquet(), *_out(), modules=_fake_pyarrow({"x": (np.ones(0), "double")})),
    ],
    "cli-config-needs-yaml": lambda: [
        _cli("fit", _data(), "--config", _text("c.yaml", "n_init: 2\n"), *_out(), modules={"yaml": None}),
        _cli("select", _data(), "--config", _text("c.yaml", "n_init: 2\n"), modules={"yaml": None}),
    ],
    "cli-config-missing": lambda: _every_config_command(_path("missing.yaml")),
    "cli-config-not-yaml": lambda: _every_config_command(_text("bad.yaml", "n_init: [\n")),
    "cli-config-not-mapping": lambda: (
        _every_config_command(_text("list.yaml", "- 1\n- 2\n")) + _every_config_command(_text("scalar.yaml", "3\n"))
    ),
    "cli-config-unknown-key": lambda: _every_config_command(_text("typo.yaml", "n_init: 2\nn_compnents: 3\n")),
    "cli-config-data": lambda: [
        _cli("fit", "--config", _text("data.yaml", "data: 5\n"), *_out()),
        _cli("select", "-k", "1", "--config", _text("data.yaml", "data: [a.csv]\n")),
    ],
    "cli-option-not-number": lambda: [
        _cli("fit", _data(), "--config", _text("tol.yaml", "tol: abc\n"), *_out()),
        _cli("select", _data(), "-k", "1", "--config", _text("reg.yaml", "reg_covar: [1]\n")),
    ],
    "cli-device-unknown": lambda: [
        _cli("fit", _data(), "--device", "gpu", *_out()),
        _cli("predict", _model_file(), _data(), "--device", "gpu"),
        _cli("score", _model_file(), _data(), "--device", "cpu:x"),
        _cli("select", _data(), "-k", "1", "--device", "gpu"),
    ],
    "cli-output-suffix": lambda: [
        _cli("fit", _data(), *_out(), "--labels", _path("labels.xlsx")),
        _cli("fit", _data(), *_out(), "--responsibilities", _path("resp")),
        _cli("predict", _model_file(), _data(), "-o", _path("out.bin")),
        _cli("score", _model_file(), _data(), "--per-sample", _path("ll.parquet")),
    ],
    "cli-output-no-folder": lambda: [
        _cli("fit", _data(), "-q", "-o", _no_folder("m.pt")),
        _cli("fit", _data(), *_out(), "--labels", _no_folder("labels.npy")),
        _cli("predict", _model_file(), _data(), "-o", _no_folder("out.csv")),
        _cli("score", _model_file(), _data(), "--per-sample", _no_folder("ll.npy")),
        _cli("select", _data(), "-k", "1", "-o", _no_folder("m.pt")),
        _cli("plot", _model_file(), _data(), "-q", "-o", _no_folder("plot.png")),
    ],
    "cli-output-is-folder": lambda: [
        _cli("fit", _data(), "-q", "-o", _path("")),
        _cli("select", _data(), "-k", "1", "-o", _path("")),
        _cli("plot", _model_file(), _data(), "-q", "-o", _path("")),
    ],
    "cli-model-missing": lambda: [
        _cli("predict", _path("missing.pt"), _data()),
        _cli("score", _path("missing.pt"), _data()),
        _cli("plot", _path("missing.pt"), _data(), *_out("plot.png")),
    ],
    "cli-model-other-file": lambda: (
        _every_model_command(_text("data.csv", "a,b\n1,2\n3,4\n"))
        + [_cli("score", _data(), _data()), _cli("predict", _bytes("pickled.pkl", pickle.dumps([1, 2])), _data())]
    ),
    "cli-model-unreadable": lambda: _every_model_command(_bytes("truncated.pt", _model_file().read_bytes()[:100])),
    "cli-model-not-model": lambda: _every_model_command(_torch_file("tensor.pt", torch.ones(3, 2))),
    "cli-k-range": lambda: [_cli("select", _data(), "-k", "a-3"), _cli("select", _data(), "-k", "1-x")],
    "cli-k-value": lambda: [_cli("select", _data(), "-k", "x"), _cli("select", _data(), "-k", "2,four")],
    "cli-k-positive": lambda: [
        _cli("select", _data(), "-k", "0"),
        _cli("select", _data(), "-k", "5-2"),
        _cli("select", _data(), "--config", _text("k.yaml", "n_components: [0, 2]\n")),
    ],
    "cli-covariance-types": lambda: [
        _cli("select", _data(), "-k", "1", "--covariance-types", "full,banana"),
        _cli("select", _data(), "-k", "1", "--config", _text("types.yaml", "covariance_types: [diag, bad]\n")),
    ],
    "cli-criterion": lambda: _cli("select", _data(), "-k", "1", "--config", _text("crit.yaml", "criterion: xyz\n")),
    "cli-plot-needs-matplotlib": lambda: _cli(
        "plot", _model_file(), _data(), *_out("plot.png"), modules={"matplotlib": None, "matplotlib.pyplot": None}
    ),
    "cli-plot-dpi": lambda: _cli("plot", _model_file(), _data(), *_out("plot.png"), "--dpi", "0"),
    "cli-plot-columns": lambda: _cli("plot", _model_file(), _npy("X3.npy", X3), *_out("plot.png")),
    "cli-parameter": lambda: [
        _cli("fit", _data(), "--n-init", "0", *_out()),
        _cli("fit", _data(), "-k", "0", *_out()),
        _cli("fit", _data(), "--max-iter", "-1", *_out()),
    ],
    "cli-too-few-rows": lambda: _cli("fit", _data(), "-k", "100", *_out()),
    "cli-sample-weight-rows": lambda: [
        _cli("fit", _data(), "--sample-weight", _npy("w-short.npy", np.ones(3)), *_out()),
        _cli("score", _model_file(), _data(), "--sample-weight", _npy("w-short.npy", np.ones(3))),
        _cli("select", _data(), "-k", "1", "--sample-weight", _npy("w-short.npy", np.ones(3))),
    ],
    "cli-sample-weight-columns": lambda: _cli(
        "fit", _data(), "--sample-weight", _npy("w-wide.npy", np.ones((len(X), 2))), *_out()
    ),
    "cli-weight-column-no-names": lambda: [
        _cli("fit", _data(), "--weight-column", "w", *_out()),
        _cli("score", _model_file(), _text("plain.csv", "1,2\n3,4\n5,6\n"), "--weight-column", "w"),
    ],
    "cli-weight-column-unknown": lambda: [
        _cli("fit", _text("named.csv", "a,b,w\n1,2,1\n3,4,1\n5,6,2\n"), "--weight-column", "weight", *_out()),
        _cli("predict", _model_file(), _text("named.csv", "a,b,w\n1,2,1\n3,4,1\n5,6,2\n"), "--weight-column", "W"),
        _cli("select", _text("named.csv", "a,b,w\n1,2,1\n3,4,1\n5,6,2\n"), "-k", "1", "--weight-column", "c"),
    ],
    "cli-weight-column-only": lambda: _cli("fit", _text("w-only.csv", "w\n1\n2\n3\n"), "--weight-column", "w", *_out()),
    "cli-weight-column-iris": lambda: [
        _cli("fit", "--weight-column", "w", *_out()),
        _cli("select", "-k", "1", "--weight-column", "w"),
    ],
    "cli-weights-twice": lambda: [
        _cli("fit", _data(), "--weight-column", "w", "--sample-weight", _npy("w.npy", np.ones(len(X))), *_out()),
        _cli(
            "score", _model_file(), _data(), "--weight-column", "w", "--sample-weight", _npy("w.npy", np.ones(len(X)))
        ),
    ],
    "cli-features-mismatch": lambda: [
        _cli("predict", _model_file(), _npy("X3.npy", X3)),
        _cli("score", _model_file(), _npy("X3.npy", X3)),
    ],
    "cli-select-nothing-fitted": lambda: _cli("select", _npy("huge.npy", X * 1e200), "-k", "1,2"),
    "cli-select-k-above-rows": lambda: [
        _cli("select", _data(), "-k", "100"),
        _cli("select", _data(), "-k", "1-100"),
    ],
    "cli-checkpoint-other-fit": lambda: [
        _cli("fit", _data(), "-k", "3", "--checkpoint", _checkpoint(), *_out()),
        _cli("fit", _data(), "-k", "3", "--checkpoint", _cli_checkpoint(), *_out()),
    ],
    "cli-checkpoint-other-data": lambda: _cli(
        "fit", _npy("X-moved.npy", X + 1), "-k", "2", "--checkpoint", _cli_checkpoint(), *_out()
    ),
    "cli-checkpoint-unreadable": lambda: [
        _cli("fit", _data(), "--checkpoint", _bytes("garbage.ckpt", b"not a torch file"), *_out()),
        _cli("fit", _data(), "--checkpoint", _torch_file("code.ckpt", {"x": _Code()}), *_out()),
    ],
    "cli-checkpoint-not-checkpoint": lambda: _cli(
        "fit", _data(), "--checkpoint", _torch_file("tensor.ckpt", torch.ones(3)), *_out()
    ),
    "cli-checkpoint-folder": lambda: _cli("fit", _data(), "--checkpoint", _path(""), *_out()),
    "cli-checkpoint-no-folder": lambda: _cli("fit", _data(), "--checkpoint", _no_folder("fit.ckpt"), *_out()),
}


# ------------------------------------------------------------------------------------ the tests


def _raised(case: Callable[[], Any]) -> BaseException:
    try:
        result = case()
    except Exception as exc:  # compared with the documented type below
        return exc
    pytest.fail(f"nothing was raised (the case returned {result!r})")


def test_the_table_is_there_with_unique_ids():
    ids = [row.id for row in ROWS]
    assert len(ids) > 100
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for row in ROWS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", row.id), row.id
        assert row.where and row.bad_input, row.id
        assert re.fullmatch(r"exit [12]", row.error) or _exception_type(row.error), row


def test_every_row_has_a_case_and_every_case_a_row():
    documented, tested = {row.id for row in ROWS}, set(CASES)
    assert documented - tested == set(), "rows of docs/errors.md without a case in CASES"
    assert tested - documented == set(), "cases in CASES without a row in docs/errors.md"


def _exception_type(name: str) -> type | None:
    found = getattr(torchgmm, name, None) or getattr(builtins, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _is_documented_type(raised: BaseException, documented: type | None) -> bool:
    """``raised`` is of the documented class exactly, or of its scikit-learn-compatible form.

    With scikit-learn imported, ``NotFittedError`` is raised as a subclass of torchgmm's class and of
    scikit-learn's (:func:`torchgmm.exceptions.compatible`); any other subclass would be a wrong type.
    """
    if type(raised) is documented:
        return True
    return documented is torchgmm.NotFittedError and type(raised) is compatible(documented)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row: Row):
    case = CASES.get(row.id)
    if case is None:
        pytest.fail(f"no case for {row.id}")
    if row.error.startswith("exit "):
        results = case()
        for result in results if isinstance(results, list) else [results]:
            assert isinstance(result, CliResult), f"a command-line row's case must return CliResult, got {result!r}"
            lines = result.stderr.splitlines()
            assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
            assert result.code == int(row.error.split()[1]), f"exit status {result.code}: {lines[0]}"
            assert matches(row.message, lines[0]), f"stderr {lines[0]!r} does not match {row.message!r}"
        return
    error = _raised(case)
    for variant in getattr(error, "variants", [error]):
        assert _is_documented_type(variant, _exception_type(row.error)), f"raised {type(variant).__name__}: {variant}"
        assert matches(row.message, str(variant)), f"message {str(variant)!r} does not match {row.message!r}"


def test_the_message_pattern_is_strict():
    """Placeholders and ``…`` match anything; the rest must be there, all of it and nothing more."""
    documented = "X has <d> features, but GaussianMixture is expecting <n> features as input."
    assert matches(documented, "X has 2 features, but GaussianMixture is expecting 3 features as input.")
    assert matches(documented, "X has 2\n  features, but GaussianMixture is expecting 3 features as input.")
    assert not matches(documented, "X has 2 features, but GaussianMixture is expecting 3 features.")
    assert not matches(documented, "Y has 2 features, but GaussianMixture is expecting 3 features as input.")
    assert not matches(documented, "X has 2 features, but GaussianMixture is expecting 3 features as input. More")
    assert matches("cannot read <path>: …", "cannot read a.npy: anything (at all)")
    assert not matches("'tol' must be >= 0, got <value>.", "'tol' must be >= 1, got -1.")
