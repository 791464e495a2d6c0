"""Similarity across torch.distributed ranks: the accumulators all-reduce (in rank order, as
tensors) to the values of one accumulator fed everything, and `torchrun -m repsim compare` writes
the CSV of one process. Real processes on the gloo backend, over the loopback address."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import toy_models

from repsim.distributed import shard_rows
from repsim.measures import StreamingCCA, StreamingCKA
from repsim.weights import save_state_dict

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def test_batches_are_dealt_out_in_turn_and_every_rank_needs_one():
    rows = [shard_rows(10, 3, rank, 3).tolist() for rank in range(3)]
    assert rows == [[0, 1, 2, 9], [3, 4, 5], [6, 7, 8]]
    assert sorted(sum(rows, [])) == list(range(10))
    with pytest.raises(ValueError, match=r"make 1 batch\(es\) for 2 ranks.*at most 5.*--batch-size"):
        shard_rows(10, 10, 0, 2)


WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch, torch.distributed as dist
    from repsim.measures import StreamingCCA, StreamingCKA

    rank, world, store, out, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) + 1e3
    Y = X[:, :3] @ rng.standard_normal((3, 5)) + rng.standard_normal((300, 5))
    mine = {0: range(0, 120), 1: range(120, 120), 2: range(120, 300)}[rank]  # rank 1 has no data
    if mode == "mismatch" and rank == 2:
        Y = Y[:, :4]
    accumulators = {
        "cka": StreamingCKA(), "debiased_cka": StreamingCKA(debiased=True), "mean_cca": StreamingCCA(),
        "svcca": StreamingCCA("svcca", keep=0.9), "pwcca": StreamingCCA("pwcca"),
    }
    result = {}
    try:
        for name, acc in accumulators.items():
            for start in range(mine.start, mine.stop, 32):
                stop = min(start + 32, mine.stop)
                acc.update(X[start:stop], Y[start:stop])
            acc.all_reduce()
            result[name] = {"value": float(acc.result()), "n": acc.n, "batches": acc.batches,
                            "sxy": acc.sxy.flatten().tolist(), "mean_x": acc.mean_x.tolist()}
    except ValueError as err:
        result = {"error": str(err)}
    json.dump(result, open(out, "w"))
    dist.destroy_process_group()
    """
)


def run_ranks(tmp_path: Path, world: int, mode: str) -> list[dict]:
    """Run :data:`WORKER` on ``world`` gloo ranks; each rank's JSON result."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)}
    store = tmp_path / f"store-{mode}"
    outs = [tmp_path / f"rank{r}-{mode}.json" for r in range(world)]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), str(world), str(store), str(outs[r]), mode], env=env)
        for r in range(world)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * world
    return [json.loads(out.read_text()) for out in outs]


def test_all_reduce_equals_one_accumulator_fed_everything(tmp_path):
    results = run_ranks(tmp_path, 3, "ok")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) + 1e3
    Y = X[:, :3] @ rng.standard_normal((3, 5)) + rng.standard_normal((300, 5))
    single = {
        "cka": StreamingCKA(),
        "debiased_cka": StreamingCKA(debiased=True),
        "mean_cca": StreamingCCA(),
        "svcca": StreamingCCA("svcca", keep=0.9),
        "pwcca": StreamingCCA("pwcca"),
    }
    for name, acc in single.items():
        acc.update(X, Y)
        for rank in results:  # every rank holds the same statistics, bit for bit
            assert rank[name] == results[0][name], name
        got = results[0][name]
        assert got["n"] == 300 and got["batches"] == 4 + 6  # rank 0: 4 batches, rank 2: 6, rank 1: none
        assert got["value"] == pytest.approx(float(acc.result()), abs=1e-10), name
        np.testing.assert_allclose(got["sxy"], acc.sxy.flatten().numpy(), rtol=1e-10, atol=1e-10 * 300)
        np.testing.assert_allclose(got["mean_x"], acc.mean_x.numpy(), rtol=1e-13)


def test_all_reduce_refuses_ranks_with_different_neurons_on_every_rank(tmp_path):
    results = run_ranks(tmp_path, 3, "mismatch")
    for rank in results:
        assert "different numbers of neurons (dx, dy): [(6, 4), (6, 5)]" in rank["error"]


def test_all_reduce_of_one_rank_changes_nothing():
    import torch.distributed as dist

    x = torch.randn(50, 4, dtype=torch.float64)
    acc = StreamingCKA().update(x[:20], x[:20, :2]).update(x[20:], x[20:, :2])
    before = (float(acc.result()), acc.n, acc.batches)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert (float(acc.all_reduce().result()), acc.n, acc.batches) == before
        assert StreamingCKA().all_reduce().n == 0  # no data anywhere: still none
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_write_the_csv_of_one_process(tmp_path):
    a, b = toy_models.convnet(seed=1), toy_models.convnet(seed=2)  # batch norm on batch statistics
    save_state_dict(tmp_path / "a.safetensors", a.state_dict())
    save_state_dict(tmp_path / "b.safetensors", b.state_dict())
    np.savez(tmp_path / "x.npz", x=toy_models.randn(100, 1, 8, 8).numpy())
    args = ["compare", "--model", "toy_models:convnet", "--a", "a.safetensors", "--b", "b.safetensors"]
    args += ["--inputs", "x.npz", "--layers", "conv*,head", "--measures", "cka,debiased_cka,cca,svcca,pwcca"]
    args += ["--batch-size", "16", "--no-progress"]  # 7 forward batches: 4 on rank 0, 3 on rank 1
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}

    def run(command):
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    one = run([sys.executable, "-m", "repsim", *args, "--out", "one"])
    assert one.returncode == 0, one.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    two = run([*launcher, "--master-port", str(free_port()), "-m", "repsim", *args, "--out", "two"])
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote two/similarity.csv") == 1  # rank 0 alone writes
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    first = pd.read_csv(tmp_path / "one" / "similarity.csv", keep_default_na=False)
    second = pd.read_csv(tmp_path / "two" / "similarity.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(first.drop(columns="value"), second.drop(columns="value"))
    np.testing.assert_allclose(second["value"], first["value"], rtol=0, atol=1e-10)
    assert first["value"].notna().sum() >= 3 * 5 and len(first) == 3 * 3 * 5
    settings = json.loads((tmp_path / "two" / "settings.json").read_text())
    assert settings["ranks"] == 2
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporaries left behind


def test_distributed_compare_needs_a_group_and_streaming_measures():
    from repsim.compare import compare_models

    a, b = toy_models.mlp(seed=1), toy_models.mlp(seed=2)
    x = toy_models.randn(40, 6)
    with pytest.raises(ValueError, match="needs an initialised torch.distributed process group"):
        compare_models(a, b, x, layers_a="fc1", distributed=True, progress=False)
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match=r"measures \['procrustes'\] need every activation in one process"):
            compare_models(a, b, x, layers_a="fc1", measures="cka,procrustes", distributed=True, progress=False)
        alone = compare_models(
            a, b, x, layers_a="fc*", measures="cka,cca", batch_size=8, distributed=True, progress=False
        )
    finally:
        dist.destroy_process_group()
    plain = compare_models(a, b, x, layers_a="fc*", measures="cka,cca", batch_size=8, progress=False)
    pd.testing.assert_frame_equal(alone, plain)
