"""Options of the commands: the argument parser, ``--config`` YAML files, and turning options into an estimator.

Owns: every command's options and their help, the defaults of ``fit`` and ``select`` (also the keys a config
file may hold), merging defaults, config file and command line (in that order), checking option values the
parser cannot (device, numbers, ``-k`` ranges) and building the :class:`~torchgmm.GaussianMixture` they describe.
The choices offered (covariance types, initialisations, dtypes, matmul precisions) are the library's own lists.
PyYAML, an optional extra, is imported only when a config file is read. Must not: read data, fit, write or print.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from torchgmm._math import MATMUL_PRECISIONS
from torchgmm._validation import _FLOAT_DTYPES
from torchgmm._version import __version__
from torchgmm.cli.errors import UsageError
from torchgmm.cli.readers import DATA_SUFFIXES
from torchgmm.covariance import COVARIANCE_TYPES
from torchgmm.estimator import STRATEGIES, GaussianMixture
from torchgmm.init import INIT_METHODS

__all__ = [
    "CRITERIA",
    "FIT_DEFAULTS",
    "SELECT_DEFAULTS",
    "Options",
    "build_parser",
    "estimator",
    "merge_options",
    "parse_range",
]

DTYPES = [name for name in _FLOAT_DTYPES if isinstance(name, str)]
CRITERIA = ("bic", "aic", "held-out")  # GaussianMixtureSelection's

# Options of fit and select, with their defaults: also the keys a --config file may hold. configs/default.yaml
# writes them out (a test keeps the two equal), and the parser's help shows them.
FIT_DEFAULTS: dict[str, Any] = {
    "n_components": 3,
    "covariance_type": "full",
    "n_init": 4,
    "max_iter": 100,
    "tol": 1e-3,
    "reg_covar": 1e-6,
    "init_params": "kmeans",
    "seed": 0,
    "device": "auto",
    "dtype": None,
    "batch_size": None,
    "matmul_precision": None,
    "checkpoint": None,
    "checkpoint_interval": 10,
    "strategy": "restarts",
    "race_survivors": None,
    "race_first_cut": 2,
    "anneal_beta_start": None,
    "anneal_steps": 4,
    "anneal_iter": 10,
    "split_merge_candidates": 8,
    "split_merge_rounds": 10,
    "init_whiten": False,
}
SELECT_DEFAULTS: dict[str, Any] = {
    **FIT_DEFAULTS,
    "n_components": "1-8",
    "covariance_types": "full,diag",
    "criterion": "bic",
    "grow": False,
}
for _name in ("covariance_type", "checkpoint", "checkpoint_interval"):  # one fit's options
    del SELECT_DEFAULTS[_name]


class Options(dict):
    """Merged options (name: value); ``defaulted`` names those that neither the config file nor the command line set."""

    defaulted: frozenset[str] = frozenset()


# ------------------------------------------------------------------------------------ merging


def _read_config(path: str, valid: dict[str, Any]) -> dict[str, Any]:
    try:
        import yaml  # an optional extra: imported only when --config is given
    except ImportError:
        raise UsageError("--config needs PyYAML: pip install pyyaml") from None
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UsageError(f"config {path} must be a mapping of option: value, got a {type(config).__name__}.")
    allowed = set(valid) | {"data"}
    for key in config:
        if key not in allowed:
            raise UsageError(f"unknown key {key!r} in config {path}; valid keys: {', '.join(sorted(allowed))}.")
    if "data" in config and not isinstance(config["data"], str):
        raise UsageError(f"config {path}: data must be a file name, got {config['data']!r}.")
    return config


def merge_options(args: argparse.Namespace, defaults: dict[str, Any]) -> Options:
    """Defaults, then the config file, then options given on the command line (``args.data`` from the config)."""
    config = _read_config(args.config, defaults) if args.config else {}
    if args.data is None and "data" in config:
        args.data = config["data"]
    given = {k: v for k, v in config.items() if k != "data"}
    given.update({k: v for k, v in vars(args).items() if k in defaults and v is not None})
    options = Options(defaults, **given)
    options.defaulted = frozenset(defaults) - frozenset(given)
    return options


# ------------------------------------------------------------------------------------ values


def device(name: str | None) -> str | None:
    """The device to fit on: None (the estimator's default) or a name torch accepts; ``auto`` prefers CUDA."""
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else None
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"invalid device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    return name


def _number(options: dict[str, Any], name: str) -> float:
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{name} must be a number, got {value!r}.")
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {value!r}.") from None


def parse_range(text: Any) -> list[int]:
    """The component counts of ``select -k``: ``3``, ``1-8``, ``2,4,8`` or a list, sorted and without repeats."""
    if isinstance(text, int) and not isinstance(text, bool):
        return [text]
    if isinstance(text, list):
        values = text
    else:
        values = []
        for part in str(text).split(","):
            if "-" in part:
                low, _, high = part.partition("-")
                if not (low.strip().isdigit() and high.strip().isdigit()):
                    raise UsageError(f"invalid range {part!r} for -k: use e.g. 1-8 or 2,4,8.")
                values.extend(range(int(low), int(high) + 1))
            elif part.strip().isdigit():
                values.append(int(part))
            else:
                raise UsageError(f"invalid value {part!r} for -k: use e.g. 1-8 or 2,4,8.")
    if not values or any(not isinstance(v, int) or v < 1 for v in values):
        raise UsageError(f"-k needs positive component counts, got {text!r}.")
    return sorted(set(values))


def estimator(options: dict[str, Any], n_components: int, covariance_type: str) -> GaussianMixture:
    """The (unfitted) estimator the merged ``options`` describe."""
    return GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        n_init=options["n_init"],
        max_iter=options["max_iter"],
        tol=_number(options, "tol"),
        reg_covar=_number(options, "reg_covar"),
        init_params=options["init_params"],
        random_state=options["seed"],
        device=device(options["device"]),
        dtype=options["dtype"],
        batch_size=options["batch_size"],
        matmul_precision=options["matmul_precision"],
        checkpoint_path=options.get("checkpoint"),
        checkpoint_interval=options.get("checkpoint_interval", 10),
        strategy=options["strategy"],
        race_survivors=options["race_survivors"],
        race_first_cut=options["race_first_cut"],
        anneal_beta_start=options["anneal_beta_start"],
        anneal_steps=options["anneal_steps"],
        anneal_iter=options["anneal_iter"],
        split_merge_candidates=options["split_merge_candidates"],
        split_merge_rounds=options["split_merge_rounds"],
        init_whiten=options["init_whiten"],
    )


