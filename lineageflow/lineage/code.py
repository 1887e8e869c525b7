"""Code lineage: which pipeline code and which workspace code a run executes.

Two kinds of code decide a model besides data and params:
- the **pipeline code** (this lineageflow checkout: its commit and dirty files,
  or its installed version when it is not a checkout);
- the **user code**: Python files committed in the workspace that ``params.yaml``
  names (``train.factory``, ``train.features``, ``train.notebook``: for a
  notebook, its code cells: lineageflow.lineage.notebooks), read from the tree being
  trained, so a reproduction imports them from the recorded commit's worktree.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import git
import pandas as pd

from lineageflow import __version__
from lineageflow.errors import UserCodeError
from lineageflow.lineage.notebooks import notebook_state
from lineageflow.workspace import origin_url

# What of the pipeline repo decides a model: its packages (an untracked .py file
# there counts too: an unadded module changes a run as much as an edited one) and
# its dependency pins. A README or a test edit does not make the code dirty.
PIPELINE_DIRS = ("lineageflow", "flows", "tasks", "deployments")
PIPELINE_FILES = ("pyproject.toml", "constraints.txt")


def _is_code(path: str) -> bool:
    return path.split("/", 1)[0] in PIPELINE_DIRS or path in PIPELINE_FILES


def pipeline_state() -> dict[str, Any]:
    """The lineageflow code that is running: version, and commit when from a checkout.

    ``dirty_files`` names what differs from the commit; ``path`` is the checkout
    on this machine and ``repo`` where it can be cloned from (origin, else path).
    """
    here = Path(__file__).resolve().with_name("__init__.py")  # tracked in any checkout
    state: dict[str, Any] = {
        "version": __version__,
        "commit": None,
        "dirty": None,
        "dirty_files": [],
        "repo": None,
        "path": None,
    }
    try:
        repo = git.Repo(here.parent, search_parent_directories=True)
        top = Path(repo.working_tree_dir).resolve()
        if not repo.git.ls_files(str(here.relative_to(top))):
            return state  # e.g. a venv inside some other repo
        changed = {d.a_path for d in repo.index.diff(None)} | {
            d.a_path for d in repo.index.diff("HEAD")
        }
        changed = {f for f in changed if _is_code(f)}
        changed |= {
            f for f in repo.untracked_files if f.endswith(".py") and _is_code(f)
        }
        state.update(
            commit=repo.head.commit.hexsha,
            dirty=bool(changed),
            dirty_files=sorted(changed)[:50],
            repo=origin_url(repo) or str(top),
            path=str(top),
        )
    except Exception:  # not a checkout: an installed wheel has no commit to record
        pass
    return state


def parse_ref(ref: str) -> tuple[str, str]:
    file, _, function = ref.partition(":")
    return file, function


def user_code_state(root: Path, refs: dict[str, str]) -> list[dict[str, Any]]:
    """Each workspace code file the config uses, with its git blob at HEAD and
    whether the file on disk is exactly that blob (committed)."""
    repo = git.Repo(root)
    out = []
    for role, ref in sorted(refs.items()):
        if role == "notebook":  # its code is its code cells (lineage.notebooks)
            out.append(notebook_state(repo, root, ref))
            continue
        file, function = parse_ref(ref)
        path = root / file
        if not path.is_file():
            raise UserCodeError(
                f"train.{role} {ref}: {file} does not exist in the workspace "
                f"{root}: add it, commit it, or fix train.{role} in params.yaml"
            )
        try:
            blob = repo.git.rev_parse(f"HEAD:{file}")
        except git.GitCommandError:
            blob = None
        on_disk = repo.git.hash_object("--", file)
        out.append(
            {
                "role": role,
                "file": file,
                "function": function,
                "blob": blob,
                "committed": blob is not None and blob == on_disk,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    return out


def code_id(entry: dict[str, Any]) -> str | None:
    """What names a ``user_code`` entry's code: a notebook's code-cell digest (a
    notebook saved again with new outputs is the same code), else its git blob."""
    if entry.get("role") == "notebook":
        return entry.get("sha256")
    return entry.get("blob")


def load_callable(root: Path, ref: str, role: str) -> Callable[..., Any]:
    """Import ``<file>.py:<function>`` from the workspace tree ``root``.

    The module gets a name unique to its path and content, so the recorded
    commit's file (in a reproduction's worktree) never collides with today's,
    and is registered with cloudpickle *by value*: a model that holds the user's
    classes or functions loads where the workspace is not importable.
    """
    file, function = parse_ref(ref)
    path = (root / file).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise UserCodeError(
            f"train.{role} {ref}: {file} does not exist in the workspace {root}: "
            f"add it, commit it, or fix train.{role} in params.yaml"
        )
    key = hashlib.sha256(str(path).encode() + path.read_bytes()).hexdigest()[:12]
    name = f"lineageflow_user_{path.stem}_{key}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise UserCodeError(
                f"train.{role} {ref}: importing {file} raised "
                f"{type(exc).__name__}: {_first_line(exc)}: fix it and commit"
            ) from None

        cloudpickle.register_pickle_by_value(module)
    fn = getattr(module, function, None)
    if not callable(fn):
        found = sorted(
            n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
        )
        raise UserCodeError(
            f"train.{role} {ref}: {file} has no function '{function}' "
            f"(callables there: {', '.join(found[:6]) or 'none'}): fix train.{role}"
        )
    return fn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


def call_user(fn: Callable[..., Any], ref: str, role: str, *args, **kwargs) -> Any:
    """Call user code; anything it raises becomes one line naming it."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise UserCodeError(
            f"train.{role} {ref} raised {type(exc).__name__}: {_first_line(exc)}: "
            "fix it and commit"
        ) from None


def check_features(features, ref: str, X: pd.DataFrame) -> None:
    """Run the user's feature function on a few rows first: a wrong return type
    is one line here instead of a traceback deep inside the fit."""
    out = call_user(features, ref, "features", X.head(5).copy())
    if not isinstance(out, pd.DataFrame) or len(out) != min(5, len(X)):
        raise UserCodeError(
            f"train.features {ref} must return a DataFrame with one row per input "
            f"row (got {type(out).__name__}): fix it and commit"
        )
