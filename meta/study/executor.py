"""Running the independent jobs of a stage (:class:`Job`): in this process, or in a pool of
worker processes (:class:`JobRunner`), longest first, with a progress bar.

Workers are started by a ``forkserver`` that preloads :mod:`meta.study.jobs` (the job
functions), run one torch thread each, load a data set once, and end when the main process is
gone (even after a SIGKILL), so that no orphan keeps training; the runs resume from their
checkpoints. The results do not depend on the number of workers.

Imports: :mod:`meta.run.cpu`, :mod:`meta.study.jobs`, :mod:`meta.study.plan`.
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from meta.study import jobs as job_functions
from meta.study.plan import ReproductionError
from meta.validation import check_int


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


class JobRunner:
    """Runs the jobs of a stage in this process (``workers == 1``) or in a pool of worker
    processes (created on first use, reused by later stages), longest first, with a progress bar."""

    def __init__(self, workers: int, *, progress: bool = True) -> None:
        self.workers, self.progress = check_int("jobs", workers, minimum=1), progress
        self._pool: futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Shut the worker pool down (waiting for running jobs; queued ones are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def pool(self) -> futures.ProcessPoolExecutor:
        """The worker pool (started on first use by a forkserver preloading the job functions)."""
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([job_functions.__name__])
            self._pool = futures.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
            )
        return self._pool

    def run(self, stage: str, jobs: Sequence[Job]) -> dict[str, Any]:
        """``{job.key: result}``; the first failure cancels the rest and is raised with the
        stage and job named."""
        ordered = sorted(jobs, key=lambda j: -j.cost)
        bar = tqdm(
            total=len(jobs),
            desc=stage,
            unit="job",
            disable=not self.progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} jobs [{elapsed}<{remaining}]",
        )
        try:
            if self.workers == 1:
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
        """The jobs in the worker pool: ``{job.key: result}``; the bar counts running training
        jobs by their checkpoints."""
        pool = self.pool()
        pending = {pool.submit(job.fn, **job.kwargs): job for job in jobs}
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
    """The job's ValueError as a :class:`ReproductionError` with the stage and job named (other
    errors pass unchanged)."""
    if isinstance(err, ValueError):
        return ReproductionError(f"stage {stage}, job {job.key}: {err}")
    return err


def _partial(job: Job) -> float:
    """Fraction of a running training job done (from its ``checkpoint.json``), else 0."""
    if job.watch is None or not job.iterations:
        return 0.0
    try:
        return min(1.0, json.loads(Path(job.watch).read_text())["iteration"] / job.iterations) * 0.999
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
