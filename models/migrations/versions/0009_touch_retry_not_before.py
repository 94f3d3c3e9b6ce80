"""touch retry_not_before: a Retry-After (or back-off) recorded before it is waited out

A delivery run that waits out a short ``Retry-After`` records the moment first, so that a run
killed while waiting leaves it behind and the next run does not ask the receiver again too early.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:50:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import models._types


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retry_not_before', models._types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.drop_column('retry_not_before')
