"""``python -m repsim`` (or ``repsim``): compare two checkpoints, or report on an adaptation
snapshot, layer by layer.

Exit status: 0 on success; 2 for bad input (unknown layer or measure, bad model spec, keys that
do not match, unreadable or damaged files; the message starts with ``repsim: error:``); 3 when
loading would run code: a checkpoint that carries code, or a snapshot whose manifest names a model
factory that is not on the allowlist (:mod:`repsim.weights`; ``--model`` trusts one).

Imports: :mod:`repsim.compare`, :mod:`repsim.io`, :mod:`repsim.measures.inputs`,
:mod:`repsim.snapshot_report`, :mod:`repsim.tables`, :mod:`repsim.weights`, and
:mod:`repsim.plots` inside the commands that draw; never :mod:`meta`.
"""

from __future__ import annotations

import argparse
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from repsim.compare import DEFAULT_MEMORY_LIMIT, PAIRS, compare_models
from repsim.devices import check_device
from repsim.io import atomic_write_text, staged_folder, write_csv, write_json
from repsim.measures.inputs import CONV_POLICIES
from repsim.snapshot_report import INPUT_CHOICES, report_snapshot
from repsim.tables import summary_markdown
from repsim.tensor_files import UnsafeCheckpointError
from repsim.weights import (
    UntrustedFactoryError,
    load_inputs,
    load_model,
    parse_json_object,
    parse_rename,
)

EXIT_BAD_INPUT = 2
EXIT_UNSAFE = 3

_CONV_HELP = (
    "how 4-D conv activations (N, C, H, W) become (datapoints, neurons): 'channels' (default:"
    " channels are neurons and every position of every input a datapoint, N*H*W of them, the"
    " paper's choice, which gives CCA enough datapoints from few images), 'flatten' (N, C*H*W) or"
    " 'mean' (N, C). Cross-layer pairs with different spatial sizes need 'mean' or 'flatten'"
)


def _comma_list(values: Sequence[str] | None) -> list[str]:
    """Flatten repeated, comma-separated option values into a list of non-empty names."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def _common_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by both commands."""
    add = parser.add_argument
    add("--out", required=True, type=Path, help="output folder (created if needed)")
    add("--measures", default="cca,cka", help="comma-separated measure names (default: cca,cka)")
    add("--conv", choices=CONV_POLICIES, default="channels", help=_CONV_HELP)
    add(
        "--measure-kwargs",
        default=None,
        metavar="JSON",
        help='extra arguments per measure, e.g. \'{"svcca": {"keep": 0.99}}\'',
    )
    add("--no-progress", action="store_true", help="hide progress bars")


