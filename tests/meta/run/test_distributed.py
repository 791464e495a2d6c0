"""Training, evaluation and snapshots shared by torchrun's ranks give the numbers of one process,
bit for bit: every regime, uneven splits (a meta-batch of 3 tasks on 2 ranks, 5 on 3), a killed
rank and a rerun, the world size recorded. Real ``torchrun`` processes on the gloo backend, over
the loopback address, one thread each; the per-regime comparisons share one launch (a worker
script that trains every regime in turn) to keep the start-up costs few."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from test_train import REPO, assert_bitwise_equal, tiny_config, weights

from meta.core.inner import InnerLoop
from meta.core.models import conv4
from meta.core.reduction import share
from meta.core.regimes import MetaLearning, Multiclass, Multitask, NILTraining, RandomFeatures
from meta.data.episodes import EpisodeSampler
from meta.data.synthetic import synthetic_split
from meta.run.evaluate import evaluate_run
from meta.run.snapshot_writer import snapshot_run
from meta.run.train import train

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
ENV = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)}
REGIMES = ("maml", "fomaml", "anil", "multiclass", "multitask", "random", "nil")
#: Columns of metrics.csv that are clock readings.
CLOCKS = ("seconds", "comm_seconds")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(ranks: int, *command: str) -> list[str]:
    """``python -m torch.distributed.run`` with ``ranks`` ranks on this machine, then ``command``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks)]
    return [*launcher, "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *command]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows_without_clocks(folder: Path) -> list[dict]:
    rows = json.loads((folder / "metrics.json").read_text())["rows"]
    return [{k: v for k, v in row.items() if k not in CLOCKS} for row in rows]


def config_file(folder: Path, config) -> Path:
    path = folder / "settings.json"
    path.write_text(json.dumps(config.as_dict()))
    return path


# --------------------------------------------------------------------------- the split


def test_parts_are_dealt_out_in_contiguous_blocks_the_first_ranks_one_more():
    assert [list(share(7, r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [list(share(2, r, 3)) for r in range(3)] == [[0], [1], []]  # a rank may get none
    assert sum((list(share(32, r, 5)) for r in range(5)), []) == list(range(32))


class ThreadRanks:
    """Ranks as threads of this process: an all-gather through shared slots and a barrier."""

    def __init__(self, rank: int, world: int, slots: list, barrier: threading.Barrier) -> None:
        self.rank, self.world, self.slots, self.barrier = rank, world, slots, barrier

    def all_gather(self, local, counts):
        assert local.numel() == counts[self.rank]
        self.slots[self.rank] = local.clone()
        self.barrier.wait()
        out = torch.cat(self.slots)
        self.barrier.wait()
        return out


def step_regime(name: str):
    inner = InnerLoop(1, 0.4)
    return {
        "maml loop": MetaLearning(inner, 5, path="loop"),
        "maml hybrid": MetaLearning(inner, 5, path="hybrid", chunk=2),
        "fomaml grouped": MetaLearning(InnerLoop(1, 0.4, first_order=True), 5, path="grouped", chunk=2),
        "anil hybrid": MetaLearning(InnerLoop(2, 0.4, adapt=frozenset({"head"})), 5, path="hybrid", chunk=2),
        "multitask": Multitask(5),
        "nil": NILTraining(5),
        "multiclass": Multiclass(12, seed=1),
        "random": RandomFeatures(5),
    }[name]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize(
    "name", ["maml loop", "maml hybrid", "fomaml grouped", "anil hybrid", "multitask", "nil", "multiclass", "random"]
)
def test_ranks_sharing_a_step_add_the_gradient_of_one_process_bit_for_bit(name, world):
    """5 tasks (or one minibatch) on 2 or 3 ranks: uneven blocks, and ranks with nothing to do."""
    split = synthetic_split("train")
    regime = step_regime(name)
    torch.manual_seed(0)
    model = conv4(split.n_classes if name == "multiclass" else 3, filters=4)
    batch = regime.batch(EpisodeSampler(split, 3, 1, 2, seed=4), 0)
    alone = copy.deepcopy(model)
    expected = regime.step(alone, batch)
    slots, barrier = [None] * world, threading.Barrier(world)
    copies = [copy.deepcopy(model) for _ in range(world)]
    results: list = [None] * world

    def rank(r: int) -> None:
        torch.set_num_threads(1)
        results[r] = regime.step(copies[r], batch, ThreadRanks(r, world, slots, barrier))

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in range(world):
        assert results[r] == expected
        for (key, ours), theirs in zip(copies[r].named_parameters(), alone.parameters()):
            assert (ours.grad is None) == (theirs.grad is None), key
            assert ours.grad is None or torch.equal(ours.grad, theirs.grad), f"rank {r}: {key}"
    if name == "nil":
        assert alone.head.weight.grad is None  # unused: left as it is, so Adam leaves it alone


# --------------------------------------------------------------------------- torchrun


TRAIN_EVERY_REGIME = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from meta.run.config import from_mapping
    from meta.run.train import train

    dist.init_process_group("gloo")
    for job in json.load(open(sys.argv[1])):
        train(from_mapping(job["config"]), job["out"], distributed=True)
    dist.destroy_process_group()
    """
)


def regime_config(algorithm: str):
    """3 tasks a meta-batch on 2 ranks: an uneven split (hybrid path, chunk 1: three parts)."""
    return tiny_config(
        algorithm=algorithm, iterations=4, meta_batch_size=3, batch_size=16, chunk=1, val_every=2, val_tasks=3
    )


@pytest.fixture(scope="module")
def every_regime(tmp_path_factory) -> Path:
    """Each regime trained by one process here and by two torchrun ranks (one launch)."""
    root = tmp_path_factory.mktemp("regimes")
    jobs = [{"config": regime_config(a).as_dict(), "out": str(root / "two" / a)} for a in REGIMES]
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "worker.py").write_text(TRAIN_EVERY_REGIME)
    run(torchrun(2, str(root / "worker.py"), str(root / "jobs.json")), root)
    for algorithm in REGIMES:
        train(regime_config(algorithm), root / "one" / algorithm)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", REGIMES)
def test_two_ranks_train_the_weights_of_one_process_bit_for_bit(every_regime, algorithm):
    one, two = every_regime / "one" / algorithm, every_regime / "two" / algorithm
    for name in ("final.safetensors", "best.safetensors"):
        assert_bitwise_equal(weights(two / name), weights(one / name))
    assert rows_without_clocks(two) == rows_without_clocks(one)
    segments = json.loads((two / "config.json").read_text())["segments"]
    assert [s["world_size"] for s in segments] == [2]
    assert json.loads((one / "config.json").read_text())["segments"][0]["world_size"] == 1
    comm = [r["comm_seconds"] for r in json.loads((two / "metrics.json").read_text())["rows"] if r["split"] == "train"]
    assert all(c >= 0 for c in comm) and (algorithm == "random" or sum(comm) > 0)
    assert not [p for p in two.rglob("*") if p.name.startswith(".") and p.name != ".lock"]  # no temporaries


def children_by_rank(parent: int) -> dict[int, int]:
    """``{rank: pid}`` of the worker processes torchrun ``parent`` started (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            environ = dict(v.split("=", 1) for v in (entry / "environ").read_text().split("\0") if "=" in v)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in environ:
            found[int(environ["RANK"])] = int(entry.name)
    return found


def checkpoint_iteration(folder: Path) -> int:
    try:
        return json.loads((folder / "checkpoint.json").read_text())["iteration"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's ranks through /proc")
def test_a_killed_rank_ends_the_job_and_the_rerun_resumes_to_the_weights_of_one_process(tmp_path):
    config = tiny_config(iterations=60, meta_batch_size=3, checkpoint_every=2, val_every=30, log_every=5)
    settings = config_file(tmp_path, config)
    train(config, tmp_path / "one")
    command = torchrun(2, "-m", "meta", "train", "--config", str(settings), "--out", "two")
    launch = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while checkpoint_iteration(tmp_path / "two") < 4:
        assert launch.poll() is None and time.monotonic() < deadline, launch.communicate()[1][-2000:]
        time.sleep(0.01)
    os.kill(children_by_rank(launch.pid)[1], signal.SIGKILL)
    _, err = launch.communicate(timeout=120)
    assert launch.returncode != 0, "killing rank 1 did not end the job"
    killed_at = checkpoint_iteration(tmp_path / "two")
    assert 4 <= killed_at < 60, "the run finished before it was killed; the test did not interrupt it"
    again = run(command, tmp_path)
    assert f"(started at {killed_at})" in again.stdout and again.stdout.count("final weights") == 1
    final = "final.safetensors"
    assert_bitwise_equal(weights(tmp_path / "two" / final), weights(tmp_path / "one" / final))
    assert rows_without_clocks(tmp_path / "two") == rows_without_clocks(tmp_path / "one")
    # resumed by one process with more iterations: allowed, recorded as a segment of world size 1
    with pytest.warns(UserWarning, match="world_size: 2 -> 1"):
        train(config.replace(iterations=62), tmp_path / "two")
    segments = json.loads((tmp_path / "two" / "config.json").read_text())["segments"]
    assert [(s["from_iteration"], s["world_size"]) for s in segments] == [(0, 2), (60, 1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(iterations=2), out)
    return out


@pytest.mark.slow
def test_evaluation_on_two_ranks_equals_one_process_and_rank_0_alone_writes(trained):
    done = run(torchrun(2, "-m", "meta", "evaluate", str(trained), "--tasks", "5", "--ablation", "freezing"), trained)
    assert done.stdout.count("written:") == 1
    expected = evaluate_run(trained, tasks=5, ablation="freezing", write=False).as_json()
    written = json.loads((trained / "eval" / f"{expected['name']}.json").read_text())
    assert written == json.loads(json.dumps(expected))
    assert [len(row["per_task"]) for row in written["rows"]] == [5] * 5


def snapshot_files(folder: Path) -> list[Path]:
    """The snapshot's files (not the folder lock's record of its last writer)."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


@pytest.mark.slow
def test_a_snapshot_on_two_ranks_holds_the_files_of_one_process(trained, tmp_path):
    snapshot_run(trained, tmp_path / "one", tasks=3, progress=False)
    run(torchrun(2, "-m", "meta", "snapshot", str(trained), "--tasks", "3", "--out", "two"), tmp_path)
    files = snapshot_files(tmp_path / "one")
    assert files == snapshot_files(tmp_path / "two")
    for name in files:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_training_shared_by_ranks_needs_a_process_group(tmp_path):
    with pytest.raises(ValueError, match="needs an initialised torch.distributed process group"):
        train(tiny_config(), tmp_path / "run", distributed=True)
    assert not (tmp_path / "run").exists()
