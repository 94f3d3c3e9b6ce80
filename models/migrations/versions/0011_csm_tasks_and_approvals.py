"""a CSM's side: tasks know their playbook step, can be snoozed, noted and closed with a reason;
touches can wait for a person's approval (a draft) and keep the draft when it is edited

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:50:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import models._types


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('csm_task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('playbook', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.add_column(sa.Column('step_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.add_column(sa.Column('keep_open', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('snoozed_until', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('notes', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('closed_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('closed_by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column('updated_at', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_csm_task_assignee_status', ['assignee', 'status'], unique=False)
        batch_op.create_index('ix_csm_task_enrollment_step', ['enrollment_id', 'step_id'], unique=False)
    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approver', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column('approve_by', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('on_deadline', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True))
        batch_op.add_column(sa.Column('decided_by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column('decided_at', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('draft', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('touch', schema=None) as batch_op:
        for name in ('draft', 'decided_at', 'decided_by', 'on_deadline', 'approve_by', 'approver'):
            batch_op.drop_column(name)
    with op.batch_alter_table('csm_task', schema=None) as batch_op:
        batch_op.drop_index('ix_csm_task_enrollment_step')
        batch_op.drop_index('ix_csm_task_assignee_status')
        for name in ('updated_at', 'closed_by', 'closed_reason', 'notes', 'snoozed_until', 'keep_open', 'step_id', 'playbook'):
            batch_op.drop_column(name)
