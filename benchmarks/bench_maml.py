"""Seconds per meta-iteration of MAML, first-order MAML and ANIL: our inner loop on each execution
path, side by side with a plain clone-and-``autograd.grad`` loop written the way common libraries
(learn2learn, higher) do it, in one run; peak memory per case in a fresh subprocess (resident,
and the peak of the bytes its tensors hold); and the fraction of the machine's float32
convolution throughput that ANIL reaches.

Setting: Omniglot-shaped 5-way 1-shot tasks (random 28x28 images), 15 queries per class,
meta-batch 32, 5 inner steps of lr 0.4, conv4 (64 filters), one intra-op thread, denormals
flushed (``meta.run.cpu.configure_cpu``). Times are medians over interleaved rounds (every case
once per round, so a load change on the shared machine hits all cases alike) of the thread's CPU
time (``time.thread_time``; wall time is printed too).

    python benchmarks/bench_maml.py                    # the table (about 12 minutes; the first run on a
                                                       # machine also compiles the compiled cases, ~6 more)
    python benchmarks/bench_maml.py --no-reuse-memory  # glibc's default allocator behaviour
    python benchmarks/bench_maml.py --rounds 3 --no-memory --no-peak   # quicker
    python benchmarks/bench_maml.py --variant miniimagenet             # 84x84x3, meta-batch 4, lr 0.01
    python benchmarks/bench_maml.py --paths loop,compiled              # some of our paths only
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meta.core.inner import InnerLoop
from meta.core.models import conv4
from meta.core.paths import DEFAULT_CHUNK, PATHS, meta_gradient
from meta.run.cpu import configure_cpu

WAYS, SHOTS, QUERIES, STEPS = 5, 1, 15, 5

# Per data set: conv4 variant, image channels and side, meta-batch and inner learning rate of the
# MAML reference settings (``--variant``; the benchmark is Omniglot's).
SETTINGS = {
    "omniglot": {"channels": 1, "size": 28, "tasks": 32, "lr": 0.4},
    "miniimagenet": {"channels": 3, "size": 84, "tasks": 4, "lr": 0.01},
}


def use_variant(variant: str) -> None:
    """Switch the module's setting (``VARIANT``, ``CHANNELS``, ``SIZE``, ``TASKS``, ``LR``,
    ``INNER``) to ``variant``'s."""
    global VARIANT, CHANNELS, SIZE, TASKS, LR, INNER
    VARIANT = variant
    CHANNELS, SIZE, TASKS, LR = (SETTINGS[variant][k] for k in ("channels", "size", "tasks", "lr"))
    INNER = inner_loops(LR)


# --------------------------------------------------------------------------------------------
# Baseline: the common-library way (learn2learn's clone_module / update_module, higher's
# monkeypatched modules) on the usual PyTorch conv4 (learn2learn's OmniglotCNN: nn.Conv2d,
# nn.BatchNorm2d without running statistics, ReLU; spatial mean; nn.Linear), given our
# weights so that both compute the same function: per task, a copy of the network whose
# parameters are replaced by differentiable clones, updated with
# torch.autograd.grad(create_graph=True), the query loss backpropagated per task.
# --------------------------------------------------------------------------------------------


