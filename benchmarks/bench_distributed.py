"""Seconds per MAML training iteration with one ``torchrun`` rank against two, and the seconds
per iteration the ranks spend in collectives (``comm_seconds``).

Setting: MAML, Omniglot 5-way 1-shot with the paper's settings (meta-batch 32, 1 inner step of
0.4, 1 query per class, the ``hybrid`` path: 8 chunks of 4 tasks, 4 per rank with two ranks),
one intra-op thread per rank (``OMP_NUM_THREADS=1``, ``--threads 1``). Data: the real Omniglot
from ``../shared/data/omniglot`` (the two official zips) when it is there, else the built-in
``glyphs`` set (the output says which; the tasks' shapes are the same).

How: each run is a real ``torchrun --standalone --nproc-per-node W -m meta train`` (gloo over
the loopback interface) of ``--iterations`` iterations into a fresh folder, ``--log-every 1``,
so ``metrics.csv`` holds one row per iteration: ``seconds`` (rank 0's wall time of the
iteration) and ``comm_seconds`` (its time in collectives, waiting for the slower rank
included). The first ``--warmup`` iterations of each run are dropped. The runs of the rank
counts alternate, ``--repeats`` times (the order flipped every other repeat, so a load change
on the shared machine hits both alike). Reported: per rank count the median over every kept
iteration of every repeat, the speed-up (ratio of those medians), each repeat's own ratio and
the ratio of the fastest repeats (the ones least disturbed by other work on a shared machine),
and the median ``comm_seconds``. The load average is printed before and after, and after each
run on stderr: two ranks need both cores, so any other busy process costs them more than one
rank.

    python benchmarks/bench_distributed.py                      # 3.5 minutes on 2 cores (6 if busy)
    python benchmarks/bench_distributed.py --iterations 60 --repeats 5
    python benchmarks/bench_distributed.py --dataset glyphs --iterations 3 --repeats 1 --warmup 1   # smoke
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import load_line, markdown_table, median, ratio

REPO = Path(__file__).resolve().parents[1]
#: Where the shared Omniglot archives are looked for by default (``../shared/data/omniglot``).
DEFAULT_OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
OMNIGLOT_ZIPS = ("images_background.zip", "images_evaluation.zip")
#: One intra-op thread per rank; gloo over the loopback interface.
RANK_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
TARGET_SPEEDUP = 1.7


def choose_data(dataset: str, root: Path) -> tuple[str, str | None, str]:
    """(data set, ``--data-root`` or None, a sentence saying which and why) for ``--dataset``
    ``auto`` (Omniglot where its archives are, else glyphs), ``omniglot`` or ``glyphs``."""
    present = all((root / name).is_file() for name in OMNIGLOT_ZIPS)
    if dataset == "omniglot" and not present:
        raise SystemExit(f"error: the Omniglot archives {', '.join(OMNIGLOT_ZIPS)} are not in {root}")
    if dataset == "glyphs" or not present:
        why = "asked for" if dataset == "glyphs" else f"Omniglot's archives are not in {root}"
        return "glyphs", None, f"data: the built-in glyphs set ({why}); Omniglot-shaped 28x28 tasks"
    return "omniglot", str(root), f"data: the real Omniglot, MAML split, from {root}"


def train_arguments(dataset: str, data_root: str | None, iterations: int) -> list[str]:
    """``meta train``'s arguments after ``--out``: MAML 5-way 1-shot, the paper's settings, a
    metrics row per iteration, one validation of 2 tasks at the end, no checkpoint before it."""
    args = ["--algorithm", "maml", "--dataset", dataset, "--ways", "5", "--shots", "1"]
    args += ["--meta-batch-size", "32", "--iterations", str(iterations), "--threads", "1", "--log-every", "1"]
    args += ["--val-every", str(iterations), "--val-tasks", "2", "--checkpoint-every", str(iterations)]
    args += ["--no-progress"]
    return args + (["--data-root", data_root] if data_root else [])


def torchrun_command(ranks: int, out: Path, train_args: list[str]) -> list[str]:
    """A standalone (single-machine) ``torchrun`` of ``ranks`` ranks running ``meta train``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    return [*launcher, "-m", "meta", "train", "--out", str(out), *train_args]


def free_loopback() -> bool:
    """Whether a TCP socket can be bound on the loopback address (torchrun's rendezvous needs it)."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


def run_once(ranks: int, out: Path, train_args: list[str]) -> list[dict[str, float]]:
    """Launch one training; return its per-iteration ``seconds`` and ``comm_seconds`` rows."""
    env = {**os.environ, **RANK_ENV, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        torchrun_command(ranks, out, train_args), cwd=REPO, env=env, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"error: torchrun with {ranks} rank(s) failed (exit code {done.returncode})")
    return iteration_rows(out / "metrics.csv")


def iteration_rows(metrics_csv: Path) -> list[dict[str, float]]:
    """The training rows of a run's ``metrics.csv`` (one per iteration with ``--log-every 1``)."""
    with open(metrics_csv, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["split"] == "train"]
    return [{k: float(row[k]) for k in ("iteration", "seconds", "comm_seconds")} for row in rows]


