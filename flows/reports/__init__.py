"""Reports in one shape (tables with typed columns, as text, JSON or CSV) and charts: retention,
playbooks, surveys, health, outcomes and the weekly digest."""
