"""The Prefect layer: every ``@flow`` and ``@task``, the deployments written to ``prefect.yaml``,
and the local server ``retain serve`` starts. The only package that imports Prefect; importing
this package itself is cheap, its modules are not."""

import os

# Retain's own loggers (the outbox's retries and back-offs, channels, importers) go to each run's log
# in Prefect too. Prefect reads these when it is first imported, which is after this package; a
# record logged outside any run (a CLI command that is not a flow) is simply not sent.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "flows,integrations")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