def _compare_parser(sub: Any) -> None:
    """The ``compare`` subcommand's options."""
    cmp = sub.add_parser(
        "compare",
        help="compare two checkpoints layer by layer",
        description="Compare two checkpoints (of one architecture, or two with --model-b) layer by"
        " layer on the same inputs; write similarity.csv, heatmaps and a per-layer plot.",
    )
    add = cmp.add_argument
    factory = "PACKAGE.MODULE:FACTORY"
    add("--model", required=True, metavar=factory, help="factory of model A (and B)")
    add("--model-kwargs", default=None, metavar="JSON", help="keyword arguments of --model")
    add("--model-b", default=None, metavar=factory, help="factory of model B (default --model)")
    add(
        "--model-b-kwargs",
        default=None,
        metavar="JSON",
        help="keyword arguments of model B (default: those of --model if --model-b is not given, else {})",
    )
    add("--a", required=True, type=Path, metavar="CKPT_A", help="checkpoint of model A (safetensors/torch.save)")
    add("--b", required=True, type=Path, metavar="CKPT_B", help="checkpoint of model B")
    add("--inputs", required=True, type=Path, help=".npz with an array 'x', or a torch.save'd tensor")
    add(
        "--layers",
        required=True,
        action="append",
        metavar="NAMES",
        help="comma-separated module paths or globs of model A (repeatable)",
    )
    add(
        "--layers-b",
        action="append",
        metavar="NAMES",
        help="layers of model B, matched to --layers in order (default: same names)",
    )
    add(
        "--pairs",
        choices=PAIRS,
        default="all",
        help="'all' (default): every layer against every layer, for the heatmaps; 'diagonal': matched only",
    )
    add(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="inputs per forward pass (default: all in one batch when the model's batch norm uses batch"
        " statistics or there are at most 1024 inputs, else 256)",
    )
    add("--device", default="cpu", help="torch device for the forward passes and measures (default cpu)")
    add(
        "--train-mode",
        action="store_true",
        help="forward in train mode: batch norm normalises with the batch's statistics and dropout is on"
        " (running statistics are not changed). Default: eval mode, batch norm uses running statistics"
        " (batch norm without running statistics uses the batch's in both modes)",
    )
    add(
        "--strip-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="remove this key prefix from both checkpoints, e.g. 'module.' (repeatable)",
    )
    add(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="replace the key prefix OLD by NEW in both checkpoints, after stripping (repeatable)",
    )
    add(
        "--memory-limit",
        type=float,
        default=DEFAULT_MEMORY_LIMIT / 2**30,
        metavar="GIB",
        help="GiB of float64 activations allowed for measures computed in memory (default 4)",
    )
    _common_options(cmp)


