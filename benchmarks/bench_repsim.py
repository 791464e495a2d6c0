"""Speed, memory and accuracy of repsim's similarity measures, side by side, in one run.

For each measure and shape it times (median of interleaved repeats, one intra-op thread):

- repsim's measure (float64), with the route its result reports (CCA: ``cholesky`` or ``qr``);
- the bound: the three float64 products X'X, Y'Y, X'Y of the same shapes, which any exact
  CCA or CKA must at least compute, as fast as this machine computes them (numpy, BLAS ``syrk``
  for the Gram matrices); beside it, labelled ``torch products``, the same products as torch
  matrix products (this script's bound before, which flattered every ratio);
- the peers of ``benchmarks/repsim_peers.py``: the three-line numpy CKA a user writes by hand,
  google/svcca's ``get_cca_similarity`` algorithm, and every installed PyPI peer (cca-zoo,
  deep-reps, ckatorch, pytorch-cka, torch-cka), each optional: missing ones are listed, not fatal;

and, in a fresh child process per (measure, shape, implementation), the peak resident memory
that the computation adds above the inputs (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``; tracemalloc cannot see torch's allocations). Streaming CKA and CCA
(``repsim.measures.StreamingCKA``, ``StreamingCCA``) run over ``(n, d)`` data that never exists in memory at once.

Run ``python benchmarks/bench_repsim.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # peers on numpy/scipy get one BLAS thread too

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the peers module beside this script

from repsim_peers import PEERS, Maker, Thunk, peer_maker

from repsim.measures import StreamingCCA, StreamingCKA, linear_cka, mean_cca, pwcca, svcca

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

DEFAULT_SIZES = "5000x512,2000x2048,50000x64"
QUICK_SIZES = "2000x128,500x256"
IN_MEMORY_MEASURES = ("mean_cca", "svcca", "pwcca", "linear_cka", "debiased_cka")
SEED = 2020


# ---------------------------------------------------------------------------------- data
def activations(n: int, d: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two related post-ReLU-like float64 representations ``(n, d)`` with positive means."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    x = np.maximum(z + 0.5, 0.0)
    y = np.maximum(z @ mix + 0.7 * rng.standard_normal((n, d)) + 0.5, 0.0)
    return x, y


def stream_batches(n: int, d: int, batch: int, seed: int = SEED) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows of an ``(n, d)`` pair of representations, generated batch by batch."""
    mix = np.random.default_rng(seed).standard_normal((d, d)) / np.sqrt(d)
    for index, start in enumerate(range(0, n, batch)):
        rng = np.random.default_rng([seed, index])
        z = rng.standard_normal((min(batch, n - start), d))
        yield np.maximum(z + 0.5, 0.0), np.maximum(z @ mix + 0.7 * rng.standard_normal(z.shape) + 0.5, 0.0)


def products_bound(x: np.ndarray, y: np.ndarray) -> Thunk:
    """The bound of any exact CCA/CKA: X'X, Y'Y and X'Y in float64, as fast as this machine
    computes them (numpy: BLAS ``syrk`` for the Gram matrices, half a general product's work)."""

    def run() -> float:
        x.T @ x, y.T @ y, x.T @ y
        return float("nan")

    return run


def torch_products(x: np.ndarray, y: np.ndarray) -> Thunk:
    """The same three products as general torch matrix products (the bound this script used
    before: it flattered every ratio, since ``X'X`` as ``gemm`` does twice ``syrk``'s work)."""
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def run() -> float:
        tx.T @ tx, ty.T @ ty, tx.T @ ty
        return float("nan")

    return run


BOUNDS: dict[str, Maker] = {"bound": products_bound, "torch products": torch_products}


# ---------------------------------------------------------------------------------- ours
def ours(measure: str) -> Maker:
    """repsim's implementation of ``measure`` as a :data:`Maker`."""
    if measure in ("linear_cka", "debiased_cka"):
        debiased = measure == "debiased_cka"
        return lambda x, y: lambda: linear_cka(x, y, debiased=debiased)
    function = {"mean_cca": mean_cca, "svcca": svcca, "pwcca": pwcca}[measure]
    return lambda x, y: lambda: function(x, y)


