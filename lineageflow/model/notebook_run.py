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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lineageflow.errors import UserCodeError

RECORD_TAG = "lineageflow-record"  # lineageflow's own cells, removed before storing
KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}


def _kernel_manager(work: Path):
    """A kernel manager that starts ipykernel with this process's interpreter,
    talking over Unix sockets in ``work`` (no TCP port for anyone to reach). An
    async one: with a blocking manager, nbclient's cell timeout never fires
    (measured, jupyter_client 8.10)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class ThisEnvironment(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(transport="ipc", ip=str(work / "kernel"), **kw)

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


# The first cell: an audit hook that notes every file the kernel opens through
# Python (open(), pandas' CSV reader, joblib...); Arrow's native readers (Parquet)
# open files in C++ and are not seen.
WATCH = """\
import sys as _lf_sys
_lf_opened = set()
def _lf_audit(event, args, _seen=_lf_opened):
    if event == "open" and isinstance(args[0], str):
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


def _cell_number(nb, index: int) -> int:
    """The failing cell's number in the user's notebook (1-based, every cell
    counted; papermill's parameters cell and lineageflow's own not)."""
    extra = sum(
        1
        for c in nb.cells[:index]
        if tagged(c, "injected-parameters") or tagged(c, RECORD_TAG)
    )
    return index - extra + 1


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
        if path.is_relative_to(work) or path == notebook or path.suffix == ".py":
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
            cwd=str((root / file).parent),
            progress_bar=False,
            execution_timeout=timeout,
            kernel_manager_class=_kernel_manager(work),
        )
    except PapermillExecutionError as exc:
        n = _cell_number(nbformat.read(executed, as_version=4), exc.cell_index)
        store(executed)  # executed up to the failing cell
        raise UserCodeError(
            f"train.notebook {file}: cell {n} raised "
            f"{last_line(f'{exc.ename}: {exc.evalue}')}: fix it and commit"
        ) from None
    except Exception as exc:
        if executed.is_file():
            store(executed)
        raise UserCodeError(f"train.notebook {file}: {_why(exc, timeout)}") from None
    kernel = json.loads((work / "kernel.json").read_text())
    nb_file = (root / file).resolve()
    unnamed = unnamed_reads(kernel["opened"], root, work, nb_file)
    if unnamed:
        store(executed)
        more = f" and {len(unnamed) - 3} more" if len(unnamed) > 3 else ""
        raise UserCodeError(
            f"train.notebook {file}: it read {', '.join(unnamed[:3])}{more}, "
            "which data.datasets does not name: read the training data from "
            "train_table (add the dataset to data.datasets)"
        )
    return executed, kernel


def _why(exc: Exception, timeout: int | None) -> str:
    """A failure that is not a cell raising: timeout, a dead kernel, no kernel."""
    name = type(exc).__name__
    if name == "CellTimeoutError" or isinstance(exc, TimeoutError):
        return (
            f"a cell ran longer than train.notebook_timeout ({timeout} "
            "s): make it faster or raise the timeout"
        )
    if name == "DeadKernelError":
        return (
            "the kernel died while running it (out of memory, or the process "
            "exited): check the notebook's memory use"
        )
    return f"running it failed ({name}: {last_line(exc)})"