def _report_parser(sub: Any) -> None:
    """The ``report`` subcommand's options."""
    rep = sub.add_parser(
        "report",
        help="report on an adaptation snapshot",
        description="For each task of an adaptation snapshot, similarity of each layer before"
        " adaptation vs after each inner step; per-task CSV, summary CSV/Markdown with 95% t-intervals"
        " over tasks, and figures.",
    )
    add = rep.add_argument
    add("snapshot", type=Path, metavar="SNAPSHOT_DIR")
    add("--inputs", choices=INPUT_CHOICES, default="query", help="which task inputs (default query)")
    add("--layers", action="append", metavar="NAMES", help="layers (default: the manifest's)")
    add("--confidence", type=float, default=0.95, help="confidence of the t-interval (default 0.95)")
    add(
        "--model",
        action="append",
        default=[],
        metavar="PACKAGE.MODULE:CALLABLE",
        help="trust this model factory if the manifest names it (needed for factories that no installed"
        " package declares in the 'repsim.model_factories' entry points; repeatable)",
    )
    _common_options(rep)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m repsim``."""
    parser = argparse.ArgumentParser(prog="repsim", description="Layer-by-layer representational similarity.")
    sub = parser.add_subparsers(dest="command", required=True)
    _compare_parser(sub)
    _report_parser(sub)
    return parser


def _measure_kwargs(text: str | None) -> dict[str, dict[str, Any]]:
    """Parse ``--measure-kwargs``: a JSON object of measure name -> object of arguments."""
    value = parse_json_object(text, "--measure-kwargs")
    if not all(isinstance(v, dict) for v in value.values()):
        raise ValueError('--measure-kwargs must be a JSON object of objects, e.g. {"svcca": {"keep": 0.99}}')
    return value


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__}


def run_compare(args: argparse.Namespace, out: Path) -> list[Path]:
    """The ``compare`` command, writing into ``out``; returns the written files."""
    from repsim.plots import compare_figures

    kwargs_a = parse_json_object(args.model_kwargs, "--model-kwargs")
    factory_b = args.model_b or args.model
    if args.model_b_kwargs is not None:
        kwargs_b = parse_json_object(args.model_b_kwargs, "--model-b-kwargs")
    else:
        kwargs_b = {} if args.model_b else kwargs_a
    remap = {"strip_prefixes": args.strip_prefix, "rename": parse_rename(args.rename)}
    model_a = load_model(args.model, kwargs_a, args.a, source=None, **remap)  # named on the command line
    model_b = load_model(factory_b, kwargs_b, args.b, source=None, **remap)
    inputs = load_inputs(args.inputs)
    layers_b = _comma_list(args.layers_b) or None
    df = compare_models(
        model_a,
        model_b,
        inputs,
        layers_a=_comma_list(args.layers),
        layers_b=layers_b,
        measures=args.measures,
        pairs=args.pairs,
        conv=args.conv,
        batch_size=args.batch_size,
        device=check_device(args.device),
        train_mode=args.train_mode,
        memory_limit=args.memory_limit * 2**30,
        measure_kwargs=_measure_kwargs(args.measure_kwargs),
        progress=not args.no_progress,
    )
    if args.conv == "channels" and df["reason"].str.contains("same datapoints").any():
        print(
            "repsim: note: conv layers of different spatial sizes have different datapoints under --conv"
            " channels and are n/a; use --conv mean or flatten for cross-layer heatmaps",
            file=sys.stderr,
        )
    settings = {
        "command": "compare",
        "model_a": {"factory": args.model, "kwargs": kwargs_a, "checkpoint": str(args.a)},
        "model_b": {"factory": factory_b, "kwargs": kwargs_b, "checkpoint": str(args.b)},
        "inputs": str(args.inputs),
        "n_inputs": len(inputs),
        "layers": _comma_list(args.layers),
        "layers_b": layers_b,
        "pairs": args.pairs,
        "conv": args.conv,
        "batch_size": args.batch_size,
        "train_mode": args.train_mode,
        "device": args.device,
        **remap,
        "versions": _versions(),
    }
    return [
        write_csv(out / "similarity.csv", df),
        write_json(out / "settings.json", settings),
        *compare_figures(df, out),
    ]


def run_report(args: argparse.Namespace, out: Path) -> list[Path]:
    """The ``report`` command, writing into ``out``; returns the written files."""
    from repsim.plots import snapshot_figures

    per_task, summary = report_snapshot(
        args.snapshot,
        measures=args.measures,
        inputs=args.inputs,
        layers=_comma_list(args.layers) or None,
        conv=args.conv,
        confidence=args.confidence,
        measure_kwargs=_measure_kwargs(args.measure_kwargs),
        trusted=args.model,
        progress=not args.no_progress,
    )
    settings = {
        "command": "report",
        "snapshot": str(args.snapshot),
        "measures": args.measures,
        "inputs": args.inputs,
        "conv": args.conv,
        "confidence": args.confidence,
        "versions": _versions(),
    }
    title = f"Adaptation snapshot {args.snapshot.name}"
    markdown = summary_markdown(summary, confidence=args.confidence, title=title)
    return [
        write_csv(out / "per_task.csv", per_task),
        write_csv(out / "summary.csv", summary),
        write_json(out / "summary.json", summary),
        atomic_write_text(out / "summary.md", markdown),
        write_json(out / "settings.json", settings),
        *snapshot_figures(summary, out),
    ]


def _error_text(err: Exception) -> str:
    """The message of an error; an OS error without a file name says it is one."""
    if isinstance(err, OSError) and not err.filename:
        return f"input/output error: {err.strerror or err}"
    return str(err)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Print a warning as one ``repsim: warning:`` line (no source line)."""
    print(f"repsim: warning: {message}", file=sys.stderr)


COMMANDS: dict[str, Callable[[argparse.Namespace, Path], list[Path]]] = {"compare": run_compare, "report": run_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring). The outputs
    appear in ``--out`` together, when the command succeeds (:func:`repsim.io.staged_folder`)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            with staged_folder(args.out) as stage:
                written = [args.out / p.relative_to(stage) for p in COMMANDS[args.command](args, stage)]
    except (UnsafeCheckpointError, UntrustedFactoryError) as err:
        print(f"repsim: error: {err}", file=sys.stderr)
        return EXIT_UNSAFE
    except (ValueError, OSError) as err:
        print(f"repsim: error: {_error_text(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(f"wrote {path}")
    return 0
