"""The pipeline's stages, declared once.

Each stage is named here with what the rest of lineageflow needs to know about
it: its place in the pipeline (the order of ``PIPELINE``), whether promotion
requires its finished child run, whether an identical earlier run's outputs may
be taken over (reuse), whether a reproduction runs it again, and whether it is
part of the lineage record's ``stages`` list. The stage pattern
(lineageflow.runs.stages) refuses a stage not declared here; the record, the
checks (lineageflow.lineage.checks), the flow's timings (flows/training.py) and
the recorded-code driver (flows/pinned.py) read these declarations, and
``run_stages`` (flows/training.py) runs ``steps()``.

A new stage: one ``Stage`` here, in ``PIPELINE`` at its place; the task that
runs it (tasks/); and its entry in ``STEPS`` (flows/training.py), which calls
the task with what the earlier steps made.
"""

from __future__ import annotations

from dataclasses import dataclass

from lineageflow.errors import LineageError


@dataclass(frozen=True)
class Stage:
    name: str
    required: bool = True  # promotion needs its child run FINISHED
    reusable: bool = False  # may take an identical earlier stage's outputs
    reproduced: bool = True  # a reproduction runs it again
    recorded: bool = True  # listed in lineage.json's ``stages``, in pipeline order
    needs_record: bool = False  # runs on the finished lineage record (so not in it)
    timing: str = ""  # its key in the run's timings, when not its name

    @property
    def timing_key(self) -> str:
        return self.timing or self.name


PULL_DATA = Stage("pull_data", reusable=True)
PREPARE = Stage("prepare", reusable=True)
TRAIN = Stage("train", reusable=True)
EVALUATE = Stage("evaluate")
REGISTER_MODEL = Stage(
    "register_model",
    required=False,  # still running while the checks run
    reproduced=False,
    recorded=False,
    needs_record=True,
    timing="register",
)
# a sweep's configurations: child runs of the sweep's own parent run
SWEEP = Stage("sweep", required=False, reproduced=False, recorded=False)

PIPELINE: tuple[Stage, ...] = (PULL_DATA, PREPARE, TRAIN, EVALUATE, REGISTER_MODEL)
DECLARED: dict[str, Stage] = {s.name: s for s in (*PIPELINE, SWEEP)}

# the flow's step that writes the lineage record, before the first stage that
# needs it: not a stage (no child run of its own; stage_run refuses the name)
RECORD_STEP = "lineage"

# the record's ``stages`` list, in this order
RECORDED: tuple[str, ...] = tuple(s.name for s in PIPELINE if s.recorded)
# every one must have a FINISHED child run before a version can reach Staging
REQUIRED: tuple[str, ...] = tuple(s.name for s in PIPELINE if s.required)


def declared(name: str) -> Stage:
    """The declaration of stage ``name``; an undeclared name is refused."""
    stage = DECLARED.get(name)
    if stage is None:
        raise LineageError(
            f"stage {name!r} is not declared: add a Stage for it in "
            f"lineageflow/pipeline.py (declared: {', '.join(DECLARED)})"
        )
    return stage


def steps(reproduction: bool = False) -> tuple[tuple[str, str], ...]:
    """(name, timing key) of each step the flow runs, in order: every declared
    stage (in a reproduction only those declared ``reproduced``), and the
    lineage record written before the first stage that needs it, else last. A
    recorded stage declared after one that needs the record is refused: the
    record would never list it."""
    out: list[tuple[str, str]] = []
    for stage in PIPELINE:
        if stage.needs_record and (RECORD_STEP, RECORD_STEP) not in out:
            out.append((RECORD_STEP, RECORD_STEP))
        elif stage.recorded and (RECORD_STEP, RECORD_STEP) in out:
            raise LineageError(
                f"stage {stage.name!r} is declared recorded but comes after the "
                "lineage record is written: move it before the first stage that "
                "needs the record, or declare it recorded=False"
            )
        if stage.reproduced or not reproduction:
            out.append((stage.name, stage.timing_key))
    if (RECORD_STEP, RECORD_STEP) not in out:
        out.append((RECORD_STEP, RECORD_STEP))
    return tuple(out)
