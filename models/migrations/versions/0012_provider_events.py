"""provider events: what the email provider reports about a message, kept once by its event id

``retain web`` receives the events of an email provider (a generic JSON shape, SendGrid's Event
Webhook): each is kept once by (provider, event id) in provider_event, and recorded on its touch:
delivered_at, opened_at, and the new clicked_at, bounced_at and complained_at, which
``touches("step")`` reads in branch and wait_for.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 11:05:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import models._types


# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('provider_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('occurred_at', models._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', models._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['touch_id'], ['touch.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'event_id', name='uq_provider_event')
    )
    with op.batch_alter_table('provider_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_event_touch_id'), ['touch_id'], unique=False)

    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('clicked_at', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('bounced_at', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('complained_at', models._types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.drop_column('complained_at')
        batch_op.drop_column('bounced_at')
        batch_op.drop_column('clicked_at')

    with op.batch_alter_table('provider_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_event_touch_id'))

    op.drop_table('provider_event')
