"""Readable views of a playbook: a text outline and a Mermaid flowchart."""

from __future__ import annotations

from models.playbook import WAITING_KINDS, BranchStep, ExitStep, PlaybookSpec, WaitForStep

__all__ = ["mermaid", "step_summary"]


def step_summary(step: object) -> str:
    """One line that says what a step does (each step model says it: ``summary()``)."""
    summary = getattr(step, "summary", None)
    return summary() if callable(summary) else str(getattr(step, "kind", ""))


def mermaid(spec: PlaybookSpec) -> str:
    """A Mermaid flowchart of the steps (GitHub renders it in Markdown)."""
    lines = ["flowchart TD", f'    start(["{_esc(spec.name)}"])']
    ids = [s.id for s in spec.steps]
    for step in spec.steps:
        shape = (
            ("{", "}") if isinstance(step, BranchStep) else ("[/", "/]") if step.kind in WAITING_KINDS else ("[", "]")
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
