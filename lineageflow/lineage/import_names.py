"""The top-level import names an editable or local directory install puts on
``sys.path`` when its dist-info does not name them (lineageflow.lineage.environment
maps imported modules to distributions with them)."""

from __future__ import annotations

import ast
import os
import re
from importlib.metadata import Distribution
from inspect import getmodulename
from pathlib import Path

FINDER = re.compile(r"^__editable___.*_finder\.py$")  # setuptools' editable finder
MAPPING = re.compile(r"^MAPPING\b[^=\n]*=\s*(\{[^\n]*\})\s*$", re.M)


def _importable(directory: str) -> set[str]:
    """The top-level names ``import`` finds in ``directory``: packages,
    namespace directories and modules (``*.py``, extension modules)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return set()
    return {
        e.name if e.is_dir() else getmodulename(e.name)
        for e in entries
        if (e.name.isidentifier() and e.name != "__pycache__" and e.is_dir())
        or (e.is_file() and (getmodulename(e.name) or "-").isidentifier())
    }


def path_names(dist: Distribution) -> set[str]:
    """What an editable or directory install makes importable without naming it
    in top_level.txt or RECORD (hatchling, flit, pdm and poetry write neither;
    their RECORD lists one ``.pth``): the top-level names in each directory a
    ``.pth`` of its RECORD puts on the path, and the keys of setuptools'
    ``__editable___*_finder.py`` MAPPING. Names, not files: a notebook's kernel
    hands its imports in as module names. Read at each call (a checkout grows)."""
    names: set[str] = set()
    for f in dist.files or ():
        if not (f.name.endswith(".pth") or FINDER.match(f.name)):
            continue
        try:
            text = Path(dist.locate_file(f)).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if f.name.endswith(".pth"):
            site = os.path.dirname(dist.locate_file(f))
            for line in map(str.strip, text.splitlines()):
                if line and not line.startswith(("#", "import ", "import\t")):
                    names |= _importable(os.path.join(site, line))
        elif found := MAPPING.search(text):
            try:
                names |= {str(k) for k in ast.literal_eval(found.group(1))}
            except (ValueError, SyntaxError):
                continue
    return names
