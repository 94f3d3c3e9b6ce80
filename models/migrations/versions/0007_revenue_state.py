"""account state from revenue: mrr, last expansion and contraction dates, each source's data-through date

``retain revenue import`` keeps an account's status, churn, reactivation, renewal, expansion and
contraction dates and its MRR/ARR current from its revenue (flows/analytics/state.py); each data
source records the date its data runs through, so that nothing after it reads as churn.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:05:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import models._types


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('data_source',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('data_through', sa.Date(), nullable=False),
    sa.Column('updated_at', models._types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mrr', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('expanded_at', models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('contracted_at', models._types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_column('contracted_at')
        batch_op.drop_column('expanded_at')
        batch_op.drop_column('mrr')
    op.drop_table('data_source')
