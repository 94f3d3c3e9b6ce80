"""The engine: what one tick does to enrollments, and how touches leave.

- ``revisions``: a playbook's stored revisions, "today", the holdout salt;
- ``enroll`` (one set-based statement), ``settle`` (goals, exits and goal windows, set-based),
  ``advance`` (due enrollments claimed batch by batch), ``wake`` (one enrollment's wake-up), and
  ``steps`` (one handler per step kind, registered in ``steps/__init__.py``);
- ``render``: templates rendered for one enrollment; ``outbox``: delivery that never sends twice;
- ``policy``: the contact policy applied before delivery;
- ``tick``, ``play``, ``simulate``: one scheduled tick, a CSM's ad-hoc play, a preview with no
  side effects.

Plain functions over SQL: nothing here imports Prefect (see ``flows.orchestration``).
"""