def streaming(measure: str) -> Callable[[Callable[[], Iterator]], float]:
    """Exact streaming CKA / mean CCA (``repsim.measures``) over the batches of a factory."""
    cls = StreamingCKA if measure == "stream_linear_cka" else StreamingCCA

    def run(batches: Callable[[], Iterator]) -> float:
        acc = cls()
        for xb, yb in batches():
            acc.update(xb, yb)
        return acc.result()

    return run


# ---------------------------------------------------------------------------------- timing
@dataclass
class Row:
    measure: str
    shape: str
    impl: str
    times: list[float] = field(default_factory=list)
    value: float = float("nan")
    status: str = ""
    peak_mb: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def time_interleaved(thunks: dict[str, Thunk], rows: dict[str, Row], repeats: int, slow_s: float) -> None:
    """Warm up each thunk (its value is kept), then time ``repeats`` rounds, one call of each
    thunk per round, so that machine noise hits every implementation alike. A thunk whose
    warm-up took over ``slow_s`` is timed by its warm-up alone."""
    active = {}
    for key, thunk in thunks.items():
        start = time.perf_counter()
        try:
            rows[key].value = thunk()
        except Exception as err:
            rows[key].status = f"error: {type(err).__name__}: {str(err)[:60]}"
            continue
        elapsed = time.perf_counter() - start
        if elapsed > slow_s:
            rows[key].times = [elapsed]
            rows[key].note = (rows[key].note + " timed once").strip()
        else:
            active[key] = thunk
    for _ in range(repeats):
        for key, thunk in active.items():
            start = time.perf_counter()
            thunk()
            rows[key].times.append(time.perf_counter() - start)


