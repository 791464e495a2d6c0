"""The reproduction's jobs on an existing Dask cluster: ``python -m meta reproduce --scheduler
tcp://HOST:PORT`` (:class:`DaskCluster`; the optional ``cluster`` extra installs
``dask[distributed]``).

The jobs reach the workers through Dask's standard executor (``Client(address).get_executor()``,
a :class:`concurrent.futures.Executor`): the same jobs as the local process pool, and the same
files (byte for byte, wall-clock columns aside). The scheduler runs again, on another worker,
the job of a worker that died; the jobs are idempotent and write atomically, so that is all a lost worker costs. A lab
starts the scheduler and workers its own way: by hand (``dask scheduler``, ``dask worker
ADDRESS``), or on Slurm or PBS through dask-jobqueue (``SLURMCluster(...).scale(jobs=N)``, then
``--scheduler`` its ``scheduler_address``; docs/cluster.md).

**Shared file system.** The output folder (run folders, evaluations, snapshots) is written by
the workers and read by this process (the tables and the report), so it must be one folder that
this machine and every worker reach at the same path; the data sets must be at their path on
every worker. Before anything is written, :meth:`DaskCluster.check_workers` asks every worker
(``Client.run``) whether it sees a token file this process puts into the output folder (a folder
of the same name on a worker's own disk does not have it), can write there, has each data folder
and has the device; every job checks the folder again (:func:`meta.study.executor.run_job`), for
workers that join later.

Imports: :mod:`meta.data.registry`, :mod:`meta.study.plan` (``dask.distributed`` inside the
functions, an optional dependency).
"""

from __future__ import annotations

import concurrent.futures as futures
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from meta.data.registry import ROOT_ENV
from meta.study.plan import EXTERNAL_DATA, Plan, ReproductionError

__all__ = ["CONNECT_SECONDS", "DaskCluster", "check_address", "worker_problems"]

#: How long to try to reach the scheduler, and to wait for a first worker, in seconds.
CONNECT_SECONDS = 10.0
WORKER_WAIT_SECONDS = 120.0
_ADDRESS = re.compile(r"(tcp|tls)://[^\s/:]+:\d{1,5}")


def check_address(address: str) -> str:
    """``address`` if it is a scheduler address ``tcp://HOST:PORT`` (or ``tls://``), else a
    ``ValueError`` that shows the form.

    Examples:
        >>> check_address("tcp://10.0.0.5:8786")
        'tcp://10.0.0.5:8786'
        >>> check_address("10.0.0.5")
        Traceback (most recent call last):
        ...
        ValueError: --scheduler must be a Dask scheduler address such as tcp://HOST:8786, got '10.0.0.5'
    """
    if not _ADDRESS.fullmatch(str(address)):
        raise ValueError(f"--scheduler must be a Dask scheduler address such as tcp://HOST:8786, got {address!r}")
    return address


class DaskCluster:
    """A connection to the Dask scheduler at ``address`` (refused with a
    :class:`ReproductionError` when it cannot be reached, or has no worker, within the time
    allowed), its executor and the checks of its workers."""

    def __init__(self, address: str) -> None:
        self.address = check_address(address)
        try:
            from dask.distributed import Client
        except ModuleNotFoundError:
            raise ReproductionError(
                "--scheduler needs dask.distributed: pip install 'feature-reuse[cluster]' (or \"dask[distributed]\")"
            ) from None
        try:
            self.client = Client(self.address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ReproductionError(
                f"cannot reach the Dask scheduler at {self.address} within {CONNECT_SECONDS:g} s ({err}); start one"
                " (dask scheduler) or check the address and that this machine may connect to it"
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except (OSError, TimeoutError):
            self.close()
            raise ReproductionError(
                f"the Dask scheduler at {self.address} has no worker after {WORKER_WAIT_SECONDS:g} s: start some"
                f" (dask worker {self.address}, or scale your dask-jobqueue cluster)"
            ) from None

    def workers(self) -> list[str]:
        """The addresses of the workers connected now."""
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def executor(self) -> futures.Executor:
        """Dask's :class:`concurrent.futures.Executor` on this cluster (every submission a new
        task: ``pure=False``)."""
        return self.client.get_executor(pure=False)

    def check_workers(self, plan: Plan) -> None:
        """:class:`ReproductionError` naming each worker that cannot run the plan: it does not
        see the output folder (which must exist) or cannot write there, lacks a data folder, or
        lacks the device (:func:`worker_problems`)."""
        token = plan.out / f".reach-{secrets.token_hex(8)}"
        token.write_text("written by python -m meta reproduce to check what the workers see\n")
        try:
            answers = self.client.run(worker_problems, str(plan.out), token.name, data_folders(plan), plan.device)
        finally:
            token.unlink(missing_ok=True)
        problems = [f"{worker}: {p}" for worker, found in sorted(answers.items()) for p in found]
        if problems:
            raise ReproductionError(
                f"{len(problems)} problem(s) on the workers of {self.address}: " + "; ".join(problems)
            )

    def close(self) -> None:
        """Leave the cluster (it keeps running)."""
        self.client.close()


def data_folders(plan: Plan) -> dict[str, str | None]:
    """``{data set: folder given, or None}`` of the data sets the plan reads from the user's
    files (a worker without a folder given uses its own environment variable)."""
    return {r.config.dataset: r.config.data_root for r in plan.runs if r.config.dataset in EXTERNAL_DATA}


def worker_problems(out: str, token: str, data: Mapping[str, str | None], device: str) -> list[str]:
    """What keeps this worker from running a plan's jobs (run on every worker): the output
    folder ``out`` without the file ``token`` this process put there (another disk, or not
    mounted) or not writable, a data folder missing, the device absent."""
    from repsim.devices import check_device

    problems = []
    folder = Path(out)
    if not (folder / token).is_file():
        problems.append(
            f"it does not see the output folder {out!r} (this machine's copy): every worker must reach it on a shared"
            " file system, at the same path"
        )
    elif not _writable(folder):
        problems.append(f"it cannot write into the output folder {out!r}")
    for dataset, given in data.items():
        root = given or os.environ.get(ROOT_ENV[dataset])
        if not root:
            problems.append(f"no folder for {dataset}: pass --data-root, or set ${ROOT_ENV[dataset]} on the workers")
        elif not Path(root).is_dir():
            problems.append(f"the {dataset} data folder {root!r} does not exist there")
    try:
        check_device(device)
    except ValueError as err:
        problems.append(str(err))
    return problems


def _writable(folder: Path) -> bool:
    """Whether a file can be made and removed in ``folder``."""
    probe = folder / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError:
        return False
    return True
