"""tick indexes and enroll cursor: a tick's reads by index, and enroll reading only changed accounts

Every read of a tick with nothing new or due goes through an index (enroll's anti-join, the
enrollments it just made and their timeline lines, the revisions in flight, the holdouts to end,
the touches a tick wrote); ``playbook_revision`` keeps enroll's cursor (the accounts up to an id
and changed before a moment that a tick of this revision has looked at), and
``account.updated_at`` is indexed so that the changed accounts are found without a scan.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 11:05:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import models._types


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEXES = [
    ('account', 'ix_account_updated_at', ['updated_at']),
    ('enrollment', 'ix_enrollment_playbook_account', ['playbook', 'account_id']),
    ('enrollment', 'ix_enrollment_started', ['playbook', 'started_at']),
    ('enrollment', 'ix_enrollment_revision', ['playbook', 'revision', 'status']),
    ('enrollment', 'ix_enrollment_holdout', ['playbook', 'status', 'holdout', 'started_at']),
    ('timeline_event', 'ix_timeline_enrollment', ['enrollment_id']),
    ('touch', 'ix_touch_playbook_created', ['playbook', 'created_at']),
    ('csm_task', 'ix_csm_task_open', ['status', 'keep_open']),
]


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('playbook_revision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enrolled_through', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('enrolled_through_id', sa.Integer(), nullable=True))
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    for table, name, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table('playbook_revision', schema=None) as batch_op:
        batch_op.drop_column('enrolled_through_id')
        batch_op.drop_column('enrolled_through')
