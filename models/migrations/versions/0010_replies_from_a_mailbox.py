"""replies from a mailbox: the messages that answered touches, kept once by their Message-ID

``retain replies poll`` reads a mailbox over IMAP from its cursor (UIDVALIDITY and the highest UID
processed, in sync_cursor, its runs in sync_run); a reply or an automatic reply to a touch is kept
once by its Message-ID (inbound_message). A reply names the message it answers by its Message-ID, which an
email touch keeps in provider_id: indexed now that replies are looked up by it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 10:32:55.945203

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import models._types


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('inbound_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('mailbox', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('touch_id', sa.Integer(), nullable=False),
    sa.Column('from_address', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('received_at', models._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('processed_at', models._types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['touch_id'], ['touch.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_message_touch_id'), ['touch_id'], unique=False)

    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.create_index('ix_touch_provider_id', ['provider_id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.drop_index('ix_touch_provider_id')

    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_message_touch_id'))

    op.drop_table('inbound_message')
