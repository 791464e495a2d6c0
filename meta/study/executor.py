"""Running the independent jobs of a stage (:class:`Job`, :class:`JobRunner`), longest first,
with a progress bar: in this process (one worker), or on any :class:`concurrent.futures.Executor`.

- **Local** (the default; nothing to start): the standard library's
  :class:`~concurrent.futures.ProcessPoolExecutor` (:func:`local_pool`). Its workers are started
  by a ``forkserver`` that preloads :mod:`meta.study.jobs` (the job functions), load a data set
  once, and end when the main process is gone (even after a SIGKILL), so that no orphan keeps
  training.
- **A Dask cluster** (``--scheduler tcp://HOST:PORT``): ``Client(address).get_executor()``
  (:mod:`meta.study.cluster`), the same jobs on a lab's workers (Slurm or PBS through
  dask-jobqueue).

Every job runs through :func:`run_job`: one torch thread with denormals flushed (in the thread
that computes: Dask runs jobs in a worker thread), and a check that the output folder is there,
which a worker on another machine sees only on a shared file system. Jobs are idempotent and
write atomically (a training resumes from its checkpoint, a finished evaluation or snapshot is
not recomputed), so a job whose worker died is simply run again: the Dask scheduler does it by
itself; a local pool whose worker died stops with an error naming the stage and its jobs, and
rerunning the command continues. The results do not depend on where or on how many workers the
jobs run.

Imports: :mod:`meta.run.cpu`, :mod:`meta.study.jobs`, :mod:`meta.study.plan`, :mod:`repsim.progress`.
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta.study import jobs as job_functions
from meta.study.plan import ReproductionError
from meta.validation import check_int
from repsim.progress import progress_bar


@dataclass(frozen=True)
class Job:
    """One independent piece of work of a stage.

    Attributes:
        key: unique name within the stage (shown in the plan and in errors).
        fn: a module-level function (picklable, run in a worker process).
        kwargs: its keyword arguments (plain data).
        cost: relative duration, to start the longest jobs first.
        watch: a training run's ``checkpoint.json``, read to show the run's progress.
        iterations: the run's iterations (with ``watch``).
    """

    key: str
    fn: Callable[..., Any]
    kwargs: Mapping[str, Any]
    cost: float = 1.0
    watch: str | None = None
    iterations: int = 0


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _init_worker(parent: int | None = None) -> None:
    """One torch thread (and the other CPU settings) in a worker; with ``parent``, a daemon
    thread ends the worker when that process is gone, so that stopping the pipeline (even with
    SIGKILL) leaves no orphan still training (the runs resume from their checkpoints)."""
    from meta.run.cpu import configure_cpu

    configure_cpu(threads=1)
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int, interval: float = 1.0) -> None:
    """End this process (exit status 1) once process ``parent`` no longer exists."""
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, owned by someone else
            pass
        time.sleep(interval)


def local_pool(workers: int) -> futures.ProcessPoolExecutor:
    """The standard library's process pool of ``workers`` processes, started by a forkserver
    that preloads the job functions, each worker ending with this process (:func:`_init_worker`)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([job_functions.__name__])
    return futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))


def run_job(fn: Callable[..., Any], kwargs: Mapping[str, Any], reach: str | None = None) -> Any:
    """``fn(**kwargs)`` in a worker: one torch thread, denormals flushed in this thread, and
    (with ``reach``, a file of the output folder) a :class:`ReproductionError` when this worker
    cannot see the output folder."""
    from meta.run.cpu import configure_cpu

    if reach is not None and not Path(reach).is_file():
        raise ReproductionError(
            f"worker {socket.gethostname()} (process {os.getpid()}) cannot see {reach!r}: the output folder must be"
            " on a file system that every worker and this machine share"
        )
    configure_cpu(threads=1)
    return fn(**kwargs)