def measure(rank_counts: list[int], repeats: int, warmup: int, train_args: list[str]) -> dict[int, list[list[dict]]]:
    """Per rank count, per repeat, the kept iteration rows; runs alternate between rank counts."""
    kept: dict[int, list[list[dict]]] = {w: [] for w in rank_counts}
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        for repeat in range(repeats):
            order = rank_counts if repeat % 2 == 0 else rank_counts[::-1]
            for ranks in order:
                rows = run_once(ranks, Path(tmp) / f"r{repeat}_w{ranks}", train_args)
                kept[ranks].append(rows[warmup:])
                print(
                    f"  repeat {repeat + 1}/{repeats}, {ranks} rank(s): {median(seconds(rows[warmup:])):.3f} s/iter"
                    f" ({load_line()})",
                    file=sys.stderr,
                )
    return kept


def seconds(rows: list[dict], column: str = "seconds") -> list[float]:
    return [row[column] for row in rows]


def summarise(kept: dict[int, list[list[dict]]]) -> list[dict]:
    """Per rank count: median s/iter over all kept rows, per-repeat medians, median comm s/iter."""
    out = []
    for ranks, repeats in kept.items():
        pooled = [row for rows in repeats for row in rows]
        out.append(
            {
                "ranks": ranks,
                "s_per_iter": median(seconds(pooled)),
                "per_repeat": [median(seconds(rows)) for rows in repeats],
                "comm_s_per_iter": median(seconds(pooled, "comm_seconds")),
                "iterations": len(pooled),
            }
        )
    return out


def report(summary: list[dict], data_line: str, command: str, loads: tuple[str, str]) -> None:
    """Print the table, the speed-up of each rank count over the first, and the target."""
    base = summary[0]
    rows = []
    for s in summary:
        rows.append(
            [
                s["ranks"],
                f"{s['s_per_iter']:.3f}",
                ", ".join(f"{v:.3f}" for v in s["per_repeat"]),
                f"{s['comm_s_per_iter']:.4f}",
                f"{100 * ratio(s['comm_s_per_iter'], s['s_per_iter']):.1f}%",
                f"{ratio(base['s_per_iter'], s['s_per_iter']):.2f}x",
                s["iterations"],
            ]
        )
    print(data_line)
    print(f"command (W = ranks; OMP_NUM_THREADS=1, GLOO_SOCKET_IFNAME=lo): {command}")
    print(f"load before: {loads[0]}; after: {loads[1]}")
    print()
    header = ["ranks", "median s/iter", "per-repeat medians", "comm s/iter", "comm share", "speed-up", "iterations"]
    print(markdown_table(header, rows))
    print()
    for s in summary[1:]:
        paired = [ratio(a, b) for a, b in zip(base["per_repeat"], s["per_repeat"])]
        speedup = ratio(base["s_per_iter"], s["s_per_iter"])
        verdict = "met" if speedup >= TARGET_SPEEDUP else "not met"
        print(
            f"speed-up {s['ranks']} ranks vs {base['ranks']}: {speedup:.2f}x (per repeat: "
            f"{', '.join(f'{p:.2f}x' for p in paired)}); target >= {TARGET_SPEEDUP}x: {verdict}"
        )
        print(f"communication with {s['ranks']} ranks: {s['comm_s_per_iter']:.4f} s per iteration (median)")
        least = ratio(min(base["per_repeat"]), min(s["per_repeat"]))
        print(f"least disturbed repeat of each (fastest per-repeat medians): {least:.2f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=40, help="training iterations per run (default 40)")
    p.add_argument("--repeats", type=int, default=3, help="runs per rank count, alternating (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="first iterations of each run not counted (default 3)")
    p.add_argument(
        "--dataset", choices=("auto", "omniglot", "glyphs"), default="auto", help="default auto: Omniglot if present"
    )
    p.add_argument("--data-root", type=Path, default=DEFAULT_OMNIGLOT, help=f"Omniglot's folder ({DEFAULT_OMNIGLOT})")
    p.add_argument("--ranks", default="1,2", help="rank counts to compare, the first the reference (default 1,2)")
    args = p.parse_args(argv)
    if args.iterations <= args.warmup:
        p.error("--iterations must exceed --warmup")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not free_loopback():
        raise SystemExit("error: cannot bind a socket on 127.0.0.1; torchrun needs the loopback interface")
    dataset, data_root, data_line = choose_data(args.dataset, args.data_root)
    train_args = train_arguments(dataset, data_root, args.iterations)
    rank_counts = [int(w) for w in args.ranks.split(",")]
    command = shlex.join(["torchrun", "--standalone", "--nproc-per-node", "W", "-m", "meta", "train", "--out", "DIR"])
    command += " " + shlex.join(train_args)
    before = load_line()
    kept = measure(rank_counts, args.repeats, args.warmup, train_args)
    report(summarise(kept), data_line, command, (before, load_line()))


if __name__ == "__main__":
    main()
