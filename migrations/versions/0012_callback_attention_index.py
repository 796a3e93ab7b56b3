"""callbacks an admin should look at: a partial index of quarantined and conflicting ones

Revision ID: 0012_callback_attention_index
Revises: 0011_job_runner
Create Date: 2026-12-04 08:00:00.000000

The quarantined-callbacks screen pages through ``callback_log`` rows whose outcome is
``quarantined`` or ``conflict``, newest first. They are rare, so a partial index on ``id``
finds them without reading the whole log, and a confirmation stored as usual writes
nothing to it.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0012_callback_attention_index"
down_revision = "0011_job_runner"
branch_labels = None
depends_on = None

_ATTENTION = sa.text("outcome IN ('quarantined', 'conflict')")


def upgrade():
    op.create_index(
        "ix_callback_log_attention",
        "callback_log",
        ["id"],
        unique=False,
        sqlite_where=_ATTENTION,
        postgresql_where=_ATTENTION,
    )


def downgrade():
    op.drop_index("ix_callback_log_attention", table_name="callback_log")