class StandardConv4(torch.nn.Module):
    """conv4 as common libraries write it (same function and parameter names as ours)."""

    def __init__(self, ours: torch.nn.Module) -> None:
        super().__init__()
        self.readout = ours.readout
        for name in ("conv1", "conv2", "conv3", "conv4"):
            conv, pool = getattr(ours, name).conv, getattr(ours, name).pool
            block = torch.nn.Module()
            block.conv = torch.nn.Conv2d(
                conv.in_channels, conv.out_channels, 3, stride=conv.stride, padding=1, bias=False
            )
            block.pool = pool
            block.norm = torch.nn.Module()  # the reference's batch norm: a shift, no scale
            block.norm.bias = torch.nn.Parameter(torch.zeros(conv.out_channels))
            self.add_module(name, block)
        self.head = torch.nn.Linear(ours.head.in_features, ours.head.out_features)
        self.load_state_dict(ours.state_dict())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("conv1", "conv2", "conv3", "conv4"):
            block = getattr(self, name)
            z = F.batch_norm(block.conv(x), None, None, training=True, eps=1e-3)
            x = torch.relu(z + block.norm.bias.view(-1, 1, 1))
            x = F.max_pool2d(x, 2) if block.pool else x
        return x.mean(dim=(2, 3)) if self.readout == "mean" else x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _set_parameters(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put ``tensors`` in place of the parameters of ``module`` (non-leaf tensors, as
    learn2learn's ``update_module`` does)."""
    for prefix, sub in module.named_modules():
        for name, value in list(sub._parameters.items()):
            if value is not None:
                sub._parameters[name] = tensors[f"{prefix}.{name}" if prefix else name]


def baseline_maml(model: torch.nn.Module, tasks: SimpleNamespace, first_order: bool) -> None:
    """MAML / first-order MAML, clone-and-update per task (the reference's inner loss: summed over
    the support set, divided by the shots; batch-norm shifts learnt in the outer loop only)."""
    n_tasks = len(tasks.support_x)
    for t in range(n_tasks):
        learner = copy.deepcopy(model)
        params = dict(model.named_parameters())
        fast = {k: p.clone() for k, p in params.items() if ".norm." not in k}
        _set_parameters(learner, {**params, **fast})
        for _ in range(STEPS):
            loss = F.cross_entropy(learner(tasks.support_x[t]), tasks.support_y[t], reduction="sum") / SHOTS
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {k: p - LR * g for (k, p), g in zip(fast.items(), grads)}
            _set_parameters(learner, {**params, **fast})
        (F.cross_entropy(learner(tasks.query_x[t]), tasks.query_y[t]) / n_tasks).backward()


def baseline_anil(model: torch.nn.Module, tasks: SimpleNamespace) -> None:
    """ANIL as learn2learn's example: body once per task (support and query as separate
    batches, our batch-norm semantics), a cloned head adapted with create_graph=True."""
    n_tasks = len(tasks.support_x)
    for t in range(n_tasks):
        support, query = model.features(tasks.support_x[t]), model.features(tasks.query_x[t])
        weight, bias = model.head.weight.clone(), model.head.bias.clone()
        for _ in range(STEPS):
            loss = F.cross_entropy(F.linear(support, weight, bias), tasks.support_y[t], reduction="sum") / SHOTS
            g_weight, g_bias = torch.autograd.grad(loss, (weight, bias), create_graph=True)
            weight, bias = weight - LR * g_weight, bias - LR * g_bias
        (F.cross_entropy(F.linear(query, weight, bias), tasks.query_y[t]) / n_tasks).backward()


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def inner_loops(lr: float) -> dict[str, InnerLoop]:
    return {
        "maml": InnerLoop(STEPS, lr),
        "fomaml": InnerLoop(STEPS, lr, first_order=True),
        "anil": InnerLoop(STEPS, lr, adapt=frozenset({"head"})),
    }


use_variant("omniglot")


def make_tasks(seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return SimpleNamespace(
        support_x=torch.rand(TASKS, WAYS * SHOTS, CHANNELS, SIZE, SIZE, generator=g),
        support_y=labels.repeat_interleave(SHOTS).expand(TASKS, -1).contiguous(),
        query_x=torch.rand(TASKS, WAYS * QUERIES, CHANNELS, SIZE, SIZE, generator=g),
        query_y=labels.repeat_interleave(QUERIES).expand(TASKS, -1).contiguous(),
    )


def make_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ours = conv4(WAYS, in_channels=CHANNELS, variant=VARIANT)
    return {"ours": ours, "standard": StandardConv4(ours)}


def zero_grads(models: dict[str, torch.nn.Module]) -> None:
    for model in models.values():
        model.zero_grad(set_to_none=True)


def cases(chunk: int, paths: tuple[str, ...] = PATHS) -> dict[str, Callable[[dict, SimpleNamespace], object]]:
    """Case name -> one meta-iteration on ``models`` (``"ours"``: conv4, ``"standard"``: the
    same network as :class:`StandardConv4`), gradients accumulated into the model; our cases
    for the execution paths ``paths``."""
    out: dict[str, Callable] = {
        "maml/baseline": lambda m, b: baseline_maml(m["standard"], b, first_order=False),
        "fomaml/baseline": lambda m, b: baseline_maml(m["standard"], b, first_order=True),
        "anil/baseline": lambda m, b: baseline_anil(m["standard"], b),
    }
    for algorithm, inner in INNER.items():
        for path in paths:
            out[f"{algorithm}/{path}"] = lambda m, b, inner=inner, path=path: meta_gradient(
                m["ours"], b, inner, path=path, chunk=chunk
            )
    return dict(sorted(out.items(), key=lambda kv: list(INNER).index(kv[0].split("/")[0])))


def check_agreement(chunk: int, paths: tuple[str, ...] = PATHS, n_tasks: int = 4) -> float:
    """Largest relative difference between the baseline's and each of our paths' meta-gradients
    in float64 (same weights, ``n_tasks`` tasks): the cases compute the same thing. (In float32
    these second-order meta-gradients of random tasks differ by up to a few percent between any
    two orders of summation, the baseline's against itself in float64 included.)"""
    models = {k: m.double() for k, m in make_models().items()}
    tasks = SimpleNamespace(
        **{k: v[:n_tasks].double() if v.is_floating_point() else v[:n_tasks] for k, v in vars(make_tasks()).items()}
    )
    table, worst = cases(chunk, paths), 0.0
    for algorithm in INNER:
        zero_grads(models)
        table[f"{algorithm}/baseline"](models, tasks)
        expected = {k: p.grad.clone() for k, p in models["standard"].named_parameters()}
        for path in paths:
            zero_grads(models)
            table[f"{algorithm}/{path}"](models, tasks)
            for k, p in models["ours"].named_parameters():
                scale = float(expected[k].abs().max()) + 1e-12
                worst = max(worst, float((p.grad - expected[k]).abs().max()) / scale)
    return worst


def time_cases(names: list[str], rounds: int, chunk: int) -> dict[str, dict[str, float]]:
    """Median CPU and wall seconds per iteration, rounds interleaved, the first round warm-up
    (which also builds or loads the ``compiled`` cases' packages)."""
    models, tasks, table = make_models(), make_tasks(), cases(chunk)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 1):
        for name in names:
            zero_grads(models)
            c0, w0 = time.thread_time(), time.perf_counter()
            table[name](models, tasks)
            c1, w1 = time.thread_time(), time.perf_counter()
            if r:
                cpu[name].append(c1 - c0)
                wall[name].append(w1 - w0)
        print(f"  round {r}/{rounds} done", file=sys.stderr)
    return {n: {"cpu_s": statistics.median(cpu[n]), "wall_s": statistics.median(wall[n])} for n in names}


def peak_rss(name: str, chunk: int, reuse_memory: bool) -> dict[str, float]:
    """Peak memory of ``name`` alone in a fresh process: resident (``peak_mb``) over 3 iterations
    and that peak above the resident memory before the first (``above_start_mb``; imports, model,
    data; for the ``compiled`` cases, loading the compiled package, which the first iteration
    does: the compiling itself runs in a child process of its own, not measured here), then the
    tensors' peak of a fourth iteration (``live_mb``, :func:`live_tensor_peak_mb`)."""
    command = [sys.executable, __file__, "--rss-case", name, "--chunk", str(chunk), "--variant", VARIANT]
    if not reuse_memory:
        command.append("--no-reuse-memory")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _rss_case(name: str, chunk: int) -> None:
    models, tasks, case = make_models(), make_tasks(), cases(chunk)[name]
    before = _status_mb("VmRSS")
    for _ in range(3):
        zero_grads(models)
        case(models, tasks)
    peak = _status_mb("VmHWM")
    zero_grads(models)
    live = live_tensor_peak_mb(lambda: case(models, tasks))
    print(json.dumps({"peak_mb": peak, "above_start_mb": peak - before, "live_mb": live}))


def live_tensor_peak_mb(step: Callable[[], object]) -> float:
    """Peak of the bytes held by tensors allocated during ``step()``, in MB: ``max_t sum_{i <= t}
    b_i`` over the CPU allocator's events in time order (``b_i > 0`` an allocation, ``< 0`` a
    free), recorded by ``torch.profiler`` with ``profile_memory``. Unlike resident memory it
    does not depend on the C library's allocator (how freed blocks are kept and reused)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # the raw allocator events (kineto's "[memory]" records); FunctionEvent only keeps per-op sums
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``: now; ``VmHWM``: peak
    since exec; unlike ``ru_maxrss``, which Linux carries over from the forking parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


# --------------------------------------------------------------------------------------------
# Convolution throughput
# --------------------------------------------------------------------------------------------

# (in_channels, input side) of conv1..conv4; 64 output channels, 3x3, stride 2, padding 1.
CONV_LAYERS = [(1, 28), (64, 14), (64, 7), (64, 4)]


def conv_flops(batch: int, in_channels: int, side: int, backward: bool) -> float:
    """FLOPs (2 per multiply-add) of one 3x3 stride-2 conv forward, and, with ``backward``, of
    its input gradient (not for a 1-channel image input, which needs none) and weight gradient."""
    out = (side + 1) // 2
    forward = 2.0 * batch * 64 * in_channels * 9 * out * out
    return forward * (1 + (in_channels > 1) + 1) if backward else forward


def anil_conv_flops() -> dict[str, float]:
    """Convolution FLOPs of one ANIL meta-iteration per layer (``conv1``..``conv4``): the body's
    forward and backward on every support and query image of the meta-batch (the head's are
    negligible)."""
    images = TASKS * WAYS * (SHOTS + QUERIES)
    return {f"conv{i}": conv_flops(images, c, s, backward=True) for i, (c, s) in enumerate(CONV_LAYERS, 1)}


def conv_throughput(batch: int = 600, repeats: int = 7, channels_last: bool = False) -> dict[str, float]:
    """GFLOP/s of one large float32 conv forward+backward per conv4 layer shape (``batch`` images,
    median of ``repeats``; memory layout channels-first or channels-last)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = {}
    for i, (c, s) in enumerate(CONV_LAYERS, 1):
        x = torch.empty(batch, c, s, s, memory_format=layout).uniform_().requires_grad_(c > 1)
        w = (0.1 * torch.randn(64, c, 3, 3)).requires_grad_()
        side = (s + 1) // 2
        grad = torch.empty(batch, 64, side, side, memory_format=layout).uniform_()
        times = []
        for r in range(repeats + 1):
            t0 = time.thread_time()
            F.conv2d(x, w, stride=2, padding=1).backward(grad)
            if r:
                times.append(time.thread_time() - t0)
        out[f"conv{i}"] = conv_flops(batch, c, s, backward=True) / statistics.median(times) / 1e9
    return out


def report_conv_bound(timing: dict[str, dict[str, float]], names: list[str]) -> None:
    """Print the machine's conv throughput in both layouts and what it implies for ANIL."""
    rates = {"channels-first": conv_throughput(), "channels-last": conv_throughput(channels_last=True)}
    best = {k: max(r[k] for r in rates.values()) for k in rates["channels-first"]}
    per_layer = anil_conv_flops()
    flops = sum(per_layer.values())
    # ANIL's convolutions alone at the best rate per layer: a lower bound on an ANIL iteration
    # for any implementation built on these kernels
    floor = sum(f / (best[layer] * 1e9) for layer, f in per_layer.items())
    for layout, rate in rates.items():
        print(
            f"\nconv4 conv forward+backward throughput, batch 600, {layout} (GFLOP/s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in rate.items())
        )
    print(
        f"ANIL conv FLOPs per iteration: {flops / 1e9:.1f} GFLOP; at the best rate per layer "
        f"({flops / floor / 1e9:.0f} GFLOP/s overall) they alone take {floor:.3f} s"
    )
    for seconds, name in sorted((timing[n]["cpu_s"], n) for n in names if n.startswith("anil/")):
        achieved = flops / seconds / 1e9
        print(f"  {name}: {seconds:.3f} s, {achieved:.0f} GFLOP/s = {floor / seconds:.0%} of that bound")
    if "anil/baseline" in timing:
        print(
            f"  so no implementation on these kernels can be more than {timing['anil/baseline']['cpu_s'] / floor:.2f}x "
            "faster than anil/baseline, even with batch norm, ReLU, the head and all copies free"
        )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument(
        "--chunk", type=int, default=DEFAULT_CHUNK, help="tasks per chunk for the grouped and hybrid paths"
    )
    parser.add_argument("--no-reuse-memory", action="store_true", help="leave glibc's allocator thresholds alone")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-peak", action="store_true", help="skip the convolution throughput measurement")
    parser.add_argument("--only", default="", help="comma-separated algorithms (maml, fomaml, anil)")
    parser.add_argument(
        "--paths",
        default=",".join(PATHS),
        help=f"comma-separated execution paths of ours (default: all, {','.join(PATHS)})",
    )
    parser.add_argument(
        "--variant",
        choices=sorted(SETTINGS),
        default="omniglot",
        help="data set shapes and reference settings (default: omniglot, the issue's benchmark)",
    )
    parser.add_argument("--rss-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_variant(args.variant)
    settings = configure_cpu(threads=1, flush_denormal=True, reuse_memory=not args.no_reuse_memory)
    if args.rss_case:
        _rss_case(args.rss_case, args.chunk)
        return
    wanted = set(filter(None, args.only.split(","))) or set(INNER)
    paths = tuple(filter(None, args.paths.split(",")))
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown paths {unknown}; choose from {PATHS}")
    names = [n for n in cases(args.chunk, paths) if n.split("/")[0] in wanted]
    print(f"torch {torch.__version__}, {settings}, chunk={args.chunk}, rounds={args.rounds}", file=sys.stderr)
    agreement = check_agreement(args.chunk, paths)
    print(
        f"meta-gradients of every case agree with the baseline's to {agreement:.1e} (relative, float64)",
        file=sys.stderr,
    )
    timing = time_cases(names, args.rounds, args.chunk)
    memory = {} if args.no_memory else {n: peak_rss(n, args.chunk, not args.no_reuse_memory) for n in names}
    print(f"\nmeta-gradients agree with the baseline's to {agreement:.1e} (max relative difference, float64, 4 tasks)")
    print(
        f"{VARIANT}: 5-way 1-shot, {QUERIES} queries, meta-batch {TASKS}, {STEPS} steps, lr {LR}; {settings};"
        f" chunk {args.chunk}"
    )
    print(
        "| case | CPU s/iter | wall s/iter | speed-up vs baseline | peak RSS MB | above start MB | memory vs baseline"
        " | tensors' peak MB | tensors vs baseline |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        base = f"{name.split('/')[0]}/baseline"
        speed = timing[base]["cpu_s"] / timing[name]["cpu_s"]
        mem, nan = memory.get(name, {}), float("nan")
        mem_ratio, live_ratio = ((mem[k] / memory[base][k] if mem else nan) for k in ("above_start_mb", "live_mb"))
        print(
            f"| {name} | {timing[name]['cpu_s']:.3f} | {timing[name]['wall_s']:.3f} | {speed:.2f}x |"
            f" {mem.get('peak_mb', nan):.0f} | {mem.get('above_start_mb', nan):.0f} | {mem_ratio:.2f} |"
            f" {mem.get('live_mb', nan):.1f} | {live_ratio:.2f} |"
        )
    if not args.no_peak and "anil" in wanted and VARIANT == "omniglot":
        report_conv_bound(timing, names)


if __name__ == "__main__":
    main()
