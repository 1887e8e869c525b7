"""The pipeline's stages, declared once.

Each stage is named here with what the rest of lineageflow needs to know about
it: its place in the pipeline (the order of ``PIPELINE``), whether promotion
requires its finished child run, whether an identical earlier run's outputs may
be taken over (reuse), whether a reproduction runs it again, and whether it is
part of the lineage record's ``stages`` list. The stage pattern
(lineageflow.runs.stages) refuses a stage not declared here; the record, the
checks (lineageflow.lineage.checks), the flow's timings (flows/training.py) and
the recorded-code driver (flows/pinned.py) read these declarations.

A new stage: one ``Stage`` here, in ``PIPELINE`` at its place, and the task
that runs it (tasks/), called from ``run_stages``.
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
    needs_record: bool = False  # runs on the finished lineage record
    timing: str = ""  # its key in the run's timings (default: its name)

    @property
    def clock(self) -> str:
        return self.timing or self.name


PULL_DATA = Stage("pull_data", reusable=True)
PREPARE = Stage("prepare", reusable=True)
TRAIN = Stage("train", reusable=True)
EVALUATE = Stage("evaluate")
REGISTER_MODEL = Stage(
    "register_model",
    required=False,
    reproduced=False,
    needs_record=True,
    timing="register",
)
# a sweep's configurations: child runs of the sweep's own parent run
SWEEP = Stage("sweep", required=False, reproduced=False, recorded=False)

PIPELINE: tuple[Stage, ...] = (PULL_DATA, PREPARE, TRAIN, EVALUATE, REGISTER_MODEL)
DECLARED: dict[str, Stage] = {s.name: s for s in (*PIPELINE, SWEEP)}

# not a stage (no child run of its own, refused by stage_run): the flow's step
# that writes the lineage record, before the first stage that needs it
LINEAGE = Stage("lineage", required=False, recorded=False)

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


def steps(register: bool = True) -> tuple[Stage, ...]:
    """What the flow runs, in order: every declared stage (one that a
    reproduction does not rerun only when ``register``), with the lineage record
    written before the first stage that needs it (or last)."""
    out: list[Stage] = []
    for stage in PIPELINE:
        if stage.needs_record and LINEAGE not in out:
            out.append(LINEAGE)
        if register or stage.reproduced:
            out.append(stage)
    return (*out, LINEAGE) if LINEAGE not in out else tuple(out)
