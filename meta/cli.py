"""``python -m meta``: train, evaluate and snapshot few-shot meta-learners, reproduce the paper
and report on a reproduction.

::

    python -m meta train --algorithm maml --dataset omniglot --data-root DIR --ways 20 --shots 1 \\
        --iterations 40000 --seed 0 --out runs/maml20w1s [--config FILE] [any hyperparameter]
    python -m meta evaluate RUN_DIR [RUN_DIR ...] [--tasks 600] [--weights final|best|PATH] \\
        [--freeze conv1,conv2 | --nil | --ablation freezing] [--seeds-from RUN_DIR ...]
    python -m meta snapshot RUN_DIR --tasks 8 --out SNAP_DIR [--steps S] [--split test]
    python -m meta reproduce --preset quick|omniglot|paper|tiny|rl|paper-rl|tiny-rl --out DIR \\
        [--jobs N | --scheduler tcp://HOST:PORT] \\
        [--data-root [NAME=]DIR] [--dry-run] [--force]
    python -m meta report DIR
    python -m meta train --algorithm maml-trpo|anil-trpo --env 2d-navigation|halfcheetah-dir|halfcheetah-vel \\
        --out runs/maml_nav [--iterations N] [--meta-batch-size T] [--horizon H] [any RL hyperparameter]
    python -m meta evaluate RL_RUN_DIR [--tasks 40] [--steps 3] [--freeze fc1,fc2]
    python -m meta snapshot RL_RUN_DIR --out SNAP_DIR [--tasks 8]
    torchrun --nproc-per-node W -m meta train|evaluate|snapshot ...   # W ranks share the work

``train`` on a folder that already holds a run resumes it (the stored ``config.json`` is the
base, so ``python -m meta train --out RUN_DIR`` alone continues it). Errors in the input are
reported as ``meta <command>: error: ...`` with exit status 2 (3 when loading would run code: a
checkpoint that carries code, or a folder naming a model factory nobody trusted; ``--model``
trusts one). Under ``torchrun`` the ranks share each meta-batch (training) or the test tasks
(evaluation, snapshots) and rank 0 alone writes and prints (:mod:`meta.run.distributed`).

The only command line of :mod:`meta`. Imports: every room of :mod:`meta` and :mod:`repsim.io`;
the reproduction and the report (:mod:`meta.study`) inside their commands, so that the other
commands do not load matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from meta.run.config import RunConfig, add_config_arguments, config_from_args, from_mapping
from meta.run.cpu import configure_cpu
from meta.run.distributed import first_rank, one_process, torchrun_ranks
from meta.run.evaluate import ABLATIONS, DEFAULT_TASKS, evaluate_runs
from meta.run.folder import RunFolder
from meta.run.results import format_result
from meta.run.rl_config import (
    RL_ALGORITHMS,
    RLConfig,
    add_rl_arguments,
    is_rl_run,
    rl_config_from_args,
    rl_from_mapping,
)
from meta.run.rl_evaluate import evaluate_rl_run, format_rl_result
from meta.run.rl_snapshot import snapshot_rl_run
from meta.run.rl_train import train_rl
from meta.run.snapshot_writer import snapshot_run
from meta.run.train import train
from meta.study.presets import STUDY_PRESETS, get_study_preset
from meta.validation import check_int
from repsim.devices import check_device
from repsim.io import write_json
from repsim.tensor_files import UnsafeCheckpointError
from repsim.weights import UntrustedFactoryError


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options of ``evaluate`` and ``snapshot`` (test-time settings and where things are)."""
    parser.add_argument(
        "--split", default="test", choices=("test", "val", "train"), help="split of the tasks (default: test)"
    )
    parser.add_argument(
        "--weights",
        default="final",
        help="final, best, an iteration kept with --save-at, or a weights file (default: final)",
    )
    parser.add_argument(
        "--freeze",
        default=None,
        help="layers frozen in the test-time inner loop, e.g. conv1,conv2 or conv1-3 or none"
        " (default: those frozen at training)",
    )
    parser.add_argument("--steps", type=int, default=None, help="test-time inner steps (default: the run's)")
    parser.add_argument(
        "--inner-lr", type=float, default=None, help="test-time inner learning rate (default: the run's)"
    )
    parser.add_argument(
        "--later-lr",
        type=float,
        default=None,
        help="meta-RL: size of the inner steps after the first (default: the run's)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, 0: torch's choice (default: 1)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PACKAGE.MODULE:CALLABLE",
        help="trust this model factory if the run's config.json names it (the toolkit's own are trusted;"
        " a folder from elsewhere that names another is refused unless you name it here; repeatable)",
    )
    parser.add_argument("--data-root", default=None, help="where the data set's files are now (default: the run's)")
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache folder")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m meta",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    tr = commands.add_parser(
        "train",
        help="meta-train (or resume) a run",
        description="Meta-train a conv4 few-shot learner; reruns on the same --out resume.",
    )
    tr.add_argument("--out", required=True, help="run folder (created; an existing run there is resumed)")
    tr.add_argument("--config", default=None, help="JSON or TOML file of settings (the command line overrides it)")
    add_config_arguments(tr, extra_choices={"algorithm": RL_ALGORITHMS})
    add_rl_arguments(tr)

    ev = commands.add_parser(
        "evaluate",
        help="test accuracy with a 95%% confidence interval",
        description="Mean test accuracy over fixed tasks, +- 1.96 * std / sqrt(tasks) (as in the MAML"
        " and ANIL papers' code); with several runs also the mean and std over seeds.",
    )
    ev.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run folder(s), e.g. one per seed")
    ev.add_argument("--seeds-from", nargs="+", default=[], metavar="RUN_DIR", help="more run folders (other seeds)")
    ev.add_argument(
        "--tasks",
        type=int,
        default=None,
        help=f"fixed test tasks (default: {DEFAULT_TASKS}; RL runs: the run's test_tasks)",
    )
    ev.add_argument(
        "--nil", action="store_true", help="NIL-testing: cosine-similarity classifier on penultimate features"
    )
    ev.add_argument(
        "--ablation",
        choices=ABLATIONS,
        default=None,
        help="freezing: none, conv1, conv1-2, conv1-3, conv1-4 frozen at test time (Table 1)",
    )
    ev.add_argument(
        "--json",
        default=None,
        help="where to write the summary over several runs (default: the first run's eval folder)",
    )
    ev.add_argument(
        "--episodes",
        default=None,
        metavar="FILE",
        help="test on the tasks of this CSV (header task,role,label,path; docs/formats.md) instead of"
        " the split's fixed tasks",
    )
    _add_common(ev)

    sn = commands.add_parser(
        "snapshot",
        help="write an adaptation snapshot (weights before/after each inner step)",
        description="Weights before and after each test-time inner step on fixed evaluation tasks,"
        " with the tasks' inputs (docs/formats.md).",
    )
    sn.add_argument("run_dir", metavar="RUN_DIR", help="training run folder")
    sn.add_argument("--out", required=True, help="snapshot folder (created)")
    sn.add_argument("--tasks", type=int, default=8, help="the first this many fixed tasks (default: 8)")
    sn.add_argument("--task-ids", default=None, help="fixed task numbers instead, e.g. 0,5,9")
    sn.add_argument("--overwrite", action="store_true", help="replace a snapshot already in --out")
    sn.add_argument(
        "--queries",
        type=int,
        default=None,
        help="query examples per class of the snapshot's tasks (default: the run's test_queries; more give"
        " the similarity analyses more datapoints, with the same classes and support sets)",
    )
    _add_common(sn)

    rp = commands.add_parser(
        "reproduce",
        help="the whole study of the paper: train, evaluate, snapshot, similarity, report",
        description="Train MAML, ANIL and the body-training baselines, evaluate them (freezing ablation, NIL),"
        " measure CCA/CKA before vs after adaptation and across models, and write the paper's tables,"
        " figures and report.html into --out. Finished stages are skipped on a rerun.",
        epilog="presets (--dry-run prints one's plan, budget and notes):\n"
        + "\n".join(f"  {name:<9} {p.summary or p.description}" for name, p in STUDY_PRESETS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("--preset", required=True, metavar="NAME", help=f"the study: {', '.join(STUDY_PRESETS)} (below)")
    rp.add_argument("--out", required=True, help="output folder (created; a rerun continues it)")
    rp.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="parallel worker processes, one torch thread each (default: the number of CPU cores)",
    )
    rp.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="run the jobs on the workers of this Dask scheduler (pip install 'feature-reuse[cluster]'; Slurm or"
        " PBS through dask-jobqueue); --out and the data folders must be on a file system every worker shares",
    )
    rp.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="[DATASET=]DIR",
        help="folder of a data set's files, e.g. the Omniglot zips (repeat as omniglot=DIR"
        " miniimagenet=DIR for several)",
    )
    rp.add_argument("--cache-dir", default=None, help="decoded-image cache folder")
    rp.add_argument("--device", default=None, help="torch device (default: the preset's)")
    rp.add_argument("--dry-run", action="store_true", help="print the plan (stages, runs, settings) and stop")
    rp.add_argument("--force", action="store_true", help="delete another preset's results found in --out")
    rp.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    rr = commands.add_parser(
        "report",
        help="the paper's tables, figures and report.html of a reproduction folder, and the verdicts",
        description="Write the Markdown tables, figures and self-contained report.html of a reproduction"
        " folder from its CSVs, and print the verdicts on the paper's findings.",
    )
    rr.add_argument("out_dir", metavar="DIR", help="output folder of `python -m meta reproduce`")
    return parser


