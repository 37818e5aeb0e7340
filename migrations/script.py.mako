"""${message}

Its SQL lives in the directory beside this script, named like it (docs/migrations.md): frozen once
the revision is released. Functions, views, triggers, policies and grants go to sql/ instead.

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date.strftime("%Y-%m-%d %H:%M:%S")}
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_sql_files_tracked

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

FILES: list[str] = []  # in ${up_revision}/, run in this order


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES)


def downgrade() -> None:
    drop_tracked(revision)
