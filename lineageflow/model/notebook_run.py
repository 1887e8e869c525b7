"""Running a notebook in a Jupyter kernel of this environment, with papermill.

lineageflow adds two cells of its own around the user's (tagged
``lineageflow-record`` and removed before the notebook is stored): the first
notes the files the kernel opens, the last reports them and the top-level
modules imported. Every failure is one line: a cell that raises (its number in
the user's notebook and the exception's last line), a timeout, a dead kernel,
data read that the params did not name.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lineageflow.errors import UserCodeError

RECORD_TAG = "lineageflow-record"  # lineageflow's own cells, removed before storing
KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}


def kernel_manager(work: Path, cwd: Path):
    """A kernel manager that starts ipykernel with this process's interpreter,
    talking over Unix sockets in ``work`` (no TCP port for anyone to reach). An
    async one: with a blocking manager, nbclient's cell timeout never fires
    (measured, jupyter_client 8.10)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class ThisEnvironment(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(transport="ipc", ip=str(work / "kernel"), **kw)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            # the kernel runs in the notebook's folder (papermill's own `cwd`
            # would chdir this whole process, every thread of the flow run with
            # it) and writes no __pycache__ into the user's tree
            kw["cwd"] = str(cwd)
            kw["env"] = {**kw.get("env", os.environ), "PYTHONDONTWRITEBYTECODE": "1"}
            await super()._async_launch_kernel(kernel_cmd, **kw)

        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(
                argv=[
                    sys.executable,
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                ],
                display_name=f"Python ({sys.prefix})",
                language="python",
            )

    return ThisEnvironment


# The first cell: an audit hook that notes every file the kernel opens for
# reading through Python (open(), pandas' CSV reader, joblib...); Arrow's native
# readers (Parquet) open files in C++ and are not seen. Writes are not reads.
WATCH = """\
import sys as _lf_sys
_lf_opened = set()
def _lf_audit(event, args, _seen=_lf_opened):
    if event != "open" or not isinstance(args[0], str):
        return
    mode, flags = args[1], args[2]
    if mode is None:
        reads = flags is not None and flags & 3 == 0  # O_RDONLY
    else:
        reads = not any(c in str(mode) for c in "wax+")
    if reads:
        _seen.add(args[0])
_lf_sys.addaudithook(_lf_audit)
"""
# The last cell: the top-level modules imported (which libraries the model's
# code used) and the files opened, for the stage to read back.
REPORT = """\
import json as _lf_json
with open({out!r}, "w") as _lf_f:
    _lf_json.dump({{
        "modules": sorted({{m.split(".")[0] for m in _lf_sys.modules}}),
        "opened": sorted(_lf_opened),
    }}, _lf_f)
"""
DATA_SUFFIXES = (
    ".csv",
    ".tsv",
    ".parquet",
    ".pq",
    ".json",
    ".jsonl",
    ".feather",
    ".arrow",
    ".xlsx",
    ".xls",
    ".txt",
    ".pkl",
    ".npy",
    ".npz",
    ".h5",
)


def _ours(code: str):
    import nbformat

    return nbformat.v4.new_code_cell(code, metadata={"tags": [RECORD_TAG]})


def tagged(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def failed_code_cell(nb) -> int | None:
    """The failing cell's number among the user's code cells of the executed
    notebook (1-based, as ``code_committed`` counts them; papermill's parameters
    cell and lineageflow's own are not the user's; papermill's error banners
    are markdown)."""
    n = 0
    for c in nb.cells:
        if c.cell_type != "code" or tagged(c, "injected-parameters"):
            continue
        failed = any(o.get("output_type") == "error" for o in c.get("outputs", []))
        if tagged(c, RECORD_TAG):
            if failed:
                return None  # lineageflow's own cell
            continue
        n += 1
        if failed or c.get("metadata", {}).get("papermill", {}).get("exception"):
            return n
    return None


SYSTEM = ("/usr", "/etc", "/proc", "/sys", "/dev", "/opt", "/var/lib", "/lib")


def _user_file(path: Path) -> bool:
    """A file of someone's data, not of the system, an installed package or a
    tool's state (caches and settings live in hidden folders: ~/.cache, ...)."""
    if not path.is_file() or any(p.startswith(".") for p in path.parts):
        return False
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    if any(path.is_relative_to(r) for r in roots):
        return False
    return not str(path).startswith(SYSTEM)


def unnamed_reads(
    opened: list[str], root: Path, work: Path, notebook: Path
) -> list[str]:
    """Data the notebook opened that the params did not name: files in the
    workspace (its code and git/DVC internals aside) and data files anywhere
    else, lineageflow's own temporary folder aside."""
    out = []
    root, work = root.resolve(), work.resolve()
    for name in opened:
        path = (notebook.parent / name).resolve()
        code = path.suffix in (".py", ".pyc") or "__pycache__" in path.parts
        if path.is_relative_to(work) or path == notebook or code:
            continue
        if path.is_relative_to(root):
            inside = path.relative_to(root)
            if (
                inside.parts[:1] in ((".git",), (".dvc",), (".lineageflow",))
                or not path.is_file()
            ):
                continue
            out.append(str(inside))
        elif path.suffix.lower() in DATA_SUFFIXES and _user_file(path):
            out.append(str(path))
    return sorted(set(out))


def last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no message)"


def execute(
    nb,
    file: str,
    root: Path,
    work: Path,
    params: dict[str, Any],
    timeout: int | None,
    store: Callable[[Path], None],
) -> tuple[Path, dict[str, Any]]:
    """Run notebook ``nb`` (``file`` of the workspace tree ``root``) in ``work``
    with ``params`` injected; ``store`` keeps the executed notebook when it
    fails. The executed notebook and what the kernel reported."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a copy
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.cells.insert(0, _ours(WATCH))
    nb.cells.append(_ours(REPORT.format(out=str(work / "kernel.json"))))
    source = work / "input.ipynb"
    nbformat.write(nb, source)
    executed = work / Path(file).with_suffix(".ipynb").name
    try:
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters=params,
            kernel_name=KERNELSPEC["name"],
            language="python",
            progress_bar=False,
            execution_timeout=timeout,
            kernel_manager_class=kernel_manager(work, (root / file).parent),
        )
    except PapermillExecutionError as exc:
        n = failed_code_cell(nbformat.read(executed, as_version=4))
        _keep(store, executed)  # executed up to the failing cell
        where = f"code cell {n}" if n else "lineageflow's report cell"
        raise UserCodeError(
            f"train.notebook {file}: {where} raised "
            f"{last_line(f'{exc.ename}: {exc.evalue}')}: fix it and commit"
        ) from None
    except Exception as exc:
        _keep(store, executed)
        raise UserCodeError(f"train.notebook {file}: {_why(exc, timeout)}") from None
    kernel = json.loads((work / "kernel.json").read_text())
    nb_file = (root / file).resolve()
    unnamed = unnamed_reads(kernel["opened"], root, work, nb_file)
    if unnamed:
        _keep(store, executed)
        more = f" and {len(unnamed) - 3} more" if len(unnamed) > 3 else ""
        raise UserCodeError(
            f"train.notebook {file}: it read {', '.join(unnamed[:3])}{more}, "
            "which data.datasets does not name: read the training data from "
            "train_table (add the dataset to data.datasets)"
        )
    return executed, kernel


def _keep(store: Callable[[Path], None], executed: Path) -> None:
    """Store a failed run's notebook; a failure to store it is logged, never
    put in place of the notebook's own failure."""
    if not executed.is_file():
        return
    try:
        store(executed)
    except Exception:
        logging.getLogger(__name__).warning(
            "could not store the executed notebook %s", executed, exc_info=True
        )


def _why(exc: Exception, timeout: int | None) -> str:
    """A failure that is not a cell raising: timeout, a dead kernel, no kernel."""
    name = type(exc).__name__
    if name == "CellTimeoutError" and timeout is not None:
        return (
            f"a cell ran longer than train.notebook_timeout ({timeout} "
            "s): make it faster or raise the timeout"
        )
    if isinstance(exc, TimeoutError):
        return f"the kernel did not answer in time ({last_line(exc)})"
    if name == "DeadKernelError":
        return (
            "the kernel died while running it (out of memory, or the process "
            "exited): check the notebook's memory use"
        )
    return f"running it failed ({name}: {last_line(exc)})"
