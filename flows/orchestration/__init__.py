"""The Prefect layer: every ``@flow`` and ``@task``, the deployments written to ``prefect.yaml``,
and the local server ``retain serve`` starts. The only package that imports Prefect; importing
this package itself is cheap, its modules are not."""
