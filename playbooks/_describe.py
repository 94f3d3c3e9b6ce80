"""Readable views of a playbook: a text outline and a Mermaid flowchart."""

from __future__ import annotations

from models._duration import format_duration
from models.playbook import BranchStep, ExitStep, PlaybookSpec, WaitForStep, WaitStep

__all__ = ["mermaid", "step_summary"]


def step_summary(step: object) -> str:
    """One line that says what a step does."""
    kind = getattr(step, "kind", "")
    if kind == "email":
        return f"email {getattr(step, 'to', 'contacts')}: {step.subject!r}"  # type: ignore[attr-defined]
    if kind == "slack":
        return f"slack {step.channel or 'to the CSM'}: {step.text!r}"  # type: ignore[attr-defined]
    if kind == "webhook":
        return f"webhook {step.method} {step.url}"  # type: ignore[attr-defined]
    if kind == "task":
        return f"task for the CSM ({step.priority}, due in {format_duration(step.due_in)}): {step.title!r}"  # type: ignore[attr-defined]
    if kind == "survey":
        return f"{step.survey.upper()} survey"  # type: ignore[attr-defined]
    if isinstance(step, WaitStep):
        what = f"for {format_duration(step.for_)}" if step.for_ else f"until {step.until}"
        return f"wait {what}" + (f" at {step.at}" if step.at else "")
    if isinstance(step, WaitForStep):
        then = f", then {step.on_timeout}" if step.on_timeout else ""
        return f"wait for {step.condition} (at most {format_duration(step.timeout)}{then})"
    if isinstance(step, BranchStep):
        return f"if {step.if_} then {step.then or 'next'} else {step.else_ or 'next'}"
    if kind == "update":
        return "update " + ", ".join(f"{k} = {v!r}" for k, v in step.set.items())  # type: ignore[attr-defined]
    if kind == "outcome":
        return f"record outcome {step.outcome}"  # type: ignore[attr-defined]
    if isinstance(step, ExitStep):
        return "exit" + (f" with outcome {step.outcome}" if step.outcome else "")
    return kind


def mermaid(spec: PlaybookSpec) -> str:
    """A Mermaid flowchart of the steps (GitHub renders it in Markdown)."""
    lines = ["flowchart TD", f'    start(["{_esc(spec.name)}"])']
    ids = [s.id for s in spec.steps]
    for step in spec.steps:
        shape = (
            ("{", "}")
            if isinstance(step, BranchStep)
            else ("[/", "/]")
            if step.kind in ("wait", "wait_for")
            else ("[", "]")
        )
        if isinstance(step, ExitStep):
            shape = ("([", "])")
        lines.append(f'    {step.id}{shape[0]}"{step.id}: {_esc(step_summary(step))}"{shape[1]}')
    lines.append(f"    start --> {ids[0]}")
    for i, step in enumerate(spec.steps):
        following = ids[i + 1] if i + 1 < len(ids) else None
        if isinstance(step, BranchStep):
            for label, target in (("yes", step.then), ("no", step.else_)):
                if target or following:
                    lines.append(f"    {step.id} -->|{label}| {target or following}")
        elif isinstance(step, ExitStep):
            continue
        elif following:
            lines.append(f"    {step.id} --> {following}")
        if isinstance(step, WaitForStep) and step.on_timeout:
            lines.append(f"    {step.id} -.->|timeout| {step.on_timeout}")
    if spec.goal:
        lines.append(f'    goal(["goal: {_esc(spec.goal.when)} -> {spec.goal.outcome}"])')
    return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", " ")