class JobRunner:
    """Runs the jobs of a stage, longest first, with a progress bar: in this process
    (``workers == 1`` and no ``executor``), else on the executor that ``executor()`` returns
    (default: :func:`local_pool` of ``workers`` processes), made on first use and reused by later
    stages. ``out``: the output folder, whose ``preset.json`` every job checks it can see."""

    def __init__(
        self,
        workers: int = 1,
        *,
        progress: bool = True,
        executor: Callable[[], futures.Executor] | None = None,
        out: str | Path | None = None,
    ) -> None:
        self.workers, self.progress = check_int("jobs", workers, minimum=1), progress
        self._make = executor or (lambda: local_pool(self.workers))
        self._here = executor is None and self.workers == 1
        self._reach = None if out is None else str(Path(out) / "preset.json")
        self._executor: futures.Executor | None = None

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Shut the executor down (waiting for running jobs; queued ones were cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def executor(self) -> futures.Executor:
        """The executor (made on first use)."""
        if self._executor is None:
            self._executor = self._make()
        return self._executor

    def run(self, stage: str, jobs: Sequence[Job]) -> dict[str, Any]:
        """``{job.key: result}``; the first failure cancels the rest and is raised with the
        stage and job named."""
        ordered = sorted(jobs, key=lambda j: -j.cost)
        bar = progress_bar(
            total=len(jobs),
            desc=stage,
            unit="job",
            enabled=self.progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} jobs [{elapsed}<{remaining}]",
        )
        try:
            if self._here:
                return self._run_here(stage, ordered, bar)
            return self._run_pool(stage, ordered, bar)
        finally:
            bar.close()

    def _run_here(self, stage: str, jobs: Sequence[Job], bar: Any) -> dict[str, Any]:
        """The jobs one after the other in this process: ``{job.key: result}``."""
        _init_worker()
        results = {}
        for job in jobs:
            results[job.key] = _call(stage, job)
            bar.update(1)
        return results

    def _run_pool(self, stage: str, jobs: Sequence[Job], bar: Any) -> dict[str, Any]:
        """The jobs on the executor: ``{job.key: result}``; the bar counts running training
        jobs by their checkpoints."""
        executor = self.executor()
        pending = {executor.submit(run_job, job.fn, job.kwargs, self._reach): job for job in jobs}
        results: dict[str, Any] = {}
        try:
            while pending:
                finished, _ = futures.wait(pending, timeout=2.0, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        results[job.key] = future.result()
                    except Exception as err:
                        raise _job_error(stage, job, err) from err
                bar.n = len(results) + sum(_partial(job) for job in pending.values())
                bar.refresh()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        return results


def _call(stage: str, job: Job) -> Any:
    """The job's result, computed here (its errors as :func:`_job_error` says)."""
    try:
        return job.fn(**job.kwargs)
    except Exception as err:
        raise _job_error(stage, job, err) from err


def _job_error(stage: str, job: Job, err: Exception) -> Exception:
    """The job's ValueError, or the death of the worker process that ran it, as a
    :class:`ReproductionError` with the stage and job named (other errors pass unchanged)."""
    if isinstance(err, ValueError):
        return ReproductionError(f"stage {stage}, job {job.key}: {err}")
    if isinstance(err, BrokenProcessPool):
        return ReproductionError(
            f"stage {stage}, job {job.key}: a worker process died while the stage ran (killed, or out of"
            " memory?); what finished is kept: rerun the same command to continue"
        )
    if type(err).__name__ == "KilledWorker":  # dask.distributed: the job's workers kept dying
        return ReproductionError(
            f"stage {stage}, job {job.key}: every Dask worker that ran it died ({err}); what finished is kept:"
            " check the workers' memory and logs, then rerun the same command to continue"
        )
    return err


def _partial(job: Job) -> float:
    """Fraction of a running training job done (from its ``checkpoint.json``), else 0."""
    if job.watch is None or not job.iterations:
        return 0.0
    try:
        return min(1.0, json.loads(Path(job.watch).read_text())["iteration"] / job.iterations) * 0.999
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
