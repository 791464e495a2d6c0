"""MAML and ANIL on a GPU: each execution path's meta-gradient checked against a float64 CPU
reference, seconds per training iteration of the batched paths against the per-task loop,
ANIL's training and inference speed-up over MAML, the speed-up over this project's CPUs, and the
projected hours of the ``paper`` study preset. One script, bounded in time (``--budget-s``,
default 450 s, plus the warm-up iterations), ending with Markdown tables ready for
``benchmarks/README.md``.

Settings (the paper's, :data:`meta.run.paper_defaults.PAPER_DEFAULTS`): Omniglot 20-way 1-shot
(28x28x1, meta-batch 16, 1 query per class, 5 inner steps of 0.1, 5 at test) and miniImageNet
5-way 1-shot (84x84x3, meta-batch 4, 15 queries per class, 5 inner steps of 0.01, 10 at test);
conv4 as the trainer builds it (TensorFlow ``same`` padding). The tasks are random tensors of
those shapes (a fixed seed), so no data is needed.

What is measured, in order:

1. **Gradient check.** For each setting, MAML and ANIL, and each path (``loop``, ``grouped``,
   ``hybrid``; ``compiled`` runs on CPUs only), the meta-gradient of 4 tasks (chunks of 2, so
   the batched paths have several parts) on the device in float64 and in float32, against
   ``loop``'s in float64 on the CPU. float64 must agree to 1e-9 of the largest entry of each
   parameter's gradient ("agrees"); float32's relative error (norm of the difference over the
   norm of the reference) is printed for information (second-order meta-gradients of random
   tasks differ by up to a few percent between orders of summation in float32, and cuDNN's TF32
   convolutions add to it).
2. **Training iterations.** One iteration = ``zero_grad``, ``meta.core.paths.meta_gradient``
   over the meta-batch, an Adam step; the device synchronised before and after. Per case: 2
   warm-up iterations (1 on a CPU), then up to ``--rounds`` timed ones within the case's share
   of the budget; the median, and on CUDA the peak of allocated memory. Paths: ``loop`` and each
   batched path at chunk 4 (the trainer's default) and at the whole meta-batch.
3. **ANIL against MAML.** Training: MAML's best s/iter over ANIL's best. Inference: seconds per
   test task of ``meta.core.procedures.evaluate_task`` (the test-time inner loop, then the query
   set) with MAML's and ANIL's test inner loops. The paper reports 1.7x and 4.1x.
4. **Against the CPU.** The best GPU s/iter of each setting and algorithm against the best CPU
   path of the project's shared 2-core machine (figures recorded in :data:`RECORDED_CPU`, or
   ``--cpu-reference FILE`` written by ``--device cpu --save-cpu-reference FILE``), and against
   this host's CPU measured now with one thread (``loop`` and ``hybrid``; skip with
   ``--no-cpu-baseline``). CPU figures are the thread's CPU seconds per iteration
   (``time.thread_time``; one thread, so the wall time of an idle machine, whatever the load of
   the shared machine). Goal: at least 10x.
5. **Projection.** Every run of ``meta reproduce --preset paper`` (:func:`meta.study.plan.make_plan`)
   at its own settings (the preset's path, ``grouped``, chunk 4): MAML and ANIL runs timed for a
   few iterations per distinct setting, the body-training baselines scaled from ANIL's time by
   the plan's cost model (:func:`meta.study.plan.training_cost`); hours of training, one device,
   runs one after another. Evaluation, snapshots and similarity stages are not included.

    python benchmarks/bench_gpu.py                       # on a CUDA machine: about 9 minutes at most
    python benchmarks/bench_gpu.py --budget-s 300        # shorter, fewer timed rounds
    python benchmarks/bench_gpu.py --device cpu --smoke  # tiny shapes, seconds (tests)
    python benchmarks/bench_gpu.py --device cpu --save-cpu-reference cpu.json   # record a CPU reference

Without a CUDA device the default invocation exits with code 2 and says so. A case that fails
(out of memory, say) is reported as FAILED and skipped, the others still run, and the exit code
is 1, as it is when a float64 check disagrees.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import Budget, load_line, markdown_table, median, ratio

from meta.core.inner import InnerLoop
from meta.core.models import conv4
from meta.core.paths import DEFAULT_CHUNK, meta_gradient
from meta.core.procedures import evaluate_task
from meta.run.paper_defaults import paper_defaults

#: The timed settings: label -> (data set, ways, shots).
SETTINGS = {"omniglot-20w1s": ("omniglot", 20, 1), "miniimagenet-5w1s": ("miniimagenet", 5, 1)}
#: (channels, side) of each data set's images.
IMAGES = {"omniglot": (1, 28), "miniimagenet": (3, 84)}
ALGORITHMS = ("maml", "anil")
#: ANIL's speed-up over MAML in the paper (Raghu et al. 2020).
PAPER_ANIL = {"training": 1.7, "inference": 4.1}
GPU_TARGET = 10.0
#: float64 on the device must match the float64 CPU reference to this fraction of each gradient's largest entry.
FLOAT64_TOLERANCE = 1e-9
CHECK_TASKS, CHECK_CHUNK = 4, 2
#: Best CPU path of each case on the project's shared 2-core AMD EPYC VM (one thread, torch 2.13.0+cpu,
#: the thread's CPU seconds per iteration; ``python benchmarks/bench_gpu.py --device cpu --paths loop,hybrid
#: --no-check --no-projection --rounds 3 --budget-s 400 --save-cpu-reference FILE``, 2026-12-07, load average
#: 5-7 from other work: 1-3 timed iterations per case). ``compiled`` was not timed (it compiles for minutes
#: per shape; on Omniglot 5-way it is 1.1x faster than ``hybrid``, on miniImageNet as fast as ``loop``).
RECORDED_CPU: dict = {
    "machine": "the project's shared 2-core AMD EPYC VM, 1 thread, thread CPU time (load average 5-7)",
    "date": "2026-12-07",
    "s_per_iter": {
        "omniglot-20w1s/maml": {"path": "loop", "seconds": 2.923},
        "omniglot-20w1s/anil": {"path": "hybrid/c16", "seconds": 0.374},
        "miniimagenet-5w1s/maml": {"path": "hybrid/c4", "seconds": 4.730},
        "miniimagenet-5w1s/anil": {"path": "loop", "seconds": 2.565},
    },
}


@dataclass(frozen=True)
class Case:
    """One setting's shapes and inner loops (the paper's, or tiny ones with ``--smoke``)."""

    label: str
    dataset: str
    ways: int
    shots: int
    queries: int
    tasks: int
    filters: int | None
    train_steps: int
    test_steps: int
    lr: float

    @property
    def channels(self) -> int:
        return IMAGES[self.dataset][0]

    @property
    def size(self) -> int:
        return IMAGES[self.dataset][1]


def make_case(label: str, smoke: bool) -> Case:
    """The paper's setting ``label``; with ``smoke`` 2 tasks, 2 queries, 4 filters, 1 or 2 steps."""
    dataset, ways, shots = SETTINGS[label]
    d = paper_defaults(dataset, ways, shots)
    case = Case(
        label,
        dataset,
        ways,
        shots,
        d.queries,
        d.meta_batch_size,
        None,
        d.train_inner.steps,
        d.test_inner.steps,
        d.train_inner.lr,
    )
    return dataclasses.replace(case, queries=2, tasks=2, filters=4, train_steps=1, test_steps=2) if smoke else case