# ------------------------------------------------------------------------------------ parser


def _weight_options(parser: argparse.ArgumentParser, sample_weight: bool = True) -> None:
    """``--sample-weight FILE`` and ``--weight-column NAME`` (for ``predict``, only the column to leave out)."""
    if sample_weight:
        parser.add_argument(
            "--sample-weight",
            metavar="FILE",
            help="one non-negative weight per row of the data, a column (.npy, .pt, .parquet, .csv, .tsv, .txt)",
        )
    parser.add_argument(
        "--weight-column",
        metavar="NAME",
        help="the data's column (by its header or Parquet name) holding each row's weight, not a feature"
        if sample_weight
        else "the data's column of row weights (from 'fit --weight-column'), left out of the features",
    )


def _fit_options(parser: argparse.ArgumentParser, select: bool = False) -> None:
    defaults = SELECT_DEFAULTS if select else FIT_DEFAULTS
    parser.add_argument(
        "data", nargs="?", help=f"data file ({', '.join(DATA_SUFFIXES)}); default: the shipped iris data"
    )
    parser.add_argument("--config", help="YAML file of options (keys as the long options, with _); flags override it")
    if select:
        parser.add_argument(
            "-k",
            "--n-components",
            help=f"component counts to try, e.g. 1-8 or 2,4,8 (default {defaults['n_components']})",
        )
        parser.add_argument(
            "--covariance-types", help=f"comma-separated types to try (default {defaults['covariance_types']})"
        )
        parser.add_argument(
            "--criterion",
            choices=list(CRITERIA),
            help="choose by BIC, AIC or held-out (the log-likelihood of 20 %% of the rows set aside) "
            f"(default {defaults['criterion']})",
        )
        parser.add_argument(
            "--grow",
            action="store_true",
            default=None,
            help="start each K from the K-1 fit with a component split (faster; default: a fresh start per K)",
        )
    else:
        parser.add_argument("-k", "--n-components", type=int, help=f"components (default {defaults['n_components']})")
        parser.add_argument(
            "--covariance-type", choices=list(COVARIANCE_TYPES), help=f"(default {defaults['covariance_type']})"
        )
    parser.add_argument("--n-init", type=int, help=f"restarts, all run at once (default {defaults['n_init']})")
    parser.add_argument("--max-iter", type=int, help=f"most EM iterations (default {defaults['max_iter']})")
    parser.add_argument(
        "--tol", type=float, help=f"convergence threshold on the lower bound (default {defaults['tol']})"
    )
    parser.add_argument(
        "--reg-covar", type=float, help=f"added to covariance diagonals (default {defaults['reg_covar']})"
    )
    parser.add_argument("--init-params", choices=list(INIT_METHODS), help=f"(default {defaults['init_params']})")
    parser.add_argument(
        "--init-whiten",
        action="store_true",
        default=None,
        help="seed k-means on whitened rows (robust to the features' units; default: scikit-learn's seeding)",
    )
    parser.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        help="restarts: run every restart to the end; race: stop the lagging ones; anneal: temper the first "
        "iterations; split-merge: then move components; auto: anneal a third of --n-init, then move "
        f"(default {defaults['strategy']})",
    )
    parser.add_argument(
        "--race-survivors", type=int, help="restarts that finish a race (default: an eighth of --n-init)"
    )
    parser.add_argument(
        "--race-first-cut",
        type=int,
        help=f"iterations before a race's first cut (default {defaults['race_first_cut']})",
    )
    parser.add_argument(
        "--anneal-beta-start",
        type=float,
        help="inverse temperature annealing starts from, in (0, 1] (default: spread over the restarts; a --config "
        "may list one per restart)",
    )
    parser.add_argument(
        "--anneal-steps", type=int, help=f"levels from the start to 1 (default {defaults['anneal_steps']})"
    )
    parser.add_argument(
        "--anneal-iter", type=int, help=f"most iterations per annealing level (default {defaults['anneal_iter']})"
    )
    parser.add_argument(
        "--split-merge-candidates",
        type=int,
        help=f"moves tried per split-and-merge round (default {defaults['split_merge_candidates']})",
    )
    parser.add_argument(
        "--split-merge-rounds",
        type=int,
        help=f"most split-and-merge rounds (default {defaults['split_merge_rounds']})",
    )
    parser.add_argument("--seed", type=int, help=f"random seed (default {defaults['seed']})")
    parser.add_argument(
        "--device", help=f"auto, cpu, cuda or cuda:N (default {defaults['device']}: cuda when available)"
    )
    parser.add_argument("--dtype", choices=DTYPES, help="(default: the data's)")
    parser.add_argument("--batch-size", type=int, help="rows per chunk (default: chosen from the shapes)")
    parser.add_argument(
        "--matmul-precision", choices=list(MATMUL_PRECISIONS), help="float32 products; high = TF32 on CUDA"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary" + (" table" if select else "")
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="after a DegenerateComponentWarning, list the repairs of the kept restart",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``torchgmm``; ``args.command`` names the command to run."""
    parser = argparse.ArgumentParser(
        prog="torchgmm",
        description="Fit Gaussian mixture models with PyTorch, on CPU or CUDA.",
        epilog="Run 'torchgmm COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"torchgmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit a mixture, print a summary, write a model file")
    _fit_options(fit)
    fit.add_argument(
        "-o", "--model", default="torchgmm-model.pt", help="model file to write (default torchgmm-model.pt)"
    )
    fit.add_argument(
        "--checkpoint",
        help="save the EM state to this file as it runs and on Ctrl-C; if it exists, resume from it "
        "(deleted once the fit finishes)",
    )
    fit.add_argument(
        "--checkpoint-interval",
        type=int,
        help=f"EM iterations between checkpoints (default {FIT_DEFAULTS['checkpoint_interval']})",
    )
    _weight_options(fit)
    fit.add_argument("--labels", help="also write each row's component (.npy, .csv or .tsv)")
    fit.add_argument("--responsibilities", help="also write each row's responsibilities (.npy, .csv or .tsv)")

    predict = sub.add_parser("predict", help="components (or responsibilities) of new rows under a saved model")
    predict.add_argument("model", help="model file written by 'torchgmm fit'")
    predict.add_argument("data", help=f"data file ({', '.join(DATA_SUFFIXES)})")
    predict.add_argument("-o", "--output", help="write to this .npy/.csv/.tsv file instead of stdout")
    predict.add_argument("--proba", action="store_true", help="responsibilities instead of labels")
    _weight_options(predict, sample_weight=False)
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: where it was fitted)")
    predict.add_argument("-q", "--quiet", action="store_true")

    score = sub.add_parser("score", help="log-likelihood, BIC and AIC of new rows under a saved model")
    score.add_argument("model", help="model file written by 'torchgmm fit'")
    score.add_argument("data", help=f"data file ({', '.join(DATA_SUFFIXES)})")
    score.add_argument("--per-sample", help="also write each row's log-likelihood (.npy, .csv or .tsv)")
    _weight_options(score)
    score.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: where it was fitted)")
    score.add_argument("-q", "--quiet", action="store_true", help="print nothing (with --per-sample: only write it)")

    select = sub.add_parser("select", help="fit a range of K and covariance types, compare BIC/AIC")
    _fit_options(select, select=True)
    select.add_argument("-o", "--model", help="write the best model to this file")
    _weight_options(select)

    plot = sub.add_parser("plot", help="draw a saved model on 2-D data (or two principal components) to a PNG")
    plot.add_argument("model", help="model file written by 'torchgmm fit'")
    plot.add_argument("data", nargs="?", help="data file (default: the shipped iris data)")
    plot.add_argument("-o", "--output", default="torchgmm-plot.png", help="PNG to write (default torchgmm-plot.png)")
    plot.add_argument("--dpi", type=int, default=100, help="(default 100)")
    plot.add_argument("-q", "--quiet", action="store_true")
    return parser
