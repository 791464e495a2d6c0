"""One task's meta-gradient as a single compiled program: the ``"compiled"`` execution path of
:func:`meta.core.paths.meta_gradient`.

What is compiled is :func:`task_meta_gradient`, the ``"loop"`` path's work for one task written
as a pure function::

    (theta, support_x, support_y, query_x, query_y)
        -> (scale * dL/dtheta, query loss, query accuracy, support loss and accuracy before)

with ``L = CE(query; adapt(theta, support))`` and ``adapt`` the one inner loop of
:mod:`meta.core.inner`. It is traced once per model, inner loop and task shape with
``torch.fx``'s ``make_fx`` on fake tensors (shapes and strides, no data), which records every
operation that runs, the inner loop's ``create_graph`` backward and the backward through it
included: the result is a graph with no autograd left in it, the whole second-order computation
written out. (Nothing in the traced code branches on tensor values; a branch on shapes is
fixed per program, which is why a program belongs to one task shape.) Inductor then compiles
that graph ahead of time (AOTInductor): it fuses batch norm, ReLU and the many small elementwise
operations of the support sets into a few loops, plans the buffers and calls every kernel from
C++; the convolutions and matrix products stay oneDNN's. The graph has the same operations as
the ``"loop"`` path in the same order; the fused loops sum in another order, so the results
agree with it to float rounding (checked in float64 against a plain autograd loop,
``tests/meta/core/test_inner.py``).

Where: tracing and compiling run in a child process (``python -m meta.core.compiled SPEC``, ``SPEC``
the JSON of :func:`_spec`: the conv4's recipe, the inner loop and the input shapes), which
writes the compiled package into a cache folder (:func:`cache_dir`, keyed by the traced graph,
torch's version and the thread count, written atomically); the training process only loads it
through torch's C++ runtime (``torch._C._aoti``). So the training process never imports the
compiler (inductor, dynamo and sympy, which are large in memory) and its memory is the
iteration's. The first program of a graph takes a while to compile (a C++ compiler is needed); a
cached one loads quickly. CPUs only.

Why: on CPUs the per-task operations of a 5-image support set are too small for their per-call
cost, and fusing them is what the other paths cannot do. What it gains, and the compile time, are
measured in ``benchmarks/README.md`` (``bench_maml.py``).

Imports: :mod:`meta.core` and :mod:`meta.data.cache` (the cache folder) only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from meta.core.inner import InnerLoop, inner_loop, module_forward, task_accuracies, task_losses
from meta.core.models import Conv4, Variant, images_layout
from meta.data.cache import cache_root

__all__ = ["TaskProgram", "cache_dir", "compiled_task_program", "graph_inputs", "task_meta_gradient"]

# Bump when the package format or the way programs are built changes (part of the cache key).
_FORMAT = "1"

# (model) -> {(inner, scale, shapes): TaskProgram}; weak, so a model's programs go with it.
_PROGRAMS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, TaskProgram]] = weakref.WeakKeyDictionary()


def cache_dir() -> Path:
    """Where compiled packages are kept: ``compiled/`` in the project's cache folder
    (:func:`meta.data.cache.cache_root`: ``$FEATURE_REUSE_CACHE``, else
    ``~/.cache/feature-reuse``)."""
    return cache_root() / "compiled"


def task_meta_gradient(
    model: nn.Module,
    names: Sequence[str],
    inner: InnerLoop,
    scale: float,
    params: Sequence[Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
) -> tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor]:
    """One task's scaled meta-gradient and metrics, a pure function of its tensor arguments.

    Args:
        model: a staged model (:class:`meta.core.models.Conv4`); only its structure is used, its
            parameters are ``params``.
        names: the model's parameter names, in the order of ``params``.
        inner: the training inner loop.
        scale: the task's weight in the meta-loss (``1 / T`` for a meta-batch of ``T`` tasks).
        params: the meta-parameters, detached.
        support_x: ``(n_s, C, H, W)``; ``support_y``: ``(n_s,)``; ``query_x``: ``(n_q, C, H, W)``;
            ``query_y``: ``(n_q,)``.

    Returns:
        ``scale * dL/dtheta`` per name (zeros for a parameter the loss does not use), and the
        query loss, query accuracy, support loss and support accuracy before adaptation, each a
        0-d tensor.
    """
    leaves = {k: p.detach().requires_grad_() for k, p in zip(names, params)}
    adapted = inner_loop(module_forward(model), leaves, tuple(model.layers), support_x, support_y, inner)
    logits = adapted.query_forward(query_x)
    loss = task_losses(logits, query_y)
    grads = torch.autograd.grad(loss * scale, list(leaves.values()), allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves.values(), grads)]
    return (
        grads,
        loss.detach(),
        task_accuracies(logits, query_y),
        adapted.support_loss_before,
        adapted.support_accuracy_before,
    )


def graph_inputs(task: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """``(support_x, support_y, query_x, query_y)`` as the compiled programs take them: the images
    channels-last (:func:`meta.core.models.images_layout`). The strides of a graph's inputs are the
    only ones inductor keeps; of a 1-channel image made channels-last inside the graph it keeps
    the channels-first strides, and oneDNN then runs conv1 channels-first and converts its
    gradients, a measurable part of an iteration."""
    support_x, support_y, query_x, query_y = task
    return images_layout(support_x), support_y, images_layout(query_x), query_y


class TaskProgram:
    """:func:`task_meta_gradient` for one model, inner loop, scale and task shape, compiled (in a
    child process, or from the cache) and loaded; call it with ``(params, task)``, ``task`` =
    ``(support_x, support_y, query_x, query_y)``, CPU tensors shaped like the example."""

    def __init__(self, model: nn.Module, inner: InnerLoop, scale: float, example: Sequence[Tensor]) -> None:
        if any(t.device.type != "cpu" for t in (*model.parameters(), *example)):
            raise ValueError(
                "the 'compiled' path runs on CPUs; use path 'hybrid', 'grouped' or 'loop' on other devices"
            )
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            raise ValueError(
                f"the 'compiled' path needs a model without buffers (their values would be fixed "
                f"into the compiled program); this one has {buffers}"
            )
        self.package = build_package(model, inner, scale, example)
        # run_single_threaded: the calling thread runs the program (no runner pool, no locks;
        # faster than the pool in bench_maml.py)
        self._runner = torch._C._aoti.AOTIModelPackageLoader(str(self.package), "model", True, 1, -1)
        self._params = sum(1 for _ in model.parameters())

    def __call__(
        self, params: Sequence[Tensor], task: Sequence[Tensor]
    ) -> tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor]:
        outputs = self._runner.run([*params, *graph_inputs(task)])
        grads, (loss, accuracy, loss_before, accuracy_before) = outputs[: self._params], outputs[self._params :]
        return grads, loss, accuracy, loss_before, accuracy_before


def build_package(model: nn.Module, inner: InnerLoop, scale: float, example: Sequence[Tensor]) -> Path:
    """The compiled package of :func:`task_meta_gradient` for ``model``, ``inner``, ``scale`` and
    tasks shaped like ``example``: traced and compiled by a child process running this module
    (or found in :func:`cache_dir` by it). The child is told what to build in JSON
    (:func:`_spec`: the conv4's recipe, the inner loop, the inputs' shapes, strides and
    dtypes), imports what this process can (same ``sys.path``) and uses its thread count."""
    spec = json.dumps(_spec(model, inner, scale, graph_inputs(example)))
    print(
        f"meta: compiling the meta-gradient for tasks of shape {_shape_text(example)} "
        "(about a minute on one core, once per graph and machine; cached)",
        file=sys.stderr,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-m", "meta.core.compiled", spec], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            "the 'compiled' path could not build the meta-gradient's program (AOTInductor also needs a "
            f"working C++ compiler); use path 'hybrid' or 'loop' instead. The child process said:\n{tail}"
        )
    return Path(done.stdout.strip().splitlines()[-1])


def _spec(model: nn.Module, inner: InnerLoop, scale: float, inputs: Sequence[Tensor]) -> dict:
    """What the child needs to rebuild the traced function, as JSON-ready data: the conv4's
    constructor arguments (its weights do not change the graph), the parameters' names, shapes
    (checked against the rebuilt model's) and dtype, the inner
    loop, the scale, the thread count and each input's shape, strides and dtype. Only
    :class:`meta.core.models.Conv4` itself can be described so (ValueError otherwise: use another
    path for other models)."""
    if type(model) is not Conv4:
        raise ValueError(
            f"the 'compiled' path compiles meta.core.models.Conv4 models, not {type(model).__name__}; "
            "use path 'hybrid' or 'loop' for other models"
        )
    return {
        "conv4": {
            "ways": model.ways,
            "in_channels": model.conv1.conv.in_channels,
            "variant": asdict(model.variant),
            "batch_norm": model.batch_norm,
            "padding": model.padding,
        },
        "params": [[name, list(p.shape)] for name, p in model.named_parameters()],
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "inner": inner.as_dict(),
        "scale": float(scale),
        "threads": torch.get_num_threads(),
        "inputs": [
            {"shape": list(t.shape), "stride": list(t.stride()), "dtype": str(t.dtype).removeprefix("torch.")}
            for t in inputs
        ],
    }


def _shape_text(tensors: Sequence[Tensor]) -> str:
    return ", ".join("x".join(map(str, t.shape)) for t in tensors)


def compiled_task_program(model: nn.Module, inner: InnerLoop, scale: float, task: Sequence[Tensor]) -> TaskProgram:
    """The :class:`TaskProgram` of ``model`` for ``inner``, ``scale`` and tasks shaped like
    ``task`` (``support_x, support_y, query_x, query_y``), built at its first request."""
    params = list(model.parameters())
    key = (
        inner,
        float(scale),
        tuple((tuple(t.shape), t.dtype, t.device) for t in (*params, *task)),
    )
    programs = _PROGRAMS.setdefault(model, {})
    if key not in programs:
        programs[key] = TaskProgram(model, inner, scale, task)
    return programs[key]


# --------------------------------------------------------------------------------------------
# The child process: trace, compile into the cache, print the package's path
# --------------------------------------------------------------------------------------------


def _graph_key(graph: torch.fx.GraphModule, threads: int) -> str:
    """SHA-256 of what decides the compiled code: the graph's operations and scalar constants
    (its code), the values of its tensor constants, the shapes, strides and dtypes of its
    inputs, torch's version, the thread count the kernels are generated for, and
    :data:`_FORMAT`."""
    nodes = graph.graph.nodes
    inputs = [
        (tuple(v.shape), tuple(v.stride()), str(v.dtype))
        for v in (n.meta["val"] for n in nodes if n.op == "placeholder")
    ]
    digest = hashlib.sha256(repr((graph.code, inputs, torch.__version__, threads, _FORMAT)).encode())
    for node in nodes:
        if node.op == "get_attr":
            digest.update(getattr(graph, node.target).detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _build(spec: dict) -> Path:
    """Trace and compile the program that ``spec`` (:func:`_spec`) describes, unless cached; the
    package's path."""
    from torch.fx.experimental.proxy_tensor import make_fx

    torch.set_num_threads(spec["threads"])
    recipe, dtype = spec["conv4"], getattr(torch, spec["dtype"])
    model = Conv4(
        recipe["ways"],
        recipe["in_channels"],
        Variant(**recipe["variant"]),
        recipe["batch_norm"],
        head_init="xavier",
        padding=recipe["padding"],
    ).to(dtype)
    inner = InnerLoop.from_dict(spec["inner"])
    names = [k for k, _ in model.named_parameters()]
    rebuilt = [[name, list(p.shape)] for name, p in model.named_parameters()]
    if rebuilt != spec["params"]:
        raise ValueError(
            f"the model's parameters {spec['params']} are not those of the conv4 its recipe builds: {rebuilt}"
        )

    def program(params, support_x, support_y, query_x, query_y):
        return task_meta_gradient(model, names, inner, spec["scale"], params, support_x, support_y, query_x, query_y)

    params = [p.detach() for p in model.parameters()]
    example = [
        torch.empty_strided(i["shape"], i["stride"], dtype=getattr(torch, i["dtype"])).zero_() for i in spec["inputs"]
    ]
    graph = make_fx(program, tracing_mode="fake")(params, *example)
    path = cache_dir() / f"{_graph_key(graph, spec['threads'])}.pt2"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        exported = torch.export.export(graph, (params, *example))
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.pt2")
        torch._inductor.aoti_compile_and_package(exported, package_path=str(partial))
        os.replace(partial, path)
    return path


if __name__ == "__main__":
    print(_build(json.loads(sys.argv[1])))
