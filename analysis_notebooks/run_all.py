"""Execute every analysis notebook on a reproduction folder (with nbclient).

    python analysis_notebooks/run_all.py DIR [--out FOLDER] [--timeout SECONDS] [NAME ...]

``DIR`` is the output folder of ``python -m meta reproduce --out DIR``; each notebook reads it from
the environment variable ``REPRODUCE_DIR``, which this script sets. Executed copies (with their
outputs) are written to ``--out`` (default ``DIR/notebooks``); the notebooks here stay without
outputs. ``NAME`` runs only the named notebooks (file stems, e.g. ``table1_freezing``).

The kernel is the interpreter running this script (``sys.executable``), whatever kernelspecs are
installed: a kernelspec naming it is written to a temporary folder and used from there. It needs
``ipykernel`` (``pip install -e ".[notebooks]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV_VAR = "REPRODUCE_DIR"
KERNEL_NAME = "feature-reuse-python"


def notebooks(names: Sequence[str] = ()) -> list[Path]:
    """The notebooks of this folder (sorted), or those named by stem (``ValueError`` for an
    unknown name)."""
    found = {path.stem: path for path in sorted(HERE.glob("*.ipynb"))}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise ValueError(f"no notebook named {', '.join(unknown)}; known: {', '.join(found)}")
    return [found[name] for name in names] if names else list(found.values())


def write_kernelspec(folder: Path) -> Path:
    """A kernelspec in ``folder`` that starts ipykernel with this interpreter; returns the folder
    holding kernelspecs (for ``KernelSpecManager(kernel_dirs=[...])``)."""
    spec_dir = folder / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


def _local_transport(folder: Path) -> dict[str, str]:
    """Unix sockets in ``folder`` where the platform has them (no TCP port, no warning about an
    unencrypted TCP kernel); the default TCP on localhost elsewhere."""
    return {"transport": "ipc", "ip": str(folder / "kernel")} if os.name == "posix" else {}


def kernel_environment(reproduce_dir: Path) -> dict[str, str]:
    """This process's environment plus ``REPRODUCE_DIR`` and the repository on ``PYTHONPATH`` (so
    ``meta`` imports even where the project is not installed)."""
    env = dict(os.environ)
    env[ENV_VAR] = str(reproduce_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_notebook(path: Path, reproduce_dir: Path, kernel_dirs: Path, *, timeout: int = 300) -> nbformat.NotebookNode:
    """Execute the notebook ``path`` top to bottom in a fresh kernel on ``reproduce_dir``;
    returns the executed notebook (``CellExecutionError`` from the first failing cell)."""
    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dirs)]),
        **_local_transport(kernel_dirs),
    )
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute(env=kernel_environment(reproduce_dir))
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return notebook


def run_all(
    reproduce_dir: str | Path, *, names: Sequence[str] = (), out_dir: str | Path | None = None, timeout: int = 300
) -> list[Path]:
    """Execute the notebooks (all, or ``names``) on ``reproduce_dir``; write the executed copies
    to ``out_dir`` (default ``reproduce_dir/notebooks``), atomically; return their paths."""
    folder = Path(reproduce_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: pass the output folder of `python -m meta reproduce`")
    target = Path(out_dir) if out_dir is not None else folder / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="kernels-") as kernels:
        kernel_dirs = write_kernelspec(Path(kernels))
        for path in notebooks(names):
            executed = run_notebook(path, folder, kernel_dirs, timeout=timeout)
            destination = target / path.name
            temporary = destination.with_name(f".{path.name}.tmp")
            nbformat.write(executed, temporary)
            os.replace(temporary, destination)
            written.append(destination)
            print(f"ran {path.name} -> {destination}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reproduce_dir", help="output folder of `python -m meta reproduce`")
    parser.add_argument("names", nargs="*", help="notebooks to run (file stems); default: all")
    parser.add_argument("--out", help="folder for the executed notebooks (default: DIR/notebooks)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell (default 300)")
    args = parser.parse_args(argv)
    try:
        run_all(args.reproduce_dir, names=args.names, out_dir=args.out, timeout=args.timeout)
    except (ValueError, CellExecutionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
