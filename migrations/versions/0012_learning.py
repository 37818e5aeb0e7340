"""Learning: the SGD algorithms continuous learning starts from.

ml.algorithms gains sgd_classifier and sgd_regressor (scikit-learn's SGDClassifier and
SGDRegressor), the incremental models a retraining policy's continuous learning updates with
partial_fit (docs/retraining.md, "Continuous learning"). The functions that changed with this
release (one learn cycle per project at a time, the standing approval of an automatic
promotion policy) live in the repeatable sql/.

Revision ID: 0012_learning
Revises: 0011_retraining
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_sql, run_sql_files_tracked

revision = "0012_learning"
down_revision = "0011_retraining"
branch_labels = None
depends_on = None

FILES = ["algorithms.sql"]  # in 0012_learning/, in this order


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES)


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head, then what this revision
    # made (and its entries in pgmlops' registries).
    drop_tracked(revision)
    # The algorithms 0012_learning/algorithms.sql registered, but those a run or a tuning study
    # still names: their foreign keys keep those rows (and the history that uses them).
    run_sql("""
        delete from ml.algorithms a
        where a.name in ('sgd_classifier', 'sgd_regressor')
          and not exists (select 1 from ml.runs r where r.algorithm = a.name)
          and not exists (select 1 from ml.tuning_studies s where s.algorithm = a.name);
    """)
