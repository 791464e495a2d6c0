"""``python -m meta reproduce`` on the standard executor interface: a real Dask scheduler with two
real worker processes (loopback only) runs the tiny plan, one worker killed in the middle, and
writes the CSVs of a local run byte for byte; the errors (an unreachable scheduler, a worker
without the data folder or the output folder, a CUDA device on a machine without one, a crashed
local worker) name the problem and leave no output behind."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from run_outputs import csv_files

import meta.study.cluster
from meta.study.cluster import check_address, worker_problems
from meta.study.executor import Job, JobRunner, run_job
from meta.study.pipeline import reproduce
from meta.study.plan import ReproductionError
from meta.study.presets import TINY

distributed = pytest.importorskip("dask.distributed", reason="the cluster extra (dask[distributed]) is not installed")

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*command: str) -> subprocess.Popen:
    """``dask COMMAND ...`` (this environment's), in its own session so that it stops whole."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dask"), *command],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    """Terminate the process group this test started, then kill what is left of it."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def scheduler() -> str:
    """``tcp://127.0.0.1:PORT`` of a scheduler with two workers of one thread, stopped afterwards."""
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    processes = [start("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")]
    worker = ["worker", address, "--nthreads", "1", "--nworkers", "1", "--memory-limit", "0", "--no-dashboard"]
    processes += [start(*worker, "--host", "127.0.0.1") for _ in range(2)]
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            stop(process)


def kill_a_busy_worker(address: str, out: Path, killed: list[str]) -> None:
    """Once training has started (a run has a checkpoint), SIGKILL the process of a worker that
    is running a job; its nanny starts a fresh one, the scheduler gives the job to a worker."""
    deadline = time.monotonic() + 300
    with distributed.Client(address, timeout=30) as client:
        pids = client.run(os.getpid)
        while time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]
            if busy and list((out / "runs").glob("*/checkpoint.json")):
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.02)


@pytest.mark.slow
def test_a_plan_on_dask_workers_writes_the_csvs_of_a_local_run_even_when_a_worker_dies(scheduler, tmp_path):
    reproduce(TINY, tmp_path / "local", jobs=1, progress=False, echo=lambda _: None)
    out, killed = tmp_path / "cluster", []
    killer = threading.Thread(target=kill_a_busy_worker, args=(scheduler, out, killed), daemon=True)
    killer.start()
    reproduce(TINY, out, scheduler=scheduler, progress=False, echo=lambda _: None)
    killer.join(timeout=60)
    assert killed, "no worker was killed while it ran a job: the test did not interrupt the plan"
    local, cluster = csv_files(tmp_path / "local"), csv_files(out)
    assert sorted(local) == sorted(cluster) and len(local) > 10
    for name, expected in local.items():
        if isinstance(expected, bytes):
            assert cluster[name] == expected, name
        else:
            pd.testing.assert_frame_equal(cluster[name], expected, check_exact=True, obj=name)
    assert not list(out.glob(".reach-*")) and not list(out.glob(".probe-*"))


def test_an_unreachable_scheduler_is_named_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(meta.study.cluster, "CONNECT_SECONDS", 2.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ReproductionError, match=f"cannot reach the Dask scheduler at {address} within 2 s"):
        reproduce(TINY, tmp_path / "out", scheduler=address, progress=False, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_scheduler_address_has_a_form_and_excludes_jobs(tmp_path):
    with pytest.raises(ValueError, match="tcp://HOST:8786, got 'localhost'"):
        check_address("localhost")
    with pytest.raises(ValueError, match="--jobs sizes the local process pool"):
        reproduce(TINY, tmp_path / "out", jobs=2, scheduler="tcp://127.0.0.1:1", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_workers_without_the_data_folder_are_named_and_nothing_is_written(scheduler, tmp_path):
    missing = tmp_path / "no-omniglot-here"
    with pytest.raises(ReproductionError, match=r"2 problem\(s\).*omniglot data folder .*no-omniglot-here.* does not"):
        reproduce(
            "omniglot",
            tmp_path / "out",
            scheduler=scheduler,
            data_roots={"omniglot": str(missing)},
            progress=False,
            echo=lambda _: None,
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_on_workers_without_one_is_named_and_nothing_is_written(scheduler, tmp_path):
    with pytest.raises(ReproductionError, match="CUDA device, but this machine has none"):
        reproduce(TINY, tmp_path / "out", scheduler=scheduler, device="cuda", progress=False, echo=lambda _: None)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="CUDA device, but this machine has none"):
        reproduce(TINY, tmp_path / "local", jobs=1, device="cuda", progress=False, echo=lambda _: None)
    assert not (tmp_path / "local").exists()


def test_a_worker_that_cannot_see_the_output_folder_is_refused(tmp_path):
    """What a worker on another machine finds: a folder of the same name without this
    machine's token file (or no folder), and no preset.json for a job."""
    (tmp_path / "out").mkdir()
    problems = worker_problems(str(tmp_path / "out"), ".reach-0123", {}, "cpu")
    assert problems == [
        f"it does not see the output folder {str(tmp_path / 'out')!r} (this machine's copy): every worker must reach"
        " it on a shared file system, at the same path"
    ]
    (tmp_path / "out" / ".reach-0123").write_text("")
    assert worker_problems(str(tmp_path / "out"), ".reach-0123", {}, "cpu") == []
    with pytest.raises(ReproductionError, match="cannot see .*preset.json.*share"):
        run_job(len, {"obj": ()}, str(tmp_path / "elsewhere" / "preset.json"))


@pytest.mark.slow
def test_a_local_worker_that_dies_is_reported_naming_the_stage():
    crash = Job("crash", functools.partial(os._exit, 9), {})
    error = "stage test, job crash: a worker process died"
    with JobRunner(2, progress=False) as runner, pytest.raises(ReproductionError, match=error):
        runner.run("test", [crash])
