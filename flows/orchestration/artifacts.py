"""Reports published as Prefect artifacts: tables and one Markdown page per report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sqlmodel import Session

from flows.reports.reports import Report, artifacts_of, playbooks_report

__all__ = ["publish_artifacts", "publish_playbook_artifacts"]


def publish_artifacts(report: Report) -> list[str]:
    """Create the report's Prefect artifacts (tables and one markdown page); returns their keys.
    Inside a flow run they belong to it; outside, they are created on the configured Prefect API."""
    keys = []
    for artifact in artifacts_of(report):
        if artifact["type"] == "table":
            create_table_artifact(table=artifact["table"], key=artifact["key"], description=artifact["description"])
        else:
            create_markdown_artifact(
                markdown=artifact["markdown"], key=artifact["key"], description=artifact["description"]
            )
        keys.append(artifact["key"])
    return keys


def publish_playbook_artifacts(engine: Any, playbook: str, as_of: datetime) -> list[str]:
    """One playbook's lift and funnel as Prefect artifacts (for the end of a tick)."""
    with Session(engine) as s:
        report = playbooks_report(s, as_of, months=None, playbooks=[playbook])
    report.kind = f"playbook-{playbook}"
    return publish_artifacts(report)
