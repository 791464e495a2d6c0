"""``python -m repsim`` (or ``repsim``): compare two models layer by layer, or report on an
adaptation snapshot.

``compare --a RUN_DIR --b RUN_DIR`` takes each model's spec from its run's ``config.json``
(:mod:`repsim.runs`); a bare weights file needs ``--model``. ``--inputs`` is a file, a folder of
images or an input set such as ``glyphs:test`` (:mod:`repsim.input_sets`). Under ``torchrun``
(``torchrun --nproc-per-node 2 -m repsim compare ...``) the ranks share the forward batches
and rank 0 alone writes (:mod:`repsim.distributed`).

Exit status: 0 on success; 2 for bad input (unknown layer or measure, bad model spec, keys that
do not match, unreadable or damaged files; the message starts with ``repsim: error:``); 3 when
loading would run code: a checkpoint that carries code, or a folder whose metadata names a model
factory that is not on the allowlist (:mod:`repsim.weights`; ``--model`` trusts one).

Imports: :mod:`repsim.compare`, :mod:`repsim.devices`, :mod:`repsim.distributed`,
:mod:`repsim.input_sets`, :mod:`repsim.io`, :mod:`repsim.measures.inputs`, :mod:`repsim.policies`,
:mod:`repsim.runs`, :mod:`repsim.snapshot_report`, :mod:`repsim.tables`, :mod:`repsim.tensor_files`,
:mod:`repsim.weights`, and :mod:`repsim.plots` inside the commands that draw; never :mod:`meta`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from repsim.compare import DEFAULT_MEMORY_LIMIT, PAIRS, compare_models
from repsim.devices import check_device
from repsim.distributed import launched_ranks, rank_and_world, torchrun_group
from repsim.input_sets import InputRequest, load_comparison_inputs
from repsim.io import atomic_write_text, check_output_folder, staged_folder, write_csv, write_json
from repsim.measures.inputs import CONV_POLICIES, SEQ_POLICIES
from repsim.policies import CONV_FALLBACKS, SEQ_FALLBACKS
from repsim.runs import input_image_shape, locate_model, model_spec
from repsim.snapshot_report import INPUT_CHOICES, report_snapshot
from repsim.tables import summary_markdown
from repsim.tensor_files import UnsafeCheckpointError
from repsim.weights import UntrustedFactoryError, load_model, parse_json_object, parse_rename

EXIT_BAD_INPUT = 2
EXIT_UNSAFE = 3

_CONV_HELP = (
    "how 4-D conv activations (N, C, H, W) become (datapoints, neurons): 'channels' (default:"
    " channels are neurons and every position of every input a datapoint, N*H*W of them, the"
    " paper's choice, which gives CCA enough datapoints from few images), 'flatten' (N, C*H*W) or"
    " 'mean' (N, C)"
)
_LAYERS_HELP = (
    "comma-separated module paths or globs of model A (repeatable). A glob matches the model's named layers"
    " first (its 'layers' attribute, else its top-level children), and only otherwise every module path:"
    " on conv4 'conv*,head' is conv1, conv2, conv3, conv4 and head (not conv1.conv); on a BERT"
    " 'embeddings,encoder.layer.?' is the embeddings and each block"
)
_INPUTS_HELP = (
    "the inputs: an .npz with an array 'x' (or arrays of keyword inputs such as input_ids and attention_mask),"
    " a torch.save'd tensor, a folder of PNG/JPEG images (resized to the model's input size, scaled by 1/255),"
    " or NAME:SPLIT of an installed input set (glyphs:test, omniglot:test with --data-root, miniimagenet:test,"
    " synthetic:test): --n-inputs images drawn with --seed"
)
_FACTORY = "PACKAGE.MODULE:FACTORY"


def _comma_list(values: Sequence[str] | None) -> list[str]:
    """Flatten repeated, comma-separated option values into a list of non-empty names."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def _none_or(value: str) -> str | None:
    """``--conv-fallback none`` is ``None`` (refuse)."""
    return None if value == "none" else value


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
    add(
        "--no-progress",
        action="store_true",
        help="hide progress (shown as bars on a terminal, one line per stage in a log)",
    )


