"""product events, product users, ticket satisfaction, last seen, event-triggered enrollments

Product events in the Segment spec (track, identify, group) land in ``product_event``, once per
message id; ``product_user`` ties a user to an account (group) and keeps its traits (identify).
An account's ``last_seen_at`` comes from its users' events; a ticket has a satisfaction rating;
an enrollment started by an event names it (``trigger_event_id``), so each event enrolls once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import models._types


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('product_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', models._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    with op.batch_alter_table('product_event', schema=None) as batch_op:
        batch_op.create_index('ix_product_event_account_name_at', ['account_id', 'name', 'occurred_at'], unique=False)

    op.create_table('product_user',
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('traits', sa.JSON(), nullable=False),
    sa.Column('first_seen_at', models._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', models._types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], ),
    sa.PrimaryKeyConstraint('user_id')
    )
    with op.batch_alter_table('product_user', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_product_user_account_id'), ['account_id'], unique=False)

    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_at', models._types.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('support_ticket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('satisfaction', sa.Integer(), nullable=True))
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trigger_event_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_enrollment_trigger_event_id'), ['trigger_event_id'], unique=False)
        batch_op.create_foreign_key('fk_enrollment_trigger_event', 'product_event', ['trigger_event_id'], ['id'])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.drop_constraint('fk_enrollment_trigger_event', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_enrollment_trigger_event_id'))
        batch_op.drop_column('trigger_event_id')
    with op.batch_alter_table('support_ticket', schema=None) as batch_op:
        batch_op.drop_column('satisfaction')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_column('last_seen_at')
    with op.batch_alter_table('product_user', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_product_user_account_id'))
    op.drop_table('product_user')
    with op.batch_alter_table('product_event', schema=None) as batch_op:
        batch_op.drop_index('ix_product_event_account_name_at')
    op.drop_table('product_event')
