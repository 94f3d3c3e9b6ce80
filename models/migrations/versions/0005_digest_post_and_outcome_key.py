"""digest posts and revenue outcome keys as rows with unique keys

The weekly digest's posted-once record was a JSON-lines file under a lock on one machine; the
revenue outcomes' reconciliation key was the first word of the free-text ``note``. Both become
database rows with unique keys, so several machines agree.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:40:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import models._types


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('digest_post',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('provider_id', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('started_at', models._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', models._types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('outcome') as batch_op:
        batch_op.add_column(sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True))

    # revenue outcomes recorded so far carry their key as the first word of the note
    outcome = sa.table(
        'outcome',
        sa.column('id', sa.Integer),
        sa.column('account_id', sa.Integer),
        sa.column('enrollment_id', sa.Integer),
        sa.column('note', sa.String),
        sa.column('key', sa.String),
        sa.column('source', sa.String),
        sa.column('recorded_by', sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(outcome.c.id, outcome.c.account_id, outcome.c.enrollment_id, outcome.c.note)
        .where(outcome.c.source == 'revenue', outcome.c.recorded_by == 'retain:revenue')
        .order_by(outcome.c.id)
    ).all()
    seen: set[tuple[int, str, int]] = set()
    duplicates: list[int] = []
    for id_, account_id, enrollment_id, note in rows:
        key = (note or '').split(' ', 1)[0][:120] or None
        identity = (account_id, key or '', enrollment_id or 0)
        if key is not None and identity in seen:
            duplicates.append(id_)  # a second copy of the same outcome: the unique key below forbids it
            continue
        seen.add(identity)
        conn.execute(sa.update(outcome).where(outcome.c.id == id_).values(key=key))
    for start in range(0, len(duplicates), 500):
        conn.execute(sa.delete(outcome).where(outcome.c.id.in_(duplicates[start:start + 500])))
    op.create_index(
        'uq_outcome_key', 'outcome', ['account_id', 'key', sa.text('coalesce(enrollment_id, 0)')], unique=True
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('uq_outcome_key', table_name='outcome')
    with op.batch_alter_table('outcome') as batch_op:
        batch_op.drop_column('key')
    op.drop_table('digest_post')