def _train(args: argparse.Namespace) -> int:
    folder = RunFolder(Path(args.out))
    if getattr(args, "algorithm", None) in RL_ALGORITHMS or is_rl_run(folder):
        one_process("meta-RL training")
        return _train_rl(args, folder)
    base = from_mapping(folder.read_config()["config"]) if folder.config.is_file() else RunConfig()
    config = config_from_args(args, base)
    with torchrun_ranks(check_device(config.device)) as distributed:
        result = train(config, args.out, distributed=distributed)
    if not first_rank():
        return 0
    best = result.best
    best_text = (
        ""
        if best is None
        else (f"; best validation accuracy {100 * best['accuracy']:.2f}% at iteration {best['iteration']}")
    )
    print(
        f"{result.run_dir}: iteration {result.iterations} (started at {result.resumed_from});"
        f" final weights {result.final}{best_text}"
    )
    return 0


def _train_rl(args: argparse.Namespace, folder: RunFolder) -> int:
    """``train`` of a meta-RL run (``--algorithm maml-trpo|anil-trpo``, or a folder holding one)."""
    base = rl_from_mapping(folder.read_config()["config"]) if folder.config.is_file() else RLConfig()
    result = train_rl(rl_config_from_args(args, base), args.out)
    print(
        f"{result.run_dir}: meta-iteration {result.iterations} (started at {result.resumed_from});"
        f" final policy {result.final}"
    )
    return 0


