"""one answer per survey sent: survey_response.touch_id is unique

An answer through a survey link updates the one already given; two at once (a double tap on the
survey page of ``retain web``) could both insert. The unique index holds it in the database; any
duplicates a race left before are folded into the latest answer first.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 11:50:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(sa.text(
        "DELETE FROM survey_response WHERE touch_id IS NOT NULL AND id NOT IN "
        "(SELECT max(id) FROM survey_response WHERE touch_id IS NOT NULL GROUP BY touch_id)"
    ))
    with op.batch_alter_table('survey_response', schema=None) as batch_op:
        batch_op.create_index('uq_survey_response_touch', ['touch_id'], unique=True)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('survey_response', schema=None) as batch_op:
        batch_op.drop_index('uq_survey_response_touch')
