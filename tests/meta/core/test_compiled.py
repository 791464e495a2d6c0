"""The "compiled" execution path's bookkeeping: one program per model, inner loop and task shape,
dropped with the model; packages cached by graph; a clear error where the compiler is missing.
(Its meta-gradients are checked against the plain autograd loop with every other path in
``tests/meta/core/test_inner.py``, and the training process loading no compiler there too.)"""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import pytest
import torch

from meta.core import compiled
from meta.core.inner import InnerLoop
from meta.core.models import conv4
from meta.core.paths import meta_gradient

STEP = InnerLoop(1, 0.3)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return conv4(2, in_channels=1, filters=4, image_size=8).double()


def tasks(queries: int, count: int = 2) -> SimpleNamespace:
    g = torch.Generator().manual_seed(queries)
    return SimpleNamespace(
        support_x=torch.rand(count, 2, 1, 8, 8, generator=g, dtype=torch.float64),
        support_y=torch.arange(2).expand(count, -1),
        query_x=torch.rand(count, queries, 1, 8, 8, generator=g, dtype=torch.float64),
        query_y=torch.arange(2).repeat(queries // 2).expand(count, -1),
    )


def programs(model) -> list[compiled.TaskProgram]:
    return list(compiled._PROGRAMS[model].values())


def test_one_program_per_inner_loop_and_task_shape():
    model = tiny_model()
    meta_gradient(model, tasks(4), STEP, path="compiled")
    meta_gradient(model, tasks(4), STEP, path="compiled")
    assert len(programs(model)) == 1
    meta_gradient(model, tasks(4), InnerLoop(1, 0.3, adapt=frozenset({"head"})), path="compiled")
    meta_gradient(model, tasks(6), STEP, path="compiled")
    assert len({p.package for p in programs(model)}) == 3


def test_a_cached_package_serves_another_model_of_the_same_graph():
    """The package is keyed by the graph, not the weights: a second model with other weights
    loads the first one's package, untouched, and gets its own (different) meta-gradient."""
    first, second = tiny_model(0), tiny_model(1)
    meta_gradient(first, tasks(4), STEP, path="compiled")
    package = programs(first)[0].package
    written = package.stat().st_mtime_ns
    meta_gradient(second, tasks(4), STEP, path="compiled")
    assert programs(second)[0].package == package and package.stat().st_mtime_ns == written
    assert not torch.equal(first.head.weight.grad, second.head.weight.grad)


def test_programs_go_with_their_model():
    model = tiny_model()
    meta_gradient(model, tasks(4), STEP, path="compiled")
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the cache holds its programs weakly and they do not refer to it


def test_a_missing_compiler_names_the_other_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
    monkeypatch.setenv("FEATURE_REUSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="use path 'hybrid' or 'loop'"):
        meta_gradient(tiny_model(), tasks(8), STEP, path="compiled")
    assert compiled.cache_dir() == tmp_path / "cache" / "compiled"
    assert not list(compiled.cache_dir().glob("*.pt2"))


def test_other_devices_are_refused_before_compiling():
    model = tiny_model()
    with pytest.raises(ValueError, match="runs on CPUs"):
        compiled.TaskProgram(
            model,
            STEP,
            0.5,
            [t.to("meta") for t in (torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(4, 1, 8, 8), torch.zeros(4))],
        )


def test_models_with_buffers_are_refused():
    """A buffer's value would be fixed into the compiled program, stale once it changes."""
    model = tiny_model()
    model.register_buffer("running", torch.zeros(3))
    with pytest.raises(ValueError, match=r"without buffers.*\['running'\]"):
        meta_gradient(model, tasks(4), STEP, path="compiled")


def test_models_other_than_conv4_are_refused_by_name():
    """The child process rebuilds the model from conv4's constructor arguments (nothing is
    unpickled), so only ``meta.core.models.Conv4`` itself can be compiled."""

    class Wider(type(tiny_model())):
        pass

    model = tiny_model()
    model.__class__ = Wider
    with pytest.raises(ValueError, match="compiles meta.core.models.Conv4 models, not Wider"):
        meta_gradient(model, tasks(4), STEP, path="compiled")


def test_a_conv4_changed_after_construction_is_refused():
    """The child rebuilds conv4 from its constructor arguments; a model whose parameters no
    longer match them (here a replaced head) is refused instead of compiled wrongly."""
    model = tiny_model()
    model.head = torch.nn.Linear(model.feature_dim, 3).double()
    with pytest.raises(RuntimeError, match="not those of the conv4 its recipe builds"):
        meta_gradient(model, tasks(4), STEP, path="compiled")