def _model_options(add: Callable[..., Any]) -> None:
    """Which two models: run folders or weights files, and the model specs of bare files."""
    where = "a training run folder of meta (its config.json names the model) or a weights file (safetensors/torch.save)"
    add("--a", required=True, type=Path, metavar="RUN_DIR|CKPT", help=f"model A: {where}")
    add("--b", required=True, type=Path, metavar="RUN_DIR|CKPT", help="model B, likewise")
    add("--model", default=None, metavar=_FACTORY, help="factory of model A (and B); default: the run's")
    add(
        "--model-kwargs",
        default=None,
        metavar="JSON",
        help="keyword arguments of model A's factory; default: the run's",
    )
    add("--model-b", default=None, metavar=_FACTORY, help="factory of model B (default: B's run's, else model A's)")
    add(
        "--model-b-kwargs",
        default=None,
        metavar="JSON",
        help="keyword arguments of model B (default: B's run's, else those of model A when --model-b is not given)",
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


def _input_options(add: Callable[..., Any]) -> None:
    """Which inputs, and how many."""
    add("--inputs", required=True, metavar="FILE|FOLDER|NAME:SPLIT", help=_INPUTS_HELP)
    add(
        "--n-inputs",
        type=int,
        default=None,
        metavar="N",
        help="how many inputs to draw (default: 500 of an input set, every image of a folder, all of a file)",
    )
    add(
        "--seed", type=int, default=0, help="seed of the draw: sorted(numpy default_rng(seed).choice(M, N)) (default 0)"
    )
    add(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="side of the model's square input images (default: from the run's config.json)",
    )
    add(
        "--data-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="where an input set's files are (omniglot: the official zips; default $OMNIGLOT_DIR)",
    )


def _compare_parser(sub: Any) -> None:
    """The ``compare`` subcommand's options."""
    cmp = sub.add_parser(
        "compare",
        help="compare two models layer by layer",
        description="Compare two models (two runs of meta, or two checkpoints of any architecture) layer by layer"
        " on the same inputs; write similarity.csv, settings.json, heatmaps and a per-layer plot. Under torchrun"
        " the ranks share the forward batches and rank 0 writes the same files.",
    )
    add = cmp.add_argument
    _model_options(add)
    _input_options(add)
    add("--layers", required=True, action="append", metavar="NAMES", help=_LAYERS_HELP)
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
        "--seq",
        choices=SEQ_POLICIES,
        default=None,
        help="how 3-D sequence activations (N, T, D) become (datapoints, neurons): 'tokens' (every token a datapoint),"
        " 'mean' (mean over tokens), 'first' (the first token) or 'flatten' (N, T*D); padding (attention_mask = 0)"
        " is left out of tokens and mean. Required when a layer outputs sequences",
    )
    add(
        "--conv-fallback",
        choices=(*CONV_FALLBACKS, "none"),
        default="mean",
        help="policy for the pairs whose datapoints differ under --conv channels (maps of different sizes, a map"
        " against a 2-D layer), recorded in the conv column (default mean; 'none': refuse such pairs)",
    )
    add(
        "--seq-fallback",
        choices=(*SEQ_FALLBACKS, "none"),
        default="mean",
        help="likewise for --seq tokens against a layer of another length or one row per input (default mean)",
    )
    add(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="inputs per forward pass (default: all in one batch when the model's batch norm uses batch"
        " statistics or there are at most 1024 inputs, else 256); under torchrun each rank needs a batch",
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


def run_compare(args: argparse.Namespace) -> Callable[[Path], list[Path]] | None:
    """The ``compare`` command: computes, and returns what writes the outputs into a folder
    (``None`` on a rank other than 0 under torchrun, which writes nothing)."""
    files_a, files_b = locate_model(args.a), locate_model(args.b)
    spec_a = model_spec(args.model, args.model_kwargs, files_a, None, "a")
    spec_b = model_spec(args.model_b, args.model_b_kwargs, files_b, spec_a if args.model_b is None else None, "b")
    remap = {"strip_prefixes": args.strip_prefix, "rename": parse_rename(args.rename)}
    world = launched_ranks()
    device = check_device(args.device)
    with torchrun_group(device) if world > 1 else nullcontext(device) as device:
        rank = rank_and_world()[0] if world > 1 else 0
        if rank:
            warnings.simplefilter("ignore")  # rank 0 says it once
        models = [
            load_model(s.factory, s.kwargs, f.weights, source=s.source, kwargs_from=s.kwargs_from, **remap)
            for s, f in ((spec_a, files_a), (spec_b, files_b))
        ]
        request = InputRequest(
            args.n_inputs,
            args.seed,
            input_image_shape(files_a, spec_a, args.image_size),
            args.data_root,
            progress=not args.no_progress and not rank,
        )
        loaded = load_comparison_inputs(args.inputs, request)
        df = compare_models(
            *models,
            loaded.inputs,
            layers_a=_comma_list(args.layers),
            layers_b=_comma_list(args.layers_b) or None,
            measures=args.measures,
            pairs=args.pairs,
            conv=args.conv,
            seq=args.seq,
            conv_fallback=_none_or(args.conv_fallback),
            seq_fallback=_none_or(args.seq_fallback),
            batch_size=args.batch_size,
            device=device,
            train_mode=args.train_mode,
            memory_limit=args.memory_limit * 2**30,
            measure_kwargs=_measure_kwargs(args.measure_kwargs),
            progress=not args.no_progress and not rank,
            distributed=world > 1,
        )
    if rank:
        return None
    settings = {
        "command": "compare",
        "model_a": spec_a.record(files_a),
        "model_b": spec_b.record(files_b),
        "inputs": args.inputs,
        "input_source": loaded.source,
        "n_inputs": int(loaded.source["n"]),
        "layers": _comma_list(args.layers),
        "layers_b": _comma_list(args.layers_b) or None,
        "pairs": args.pairs,
        "conv": args.conv,
        "seq": args.seq,
        "conv_fallback": _none_or(args.conv_fallback),
        "seq_fallback": _none_or(args.seq_fallback),
        "batch_size": args.batch_size,
        "train_mode": args.train_mode,
        "device": args.device,
        "ranks": world,
        **remap,
        "versions": _versions(),
    }

    def write(out: Path) -> list[Path]:
        from repsim.plots import compare_figures

        names = (files_a.label, files_b.label)
        return [
            write_csv(out / "similarity.csv", df),
            write_json(out / "settings.json", settings),
            *compare_figures(df, out, names=names),
        ]

    return write


def run_report(args: argparse.Namespace) -> Callable[[Path], list[Path]]:
    """The ``report`` command: computes, and returns what writes the outputs into a folder."""
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

    def write(out: Path) -> list[Path]:
        from repsim.plots import snapshot_figures

        return [
            write_csv(out / "per_task.csv", per_task),
            write_csv(out / "summary.csv", summary),
            write_json(out / "summary.json", summary),
            atomic_write_text(out / "summary.md", markdown),
            write_json(out / "settings.json", settings),
            *snapshot_figures(summary, out),
        ]

    return write


def _error_text(err: Exception) -> str:
    """The message of an error; an OS error without a file name says it is one."""
    if isinstance(err, OSError) and not err.filename:
        return f"input/output error: {err.strerror or err}"
    return str(err)


def _rank_note() -> str:
    """``" (rank R)"`` on a torchrun rank other than 0 (whose errors rank 0 usually shares)."""
    rank = os.environ.get("RANK", "0") if launched_ranks() > 1 else "0"
    return "" if rank == "0" else f" (rank {rank})"


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Print a warning as one ``repsim: warning:`` line (no source line)."""
    print(f"repsim: warning: {message}", file=sys.stderr)


Command = Callable[[argparse.Namespace], "Callable[[Path], list[Path]] | None"]
COMMANDS: dict[str, Command] = {"compare": run_compare, "report": run_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring). The outputs
    are computed first, then appear in ``--out`` together (:func:`repsim.io.staged_folder`)."""
    args = build_parser().parse_args(argv)
    written: list[Path] = []
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            check_output_folder(args.out)
            write = COMMANDS[args.command](args)
            if write is not None:
                with staged_folder(args.out) as stage:
                    written = [args.out / p.relative_to(stage) for p in write(stage)]
    except (UnsafeCheckpointError, UntrustedFactoryError) as err:
        print(f"repsim: error{_rank_note()}: {err}", file=sys.stderr)
        return EXIT_UNSAFE
    except (ValueError, OSError) as err:
        print(f"repsim: error{_rank_note()}: {_error_text(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(f"wrote {path}")
    return 0
