"""The engine: what one tick does to enrollments, and how touches leave.

- ``core``: revisions, enroll (one set-based statement), settle (goals and exits), advance (the
  steps of due enrollments, batch by batch);
- ``render``: templates rendered for one enrollment; ``outbox``: delivery that never sends twice;
- ``policy``: the contact policy applied before delivery;
- ``tick``, ``play``, ``simulate``: one scheduled tick, a CSM's ad-hoc play, a preview with no
  side effects.

Plain functions over SQL: nothing here imports Prefect (see ``flows.orchestration``).
"""