#: The keyword arguments of the meta-RL ``evaluate`` and ``snapshot`` and the options they come from.
RL_TEST_OPTIONS = {
    "weights": "weights",
    "freeze": "freeze",
    "steps": "steps",
    "lr": "inner_lr",
    "later_lr": "later_lr",
    "trusted": "model",
    "progress": "progress",
}


def _rl_kwargs(args: argparse.Namespace) -> dict:
    """The options of ``evaluate`` and ``snapshot`` that apply to a meta-RL run (the split, the
    device and the data options do not: refused by name when given)."""
    given = [f"--{n.replace('_', '-')}" for n in ("data_root", "cache_dir") if getattr(args, n) is not None]
    given += ["--split"] * (args.split != "test") + ["--device"] * (args.device != "cpu")
    given += [f"--{n}" for n in ("nil", "ablation") if getattr(args, n, None)]
    if given:
        raise ValueError(f"{', '.join(given)} do not apply to a meta-RL run")
    configure_cpu(threads=check_int("--threads", args.threads, minimum=0) or None)
    return {keyword: getattr(args, option) for keyword, option in RL_TEST_OPTIONS.items()}


def _common_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments ``evaluate`` and ``snapshot`` share, checked (the device, the thread
    count) before any work."""
    check_device(args.device)
    configure_cpu(threads=check_int("--threads", args.threads, minimum=0) or None)
    return {
        "split": args.split,
        "weights": args.weights,
        "freeze": args.freeze,
        "steps": args.steps,
        "lr": args.inner_lr,
        "device": args.device,
        "data_root": args.data_root,
        "cache_dir": args.cache_dir,
        "trusted": args.model,
        "progress": args.progress,
    }


def _evaluate(args: argparse.Namespace) -> int:
    runs = [*args.run_dirs, *args.seeds_from]
    if any(is_rl_run(RunFolder(Path(run))) for run in runs):
        one_process("meta-RL evaluation")
        for run in runs:
            result = evaluate_rl_run(run, tasks=args.tasks, **_rl_kwargs(args))
            print(format_rl_result(result))
            print(f"written: {result['json']}")
        return 0
    if args.episodes is not None and (args.tasks is not None or args.split != "test"):
        raise ValueError("--episodes gives the tasks itself; drop --tasks and --split")
    tasks = DEFAULT_TASKS if args.tasks is None else args.tasks
    common = _common_kwargs(args)
    with torchrun_ranks(args.device) as distributed:
        result = evaluate_runs(
            runs,
            tasks=tasks,
            nil=args.nil,
            ablation=args.ablation,
            episodes_file=args.episodes,
            distributed=distributed,
            **common,
        )
    if not first_rank():
        return 0
    if len(runs) == 1:
        single = result.runs[0]
        print(format_result(single))
        print(f"written: {single.json}")
        return 0
    path = Path(args.json) if args.json else RunFolder(Path(runs[0])).eval_dir / f"{result.name}_{len(runs)}runs.json"
    write_json(path, result.as_json())
    print(format_result(result))
    print(f"written: {', '.join(r.json for r in result.runs)}, {path}")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    ids = None if args.task_ids is None else _task_ids(args.task_ids)
    if is_rl_run(RunFolder(Path(args.run_dir))):
        one_process("a meta-RL snapshot")
        kwargs = _rl_kwargs(args)
        manifest = snapshot_rl_run(
            args.run_dir, args.out, tasks=args.tasks, task_ids=ids, overwrite=args.overwrite, **kwargs
        )
        returns = [(t["return_before"], t["return_after"]) for t in manifest["tasks"]]
        print(
            f"{args.out}: {len(returns)} tasks, {manifest['inner_steps']} inner steps adapting"
            f" {','.join(manifest['adapted_layers'])}; return {sum(b for b, _ in returns) / len(returns):.2f} before,"
            f" {sum(a for _, a in returns) / len(returns):.2f} after"
        )
        return 0
    common = _common_kwargs(args)
    with torchrun_ranks(args.device) as distributed:
        manifest = snapshot_run(
            args.run_dir,
            args.out,
            tasks=args.tasks,
            task_ids=ids,
            queries=args.queries,
            overwrite=args.overwrite,
            distributed=distributed,
            **common,
        )
    if not first_rank():
        return 0
    accuracy = [(t["query_accuracy_before"], t["query_accuracy_after"]) for t in manifest["tasks"]]
    mean_before = sum(a for a, _ in accuracy) / len(accuracy)
    mean_after = sum(b for _, b in accuracy) / len(accuracy)
    print(
        f"{args.out}: {len(accuracy)} tasks, {manifest['inner_steps']} inner steps adapting"
        f" {','.join(manifest['adapted_layers'])}; query accuracy {100 * mean_before:.1f}% before,"
        f" {100 * mean_after:.1f}% after"
    )
    return 0


def _task_ids(text: str) -> list[int]:
    """``--task-ids 0,5,9`` as integers (``ValueError`` naming the option otherwise)."""
    items = [i.strip() for i in text.split(",") if i.strip()]
    if not items or not all(i.isdigit() for i in items):
        raise ValueError(f"--task-ids expects task numbers separated by commas, e.g. 0,5,9; got {text!r}")
    return [int(i) for i in items]


def _reproduce(args: argparse.Namespace) -> int:
    from meta.study.folder import parse_data_roots
    from meta.study.pipeline import reproduce

    preset = get_study_preset(args.preset)
    reproduce(
        preset,
        args.out,
        jobs=args.jobs,
        data_roots=parse_data_roots(args.data_root, preset),
        cache_dir=args.cache_dir,
        device=None if args.device is None else str(check_device(args.device, here=False)),
        force=args.force,
        dry_run=args.dry_run,
        progress=args.progress,
        scheduler=args.scheduler,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    """``meta report DIR``: write the Markdown tables, figures and report.html, print the verdicts; returns 0."""
    from meta.study.findings import findings_text
    from meta.study.report import load_preset, studied_findings, write_paper_outputs
    from meta.study.schema import load_tables

    report = write_paper_outputs(args.out_dir)
    print(findings_text(studied_findings(load_tables(args.out_dir), load_preset(args.out_dir))))
    print(f"wrote {report}")
    return 0


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "snapshot": _snapshot,
    "reproduce": _reproduce,
    "report": _report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m meta``; returns the exit status: 0, 2 for bad input (``meta
    <command>: error: ...``), 3 when loading would run code from a file or from a factory that a
    folder names and nobody trusted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UnsafeCheckpointError, UntrustedFactoryError) as err:
        print(f"meta {args.command}: error: {err}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as err:
        print(f"meta {args.command}: error: {_error_text(err)}", file=sys.stderr)
        return 2


def _error_text(err: Exception) -> str:
    """The message of an error; an OS error without a file name says it is one."""
    if isinstance(err, OSError) and not err.filename:
        return f"input/output error: {err.strerror or err}"
    return str(err)