# ---------------------------------------------------------------------------------- memory
def _rss_mb(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def child_memory(spec: dict) -> dict:
    """Run one implementation in this fresh process and report the peak RSS that it adds.

    A warm-up on a small problem first pays the libraries' one-off initialisation; the parent
    sets ``MALLOC_MMAP_THRESHOLD_`` so that large blocks go back to the system when freed.
    """
    n, d = spec["n"], spec["d"]
    if spec["measure"].startswith("stream_"):
        run = streaming(spec["measure"])
        small = min(n, 2 * spec["batch"])
        warm_up = lambda: run(lambda: stream_batches(small, d, spec["batch"]))  # noqa: E731
        thunk: Thunk = lambda: run(lambda: stream_batches(n, d, spec["batch"]))  # noqa: E731
    else:
        impl = spec["impl"]
        maker = BOUNDS.get(impl) or (ours(spec["measure"]) if impl == "repsim" else peer_maker(impl, spec["measure"]))
        warm_up = maker(*activations(min(n, 4 * d), d, seed=1))
        thunk = maker(*activations(n, d))
    with contextlib.suppress(Exception):  # a peer that fails is reported by the timing run
        warm_up()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    base = _rss_mb("VmRSS")
    thunk()
    return {"base_mb": base, "peak_mb": _rss_mb("VmHWM")}


def measure_memory(spec: dict) -> float | None:
    """Peak MB added by one implementation, measured in a fresh child process."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=3600,
        env=env,
    )
    if proc.returncode != 0:
        return None
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["peak_mb"] - report["base_mb"]


# ---------------------------------------------------------------------------------- cases
def parse_shape(text: str) -> tuple[int, int]:
    n, d = text.lower().split("x")
    return int(float(n)), int(d)


def available_peers(measure: str, n: int, max_gram_n: int) -> tuple[dict[str, Maker], list[Row]]:
    """Makers of the installed peers for ``measure``; rows for those skipped or missing."""
    makers, skipped = {}, []
    for peer in (p for p in PEERS if p.measure == measure):
        if peer.gram and n > max_gram_n:
            gb = 8 * n * n / 1e9
            skipped.append(Row(measure, "", peer.name, status=f"skipped: n x n Gram ({gb:.0f} GB each)"))
            continue
        try:
            makers[peer.name] = peer.loader()
        except ImportError as err:
            skipped.append(Row(measure, "", peer.name, status=f"missing: {err}"))
    return makers, skipped


def run_in_memory_case(measure: str, n: int, d: int, args: argparse.Namespace) -> list[Row]:
    shape = f"{n}x{d}"
    x, y = activations(n, d)
    makers: dict[str, Maker] = dict(BOUNDS)
    try:
        makers["repsim"] = ours(measure)
    except (ImportError, AttributeError) as err:
        return [Row(measure, shape, "repsim", status=f"missing: {err}")]
    skipped: list[Row] = []
    if not args.no_peers:
        peer_makers, skipped = available_peers(measure, n, args.max_gram_n)
        makers.update(peer_makers)
    rows = {key: Row(measure, shape, key) for key in makers}
    for peer in PEERS:
        if peer.measure == measure and peer.name in rows:
            rows[peer.name].note = peer.note
    thunks = {key: make(x, y) for key, make in makers.items()}
    time_interleaved(thunks, rows, args.repeats, args.slow)
    rows["repsim"].note = route_note(rows["repsim"].value)
    if not args.no_memory:
        for key, row in rows.items():
            if not row.status:
                row.peak_mb = measure_memory({"measure": measure, "impl": key, "n": n, "d": d})
    for row in skipped:
        row.shape = shape
    return list(rows.values()) + skipped


def run_streaming_case(measure: str, n: int, d: int, args: argparse.Namespace) -> list[Row]:
    shape = f"{n}x{d}"
    try:
        run = streaming(measure)
    except (ImportError, AttributeError) as err:
        return [Row(measure, shape, "repsim", status=f"missing: {err}")]
    batches = list(stream_batches(n, d, args.batch))  # generated once, outside the timing

    def bound() -> float:
        for xb, yb in batches:
            products_bound(xb, yb)()
        return float("nan")

    rows = {key: Row(measure, shape, key) for key in ("bound", "repsim")}
    thunks = {"bound": bound, "repsim": lambda: run(lambda: iter(batches))}
    time_interleaved(thunks, rows, args.repeats, args.slow)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    batches.clear()  # free the batches before the in-memory reference
    in_memory = ours("linear_cka" if measure == "stream_linear_cka" else "mean_cca")(x, y)
    rows["in-memory"] = Row(measure, shape, "in-memory repsim", value=in_memory(), note="reference")
    del x, y
    if not args.no_memory:
        rows["repsim"].peak_mb = measure_memory(
            {"measure": measure, "impl": "repsim", "n": n, "d": d, "batch": args.batch}
        )
    rows["repsim"].note = f"batches of {args.batch}; {route_note(rows['repsim'].value)}".rstrip("; ")
    return list(rows.values())


def route_note(value: float) -> str:
    """The route that repsim's result says it took, and the error bound it certified."""
    details = getattr(value, "details", {})
    if "route" not in details:
        return ""
    bound = details.get("error_bound")
    return f"{details['route']} route" + (f", error <= {bound:.0e}" if bound is not None else "")


# ---------------------------------------------------------------------------------- report
NAN = float("nan")
TABLE = "{measure:<18}{shape:>13}  {impl:<17}{median:>10}{x_bound:>9}{x_ours:>10}{peak:>9}{diff:>10}  {note}"


def ratio(row: Row | None, base: Row | None) -> float:
    """Median time of ``row`` over that of ``base`` (NaN if either was not timed)."""
    return row.median / base.median if row and base and row.times and base.times else NAN


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def print_table(rows: list[Row]) -> None:
    """One line per implementation; ``|diff|`` against repsim's in-memory float64 value."""
    header = TABLE.format(
        measure="measure",
        shape="shape",
        impl="implementation",
        median="median s",
        x_bound="x bound",
        x_ours="x repsim",
        peak="peak MB",
        diff="|diff|",
        note="note",
    )
    print(header + "\n" + "-" * len(header))
    groups: dict[tuple[str, str], dict[str, Row]] = {}
    for row in rows:
        groups.setdefault((row.measure, row.shape), {})[row.impl] = row
    for group in groups.values():
        bound, mine = group.get("bound"), group.get("repsim")
        reference = group.get("in-memory repsim", mine)
        for row in group.values():
            if row.status:
                print(f"{row.measure:<18}{row.shape:>13}  {row.impl:<17}{row.status}")
                continue
            timed_only = row.impl in BOUND_ROWS[:2] or reference is None
            diff = NAN if timed_only else abs(row.value - reference.value)
            print(
                TABLE.format(
                    measure=row.measure,
                    shape=row.shape,
                    impl=row.impl,
                    median=_fmt(row.median, ".4f"),
                    x_bound=_fmt(ratio(row, bound), ".2f"),
                    x_ours=_fmt(ratio(row, mine), ".2f"),
                    peak=_fmt(row.peak_mb, ".0f"),
                    diff=_fmt(diff, ".1e"),
                    note=row.note,
                )
            )


#: The issue's targets: repsim's median time at most this many times the bound's.
TARGETS = {"linear_cka": 1.1, "debiased_cka": 1.1, "mean_cca": 1.5, "svcca": 1.5, "pwcca": 1.5}
TARGET_SHAPES = ("5000x512", "50000x64")
BOUND_ROWS = ("bound", "torch products", "in-memory repsim")


def print_targets(rows: list[Row]) -> None:
    """The targets, checked against this run."""
    by = {(r.measure, r.shape, r.impl): r for r in rows}
    print("\ntargets (x the numpy bound; in brackets: x the torch-product bound)")
    for (measure, shape, impl), row in by.items():
        if impl != "repsim" or measure not in TARGETS or shape not in TARGET_SHAPES:
            continue
        r = ratio(row, by.get((measure, shape, "bound")))
        old = ratio(row, by.get((measure, shape, "torch products")))
        if r == r:
            verdict = "met" if r <= TARGETS[measure] else "MISSED"
            print(f"  {measure} at {shape}: {r:.2f}x ({old:.2f}x) (target <= {TARGETS[measure]}): {verdict}")
    for row in rows:
        if row.measure.startswith("stream_") and row.impl == "repsim" and row.peak_mb is not None:
            verdict = "met" if row.peak_mb < 200 else "MISSED"
            print(
                f"  {row.measure} at {row.shape}: peak {row.peak_mb:.0f} MB added, batches included"
                f" (target < 200): {verdict}"
            )
    faster_peers = [
        f"{r.impl} {r.measure} {r.shape} ({ratio(r, by.get((r.measure, r.shape, 'repsim'))):.2f}x)"
        for r in rows
        if r.impl not in ("repsim", *BOUND_ROWS) and ratio(r, by.get((r.measure, r.shape, "repsim"))) < 1
    ]
    print("  faster than every peer:", "yes" if not faster_peers else f"NO, slower than {faster_peers}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, 2 repeats: a smoke run")
    parser.add_argument("--sizes", help=f"in-memory shapes NxD, comma-separated (default {DEFAULT_SIZES})")
    parser.add_argument("--measures", default=",".join(IN_MEMORY_MEASURES), help="in-memory measures to run")
    parser.add_argument("--stream", help="streaming shape NxD (default 1000000x64; quick 50000x64)")
    parser.add_argument("--batch", type=int, default=50000, help="rows per streaming batch")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 2)")
    parser.add_argument("--slow", type=float, default=20.0, help="time once what takes longer (s)")
    parser.add_argument("--max-gram-n", type=int, default=10000, help="skip n x n peers above this n")
    parser.add_argument("--no-peers", action="store_true", help="repsim and the bound only")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case child processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    args.stream = args.stream or ("50000x64" if args.quick else "1000000x64")
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.quick:
        args.batch = min(args.batch, 10000)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child_memory(json.loads(args.child))))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, float64; medians of {args.repeats}")
    missing = []
    for peer in PEERS:
        try:
            peer.loader()
        except ImportError as err:
            missing.append(f"{peer.name} ({err})")
    print("peers missing (pip install them to compare):", ", ".join(sorted(set(missing))) or "none")
    rows: list[Row] = []
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    for text in args.sizes.split(","):
        n, d = parse_shape(text)
        for measure in measures:
            print(f"... {measure} {n}x{d}", file=sys.stderr, flush=True)
            rows += run_in_memory_case(measure, n, d, args)
    n, d = parse_shape(args.stream)
    for measure in ("stream_linear_cka", "stream_cca"):
        print(f"... {measure} {n}x{d}", file=sys.stderr, flush=True)
        rows += run_streaming_case(measure, n, d, args)
    print()
    print_table(rows)
    print_targets(rows)


if __name__ == "__main__":
    main()