def inner_loop(case: Case, algorithm: str, test: bool = False) -> InnerLoop:
    """MAML's (every layer) or ANIL's (head only) inner loop of ``case``, training or test."""
    adapt = frozenset({"head"}) if algorithm == "anil" else None
    return InnerLoop(case.test_steps if test else case.train_steps, case.lr, adapt=adapt)


def make_model(case: Case, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    model = conv4(
        case.ways, case.channels, variant=case.dataset, filters=case.filters, image_size=case.size, padding="same"
    )
    return model.to(device=device, dtype=dtype)


def make_tasks(case: Case, n_tasks: int, device: torch.device, dtype: torch.dtype = torch.float32) -> SimpleNamespace:
    """``n_tasks`` random tasks of ``case``'s shapes (fixed seed), stacked."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(case.ways)
    shape = (case.channels, case.size, case.size)
    tasks = SimpleNamespace(
        support_x=torch.rand(n_tasks, case.ways * case.shots, *shape, generator=g, dtype=torch.float64),
        support_y=labels.repeat_interleave(case.shots).expand(n_tasks, -1).contiguous(),
        query_x=torch.rand(n_tasks, case.ways * case.queries, *shape, generator=g, dtype=torch.float64),
        query_y=labels.repeat_interleave(case.queries).expand(n_tasks, -1).contiguous(),
    )
    return SimpleNamespace(
        **{k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in vars(tasks).items()}
    )


#: What failed (``attempt``): the run goes on, and exits 1.
FAILURES: list[str] = []


def attempt(what: str, compute: Callable[..., object], *args: object) -> object | None:
    """``compute(*args)``, or None after printing why it failed (so that one failing case, e.g. out
    of GPU memory, costs only its own figures on a machine lent for a few minutes)."""
    try:
        return compute(*args)
    except Exception as err:
        FAILURES.append(what)
        print(f"FAILED {what}: {type(err).__name__}: {str(err)[:300]}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ gradient check


def gradients(model: torch.nn.Module, tasks: SimpleNamespace, inner: InnerLoop, path: str, chunk: int) -> dict:
    """The meta-gradient of ``tasks`` on ``path``, per parameter, in float64 on the CPU."""
    model.zero_grad(set_to_none=True)
    meta_gradient(model, tasks, inner, path=path, chunk=chunk)
    return {k: p.grad.detach().to("cpu", torch.float64) for k, p in model.named_parameters() if p.grad is not None}


def relative_difference(ours: dict, reference: dict) -> float:
    """Largest difference of any entry, relative to the largest entry of its parameter's gradient."""
    if ours.keys() != reference.keys():
        return float("inf")
    return max(float((ours[k] - r).abs().max()) / (float(r.abs().max()) + 1e-300) for k, r in reference.items())


def norm_difference(ours: dict, reference: dict) -> float:
    """``|ours - reference| / |reference|`` over all parameters' gradients (Euclidean norms)."""
    if ours.keys() != reference.keys():
        return float("inf")
    error = sum(float((ours[k] - r).pow(2).sum()) for k, r in reference.items())
    return (error / (sum(float(r.pow(2).sum()) for r in reference.values()) + 1e-300)) ** 0.5


def path_gradients(case: Case, inner: InnerLoop, path: str, device: torch.device, dtype: torch.dtype) -> dict:
    """The meta-gradient of the check's tasks on ``path``, on ``device`` in ``dtype``."""
    model, tasks = make_model(case, device, dtype), make_tasks(case, CHECK_TASKS, device, dtype)
    return gradients(model, tasks, inner, path, CHECK_CHUNK)


def check_paths(case: Case, algorithm: str, paths: list[str], device: torch.device) -> list[dict]:
    """Each path's meta-gradient on ``device`` (float64 and float32) against ``loop``'s in
    float64 on the CPU; one row per path."""
    inner, cpu = inner_loop(case, algorithm), torch.device("cpu")
    reference = gradients(
        make_model(case, cpu, torch.float64),
        make_tasks(case, CHECK_TASKS, cpu, torch.float64),
        inner,
        "loop",
        CHECK_CHUNK,
    )
    rows = []
    for path in paths:
        diffs = {}
        for dtype, measure in ((torch.float64, relative_difference), (torch.float32, norm_difference)):
            what = f"grad check {case.label} {algorithm} {path} {dtype}"
            found = attempt(what, path_gradients, case, inner, path, device, dtype)
            diffs[dtype] = float("nan") if found is None else measure(found, reference)
        agrees = bool(diffs[torch.float64] <= FLOAT64_TOLERANCE)
        rows.append({"path": path, "float64": diffs[torch.float64], "float32": diffs[torch.float32], "agrees": agrees})
        verdict = "agrees with float64" if agrees else "DISAGREES with float64"
        print(
            f"grad check {case.label} {algorithm} {path}: float64 on {device.type} vs the float64 CPU reference,"
            f" max rel diff {diffs[torch.float64]:.1e}: {verdict};"
            f" float32 relative norm error {diffs[torch.float32]:.1e}",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------ timing


class Rounds(NamedTuple):
    """Calls of a timed case: ``warmup`` untimed, then at most ``timed``."""

    timed: int
    warmup: int


def time_calls(step: Callable[[], object], device: torch.device, rounds: Rounds, seconds: float) -> dict:
    """Median wall seconds of ``step()`` (device synchronised around each call) and median CPU
    seconds of this thread (``cpu_seconds``: on a shared CPU, what one thread's work costs
    whatever the load): ``rounds.warmup`` calls, then up to ``rounds.timed`` timed ones, stopping
    once ``seconds`` have passed (at least one)."""
    for _ in range(rounds.warmup):
        step()
    synchronize(device)
    times: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(times) < rounds.timed and (not times or time.perf_counter() - started < seconds):
        t0, c0 = time.perf_counter(), time.thread_time()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return {"seconds": median(times), "cpu_seconds": median(cpu), "timed": len(times)}


def training_step(model: torch.nn.Module, tasks: SimpleNamespace, step: Callable[[], object]) -> Callable[[], None]:
    """One training iteration: zero the gradients, ``step()`` (the meta-gradient), an Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def iteration() -> None:
        optimizer.zero_grad(set_to_none=True)
        step()
        optimizer.step()

    return iteration


def path_variants(paths: list[str], tasks: int) -> list[tuple[str, int]]:
    """(path, chunk) of each timed case: ``loop`` once, each batched path at chunk 4 and at the
    whole meta-batch (once when they are the same)."""
    out = []
    for path in paths:
        chunks = [1] if path in ("loop", "compiled") else sorted({min(DEFAULT_CHUNK, tasks), tasks})
        out += [(path, c) for c in chunks]
    return out


def variant_name(path: str, chunk: int) -> str:
    return path if path in ("loop", "compiled") else f"{path}/c{chunk}"


def time_training(case: Case, algorithm: str, path: str, chunk: int, device, rounds: Rounds, seconds: float):
    """Median s/iter of MAML or ANIL training on ``path`` (and the peak MB allocated on CUDA)."""
    model, tasks, inner = make_model(case, device), make_tasks(case, case.tasks, device), inner_loop(case, algorithm)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = training_step(model, tasks, lambda: meta_gradient(model, tasks, inner, path=path, chunk=chunk))
    result = time_calls(step, device, rounds, seconds)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {**result, "peak_mb": peak}


def time_inference(case: Case, algorithm: str, device: torch.device, rounds: Rounds, seconds: float) -> dict:
    """Median seconds per test task: the test-time inner loop on the support set, then the query set."""
    model, tasks = make_model(case, device), make_tasks(case, 1, device)
    episode = SimpleNamespace(**{k: v[0] for k, v in vars(tasks).items()})
    return time_calls(
        lambda: evaluate_task(model, episode, inner_loop(case, algorithm, test=True)), device, rounds, seconds
    )


def time_stage(cases: list[Case], variants: list[tuple[str, int]], device, rounds: Rounds, budget: Budget) -> dict:
    """Training s/iter of every (case, algorithm, path variant) on ``device``, each within an even
    share of ``budget``; keys ``(case label, algorithm, variant name)``."""
    work = [(c, a, v) for c in cases for a in ALGORITHMS for v in variants]
    out = {}
    for k, (case, algorithm, (path, chunk)) in enumerate(work):
        if budget.left() <= 0:
            print(f"  skipped {case.label} {algorithm} {variant_name(path, chunk)}: out of time", file=sys.stderr)
            continue
        name, seconds = variant_name(path, chunk), budget.share(len(work) - k)
        what = f"{device.type} {case.label} {algorithm} {name}"
        r = attempt(what, time_training, case, algorithm, path, chunk, device, rounds, seconds)
        if r is None:
            continue
        out[case.label, algorithm, name] = r
        print(
            f"  {device.type} {case.label} {algorithm} {variant_name(path, chunk)}: {r['seconds']:.4f} s/iter"
            f" (thread CPU {r['cpu_seconds']:.4f} s)",
            file=sys.stderr,
            flush=True,
        )
    return out


def best(timings: dict, label: str, algorithm: str, clock: str = "seconds") -> tuple[str, float]:
    """(variant, s/iter) of the fastest timed variant of a case and algorithm by ``clock``
    (``seconds``: wall, ``cpu_seconds``: the thread's CPU time; ("-", NaN) if none)."""
    mine = [(v, r[clock]) for (lab, alg, v), r in timings.items() if (lab, alg) == (label, algorithm)]
    return min(mine, key=lambda vr: vr[1]) if mine else ("-", float("nan"))


# ------------------------------------------------------------------------------ CPU reference


def load_cpu_reference(path: Path | None) -> dict:
    """``--cpu-reference FILE`` (as written by :func:`save_cpu_reference`), else :data:`RECORDED_CPU`."""
    return json.loads(path.read_text()) if path else RECORDED_CPU


def save_cpu_reference(path: Path, cases: list[Case], timings: dict) -> None:
    """The best CPU path of each case and algorithm by the thread's CPU seconds (one thread:
    the wall time of an idle machine), with the machine, load and date."""
    entries = {}
    for case in cases:
        for algorithm in ALGORITHMS:
            variant, seconds = best(timings, case.label, algorithm, "cpu_seconds")
            entries[f"{case.label}/{algorithm}"] = {"path": variant, "seconds": seconds}
    machine = f"{cpu_name()}, {torch.get_num_threads()} thread(s), thread CPU time, {load_line()}"
    record = {"machine": machine, "date": datetime.date.today().isoformat(), "torch": torch.__version__}
    path.write_text(json.dumps({**record, "s_per_iter": entries}, indent=1) + "\n")
    print(f"CPU reference written to {path}")


def host_cpu_baseline(cases: list[Case], threads: int, rounds: Rounds, budget: Budget) -> dict:
    """This host's CPU with ``threads`` intra-op threads: ``loop`` and ``hybrid`` (chunk 4 and all)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        variants = {
            c.label: [("loop", 1), *[("hybrid", k) for k in sorted({min(DEFAULT_CHUNK, c.tasks), c.tasks})]]
            for c in cases
        }
        out = {}
        for i, case in enumerate(cases):
            share = Budget(budget.share(len(cases) - i))
            out.update(time_stage([case], variants[case.label], torch.device("cpu"), rounds, share))
        return out
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ projection


def paper_plan_configs(device: torch.device) -> list:
    """The resolved configurations of every run of ``meta reproduce --preset paper``."""
    from meta.study.plan import make_plan
    from meta.study.presets import get_study_preset

    with tempfile.TemporaryDirectory() as tmp:
        return [run.config for run in make_plan(get_study_preset("paper"), tmp, device=device.type).runs]


def time_config(config, device: torch.device, rounds: Rounds, seconds: float, smoke: bool) -> float:
    """s/iter of a MAML or ANIL run configuration at its own settings (regime, path and chunk
    from :func:`meta.run.recipe.make_run_regime`; tiny shapes with ``smoke``)."""
    from meta.run.recipe import make_run_regime

    if smoke:
        config = config.replace(meta_batch_size=2, queries=min(config.queries, 2), filters=4, inner_steps=1)
    regime = make_run_regime(config)
    label = f"{config.dataset}-{config.ways}w{config.shots}s"
    case = Case(
        label,
        config.dataset,
        config.ways,
        config.shots,
        config.queries,
        config.meta_batch_size,
        config.filters,
        config.inner_steps,
        config.test_inner_steps,
        config.inner_lr,
    )
    model, tasks = make_model(case, device), make_tasks(case, case.tasks, device)
    return time_calls(training_step(model, tasks, lambda: regime.step(model, tasks)), device, rounds, seconds)[
        "seconds"
    ]


def project_paper(device: torch.device, rounds: Rounds, budget: Budget, smoke: bool) -> tuple[list[list], float]:
    """Rows (runs, count, iterations, s/iter, hours) of the ``paper`` preset's training and the
    total hours: MAML and ANIL timed per setting, baselines scaled from ANIL by the cost model."""
    from meta.study.plan import training_cost

    configs = paper_plan_configs(device)
    meta = {(c.dataset, c.ways, c.shots, c.algorithm): c for c in configs if c.algorithm in ALGORITHMS}
    rates = {}
    for k, (key, config) in enumerate(meta.items()):
        seconds = budget.share(len(meta) - k)  # 0 once the budget is spent: warm-up and one timed iteration
        rate = attempt(f"projection {key}", time_config, config, device, rounds, seconds, smoke)
        rates[key] = float("nan") if rate is None else rate
    groups: dict[tuple, list] = {}
    for c in configs:
        groups.setdefault((c.algorithm, c.dataset, c.ways, c.shots), []).append(c)
    rows, total = [], 0.0
    for (algorithm, dataset, ways, shots), group in groups.items():
        c = group[0]
        if algorithm in ALGORITHMS:
            rate, how = rates[dataset, ways, shots, algorithm], "timed"
        else:
            anil = meta[dataset, ways, shots, "anil"]
            per_cost = rates[dataset, ways, shots, "anil"] / (training_cost(anil) / anil.iterations)
            rate, how = training_cost(c) / c.iterations * per_cost, "scaled from ANIL"
        hours = len(group) * c.iterations * rate / 3600
        total += hours
        rows.append(
            [
                f"{algorithm} {dataset} {ways}-way {shots}-shot",
                len(group),
                c.iterations,
                f"{rate:.4f} ({how})",
                f"{hours:.1f}",
            ]
        )
    return rows, total


# ------------------------------------------------------------------------------ report


def fmt(x: float, digits: int = 4) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def times(x: float) -> str:
    return "-" if x != x else f"{x:.2f}x"


def training_rows(cases: list[Case], timings: dict) -> list[list]:
    rows = []
    for (label, algorithm, variant), r in timings.items():
        loop = timings.get((label, algorithm, "loop"), {}).get("seconds", float("nan"))
        rows.append(
            [
                label,
                algorithm,
                variant,
                fmt(r["seconds"]),
                fmt(r["cpu_seconds"]),
                times(ratio(loop, r["seconds"])),
                fmt(r["peak_mb"], 0),
                r["timed"],
            ]
        )
    return rows


def anil_rows(cases: list[Case], timings: dict, inference: dict) -> list[list]:
    rows = []
    for case in cases:
        (mv, maml), (av, anil) = best(timings, case.label, "maml"), best(timings, case.label, "anil")
        mi, ai = inference.get((case.label, "maml"), float("nan")), inference.get((case.label, "anil"), float("nan"))
        rows.append(
            [
                case.label,
                f"{fmt(maml)} ({mv})",
                f"{fmt(anil)} ({av})",
                times(ratio(maml, anil)),
                fmt(mi, 5),
                fmt(ai, 5),
                times(ratio(mi, ai)),
            ]
        )
    return rows


def cpu_rows(cases: list[Case], timings: dict, reference: dict, host: dict) -> list[list]:
    rows = []
    for case in cases:
        for algorithm in ALGORITHMS:
            variant, seconds = best(timings, case.label, algorithm)
            recorded = reference.get("s_per_iter", {}).get(f"{case.label}/{algorithm}", {})
            rec = recorded.get("seconds", float("nan"))
            hv, hs = best(host, case.label, algorithm, "cpu_seconds")
            rows.append(
                [
                    case.label,
                    algorithm,
                    f"{fmt(seconds)} ({variant})",
                    f"{fmt(rec)} ({recorded.get('path', '-')})",
                    times(ratio(rec, seconds)),
                    f"{fmt(hs)} ({hv})",
                    times(ratio(hs, seconds)),
                ]
            )
    return rows


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def header_lines(device: torch.device, budget_s: float) -> list[str]:
    lines = [f"date: {datetime.datetime.now().isoformat(timespec='minutes')}; torch {torch.__version__}; {load_line()}"]
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        tf32 = f"TF32 convolutions {torch.backends.cudnn.allow_tf32}, matmuls {torch.backends.cuda.matmul.allow_tf32}"
        lines.append(f"device: {name}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; {tf32}")
    else:
        lines.append(f"device: CPU ({cpu_name()}), {torch.get_num_threads()} thread(s)")
    lines.append(f"time budget: {budget_s:.0f} s")
    return lines


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device (default cuda; exits 2 without one)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes and few iterations (tests)")
    p.add_argument("--budget-s", type=float, default=450.0, help="seconds the stages aim to fit in (default 450)")
    p.add_argument("--rounds", type=int, default=20, help="timed iterations per case at most (default 20)")
    p.add_argument(
        "--paths", default="loop,grouped,hybrid", help="paths checked and timed (default loop,grouped,hybrid)"
    )
    p.add_argument("--cpu-reference", type=Path, help="JSON of CPU s/iter (--save-cpu-reference); default: recorded")
    p.add_argument("--save-cpu-reference", type=Path, help="with --device cpu: write the best CPU s/iter here")
    p.add_argument("--cpu-threads", type=int, default=1, help="CPU threads of the CPU timings (default 1)")
    p.add_argument("--no-cpu-baseline", action="store_true", help="do not time this host's CPU")
    p.add_argument("--no-check", action="store_true", help="skip the gradient check (CPU reference runs)")
    p.add_argument("--no-projection", action="store_true", help="do not project the paper preset's hours")
    return p.parse_args(argv)


def require_device(name: str) -> torch.device:
    """The device, or exit 2 with a message when CUDA is asked for and there is none."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        sys.stderr.write(
            f"error: no CUDA GPU: bench_gpu.py measures a GPU, and torch.cuda.is_available() is False here"
            f" (torch {torch.__version__}, {built}). For a CPU smoke run: --device cpu --smoke\n"
        )
        raise SystemExit(2)
    return device


def measure(args: argparse.Namespace, device: torch.device, cases: list[Case], budget: Budget) -> dict:
    """Every stage but the projection: ``checks``, ``timings``, ``inference``, ``host``."""
    paths = [p for p in args.paths.split(",") if device.type == "cpu" or p != "compiled"]
    rounds = Rounds(2, 1) if args.smoke else Rounds(args.rounds, 2 if device.type == "cuda" else 1)
    checks = {}
    if not args.no_check:
        print("\n## Gradient check", flush=True)
        checks = {(c.label, a): check_paths(c, a, paths, device) for c in cases for a in ALGORITHMS}
    host_baseline = device.type == "cuda" and not args.no_cpu_baseline
    stage = Budget((0.35 if host_baseline else 0.7) * budget.left())
    timings = {}
    for i, case in enumerate(cases):
        share = Budget(stage.share(len(cases) - i))
        timings.update(time_stage([case], path_variants(paths, case.tasks), device, rounds, share))
    stage = Budget(0.08 * budget.left())
    work = [(c, a) for c in cases for a in ALGORITHMS]
    inference = {}
    for k, (c, a) in enumerate(work):
        seconds = stage.share(len(work) - k)
        found = attempt(f"inference {c.label} {a}", time_inference, c, a, device, rounds, seconds)
        inference[c.label, a] = float("nan") if found is None else found["seconds"]
    host = {}
    if host_baseline:
        host_rounds = Rounds(1 if args.smoke else 3, 1)
        host = host_cpu_baseline(cases, args.cpu_threads, host_rounds, Budget(0.5 * budget.left()))
    return {"checks": checks, "timings": timings, "inference": inference, "host": host}


def print_checks(checks: dict) -> None:
    if not checks:
        return
    print("\n## Gradient check against the float64 CPU reference\n")
    print("float64: largest difference / largest entry, per parameter; float32: relative norm of the difference\n")
    rows = [
        [lab, alg, r["path"], f"{r['float64']:.1e}", f"{r['float32']:.1e}", "yes" if r["agrees"] else "**NO**"]
        for (lab, alg), rs in checks.items()
        for r in rs
    ]
    print(markdown_table(["setting", "algorithm", "path", "float64", "float32", "float64 agrees"], rows))


def print_report(args: argparse.Namespace, device: torch.device, cases: list[Case], results: dict) -> None:
    """The Markdown tables of the checks, timings, ANIL against MAML and the CPU comparison."""
    timings = results["timings"]
    print_checks(results["checks"])
    print(f"\n## Training iterations on {device.type} (median s/iter)\n")
    header = ["setting", "algorithm", "path/chunk", "s/iter", "thread CPU s/iter", "vs loop", "peak MB", "timed"]
    print(markdown_table(header, training_rows(cases, timings)))
    print("\n## ANIL against MAML (best path each; inference: s per test task)\n")
    header = ["setting", "MAML s/iter", "ANIL s/iter", "training (paper 1.7x)"]
    header += ["MAML s/task", "ANIL s/task", "inference (paper 4.1x)"]
    print(markdown_table(header, anil_rows(cases, timings, results["inference"])))
    reference = load_cpu_reference(args.cpu_reference)
    if args.smoke:  # tiny shapes against full-size figures would mean nothing
        reference = {"machine": "not compared in a smoke run", "s_per_iter": {}}
    print(f"\n## Against the CPU (goal: >= {GPU_TARGET:.0f}x the 2-core machine's best CPU path)\n")
    print(f"recorded CPU: {reference.get('machine')}, {reference.get('date', '-')}\n")
    header = ["setting", "algorithm", f"{device.type} s/iter", "recorded CPU s/iter", "speed-up"]
    header += [f"this host's CPU ({args.cpu_threads} thread) s/iter", "speed-up"]
    print(markdown_table(header, cpu_rows(cases, timings, reference, results["host"])))


def print_projection(args: argparse.Namespace, device: torch.device, budget: Budget) -> None:
    print(f"\n## Projected training time of `meta reproduce --preset paper` on one {device.type} device\n")
    rounds = Rounds(1, 1) if args.smoke else Rounds(5, 2)
    rows, total = project_paper(device, rounds, Budget(max(1.0, budget.left())), args.smoke)
    print(markdown_table(["runs", "count", "iterations", "s/iter", "hours"], rows))
    print(f"\ntotal: {total:.1f} hours of training, runs one after another (evaluation and analyses not included)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = require_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.cpu_threads)
    budget = Budget(args.budget_s)
    cases = [make_case(label, args.smoke) for label in SETTINGS]
    print("\n".join(header_lines(device, args.budget_s)), flush=True)
    if args.smoke:
        print("smoke run: 2 tasks, 2 queries per class, 4 filters, 1 inner step (2 at test); the figures mean nothing")
    results = measure(args, device, cases, budget)
    if args.save_cpu_reference:
        save_cpu_reference(args.save_cpu_reference, cases, results["timings"])
    print_report(args, device, cases, results)
    if not args.no_projection:
        print_projection(args, device, budget)
    print(f"\nwall time {budget.used():.0f} s; {load_line()}")
    if FAILURES:
        print(f"{len(FAILURES)} case(s) failed: {', '.join(FAILURES)}")
    return 0 if not FAILURES and all(r["agrees"] for rs in results["checks"].values() for r in rs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
