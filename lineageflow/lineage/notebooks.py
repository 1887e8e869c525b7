"""A notebook as model code: reading it, and what is recorded about its code.

A notebook is an ``.ipynb`` file, a ``.py`` notebook in percent format (``# %%``
cells, as VS Code and jupytext write them) or a Databricks source export
(``# Databricks notebook source`` and ``# COMMAND ----------`` between cells).

Its code is the **source of its code cells**, nothing else: outputs, execution
counts, metadata and markdown change every time someone runs it interactively,
so a notebook committed again after a run is the same code, and an edited cell
is a code change. ``code_digest`` is what stage reuse, ``lineageflow diff`` and
the ``code_committed`` check compare.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import git

from lineageflow.errors import UserCodeError

DATABRICKS_HEADER = "# Databricks notebook source"
DATABRICKS_CELL = "# COMMAND ----------"
PERCENT_CELL = "# %%"
MAGIC = "# MAGIC"


def _bad(file: str, what: str) -> UserCodeError:
    return UserCodeError(f"train.notebook {file}: {what}")


def _databricks(text: str, file: str):
    """A Databricks source export as a notebook: its ``%md`` cells markdown, its
    Python cells code; any other magic (%sql, %sh, %pip) cannot run here."""
    import nbformat  # only a notebook run pays for it

    cells = []
    body = text.split("\n", 1)[1] if "\n" in text else ""
    chunks = [c.strip("\n") for c in body.split(DATABRICKS_CELL)]
    for n, chunk in enumerate((c for c in chunks if c.strip()), start=1):
        lines = chunk.splitlines()
        if lines and all(line.startswith(MAGIC) for line in lines):
            inner = [line[len(MAGIC) :].removeprefix(" ") for line in lines]
            if not inner[0].startswith("%md"):
                magic = inner[0].split()[0] if inner[0].split() else "%"
                raise _bad(
                    file,
                    f"cell {n} is a Databricks {magic} cell, which a Python kernel "
                    "cannot run: rewrite it in Python",
                )
            source = "\n".join([inner[0].removeprefix("%md").strip(), *inner[1:]])
            cells.append(nbformat.v4.new_markdown_cell(source.strip("\n")))
        else:
            cells.append(nbformat.v4.new_code_cell("\n".join(lines)))
    return nbformat.v4.new_notebook(cells=cells)


def parse_notebook(text: str, file: str):
    """The notebook in ``text`` (the content of ``file``), as nbformat v4.

    Bad input is one line: a file that is not a notebook, a ``.py`` file
    without cell markers."""
    import nbformat

    if file.endswith(".ipynb"):
        try:
            nb = nbformat.reads(text, as_version=4)
        except Exception as exc:
            raise _bad(
                file,
                f"is not a Jupyter notebook ({type(exc).__name__}): give an .ipynb "
                "file saved by Jupyter, or a .py notebook with # %% cells",
            ) from None
    elif text.startswith(DATABRICKS_HEADER):
        nb = _databricks(text, file)
    elif any(line.startswith(PERCENT_CELL) for line in text.splitlines()):
        import jupytext  # 0.3 s to import (measured): only .py notebooks pay it

        nb = jupytext.reads(text, fmt="py:percent")
    else:
        raise _bad(
            file,
            "has no cell markers: a .py notebook needs '# %%' lines between its "
            f"cells (or is a Databricks export starting '{DATABRICKS_HEADER}')",
        )
    if not code_cells(nb):
        raise _bad(file, "has no code cells: nothing would fit a model")
    return nb


def read_notebook(root: Path, file: str):
    """The notebook ``file`` of the workspace tree ``root`` (inside it, existing)."""
    path = (root / file).resolve()
    if not path.is_relative_to(root.resolve()):
        raise _bad(file, "is outside the workspace: give a path inside it")
    if not path.is_file():
        raise _bad(
            file,
            f"does not exist in the workspace {root}: add it, commit it, or fix "
            "train.notebook in params.yaml",
        )
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise _bad(file, "is not text: give an .ipynb or .py notebook") from None
    return parse_notebook(text, file)


def code_cells(nb) -> list[str]:
    """Each code cell's source, in order, without trailing whitespace."""
    return [c.source.rstrip() for c in nb.cells if c.cell_type == "code"]


def code_digest(cells: list[str]) -> str:
    """sha256 of the code cells' sources (nothing else of the notebook)."""
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def first_changed_cell(was: list[str], now: list[str]) -> int | None:
    """The first code cell (1-based) that differs, or None when none does."""
    for n, (a, b) in enumerate(zip(was, now, strict=False), start=1):
        if a != b:
            return n
    return None if len(was) == len(now) else min(len(was), len(now)) + 1


def code_at(repo: git.Repo, commit: str, file: str) -> list[str] | None:
    """The code cells of ``file`` at ``commit`` (None: not a notebook there)."""
    try:
        return code_cells(parse_notebook(repo.git.show(f"{commit}:{file}"), file))
    except (git.GitCommandError, UserCodeError):
        return None


def code_changed(repo: git.Repo, a: str, b: str, file: str) -> bool:
    """Whether notebook ``file``'s code cells differ between commits a and b."""
    return code_at(repo, a, file) != code_at(repo, b, file)


def notebook_state(repo: git.Repo, root: Path, file: str) -> dict[str, Any]:
    """The record's ``user_code`` entry for a notebook: its blob at HEAD, its
    code digest, and whether its code cells are the committed ones (a notebook
    saved again with new outputs is still committed code; ``changed_cell``
    names the first code cell that differs from HEAD)."""
    cells = code_cells(read_notebook(root, file))
    try:
        blob = repo.git.rev_parse(f"HEAD:{file}")
    except git.GitCommandError:
        blob = None
    committed_cells = code_at(repo, "HEAD", file) if blob else None
    changed = None
    if committed_cells is not None:
        changed = first_changed_cell(committed_cells, cells)
    entry = {
        "role": "notebook",
        "file": file,
        "function": "",
        "blob": blob,
        # committed: the commit holds this notebook (parsed) with these code cells
        "committed": committed_cells is not None and changed is None,
        "sha256": code_digest(cells),
        "code_cells": len(cells),
    }
    if changed is not None:
        entry["changed_cell"] = changed
    return entry
