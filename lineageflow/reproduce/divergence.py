"""Where a reproduction first went different: the two runs' stages compared in
pipeline order by what the stage pattern recorded (inputs, params, outputs,
each by digest). Pure functions of the two lineage records."""

from __future__ import annotations


def _by_name(items: list[dict]) -> dict[str, str]:
    return {i["name"]: i.get("digest") for i in items or []}


def _keyed(stages: list[dict]) -> list[tuple[tuple[str, int], dict]]:
    """Each stage keyed by (name, occurrence): ``pull_data`` runs once per dataset."""
    seen: dict[str, int] = {}
    out = []
    for s in stages:
        n = seen[s["name"]] = seen.get(s["name"], -1) + 1
        out.append(((s["name"], n), s))
    return out


def _differ(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def first_divergence(
    original: dict, reproduced: dict, environment: list[str]
) -> str | None:
    """The first stage whose inputs and params were the same but whose outputs
    differ (with the likely cause), or the first input that already differed;
    None when every recorded stage made the same outputs."""
    now = dict(_keyed(reproduced.get("stages", [])))
    for key, then in _keyed(original.get("stages", [])):
        name = key[0]
        again = now.get(key)
        if again is None:
            return f"first diverged at {name}: the reproduction has no {name} stage"
        inputs = _differ(_by_name(then.get("inputs")), _by_name(again.get("inputs")))
        if inputs:
            return f"first differed at {name}'s input {inputs[0]}"
        if then.get("params_sha256") != again.get("params_sha256"):
            return f"first differed at {name}'s params"
        outputs = _differ(_by_name(then.get("outputs")), _by_name(again.get("outputs")))
        if outputs:
            same = " and ".join(_by_name(then.get("inputs"))) or "inputs"
            cause = (
                "the fit is not deterministic"
                if name == "train"
                else (f"{name} is not deterministic")
            )
            if environment:
                cause += ", or " + ", ".join(environment[:3])
            return (
                f"first diverged at {name}: same {same} and params, different "
                f"{', '.join(outputs)}: {cause}"
            )
    return None
