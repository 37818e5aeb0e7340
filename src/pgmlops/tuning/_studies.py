"""Hyperparameter tuning: start Optuna studies run by the workers, follow them, reach their storage.

A study is started in SQL (``ml.tune``, or :func:`tune` here): it queues one ``tune_trial``
job per trial and a ``tune`` job that refits and registers the best configuration once the
trials are done (handlers in ``pgmlops._tuning_handlers``). Every worker process takes part in
the same Optuna study, stored in this database's schema ``optuna`` through Optuna's
``RDBStorage`` (:func:`optuna_storage`). The study, its trials and its progress are readable
from SQL (``ml.tuning_studies``, ``ml.tuning_trials``, ``ml.tuning_study(id)``) and from here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgmlops import features as datasets
from pgmlops.db import call, resolve_url, sql_errors
from pgmlops.errors import NotFound

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

__all__ = ["OPTUNA_SCHEMA", "optuna_storage", "study_id_of", "study_name", "study_progress", "trials", "tune"]

Conn = psycopg.Connection[Any]

# Optuna's tables live in their own schema of the pgmlops database (created by the migration,
# filled by Optuna on first use), so they never mix with pgmlops' own.
OPTUNA_SCHEMA = "optuna"


def study_name(study_id: UUID | str) -> str:
    """The Optuna study name of a pgmlops study: ``pgmlops-<study uuid>``."""
    return f"pgmlops-{UUID(str(study_id))}"


def tune(conn: Conn, project: str, dataset: UUID | str, algorithm: str, search_space: Mapping[str, Any],
         n_trials: int, options: Mapping[str, Any] | None = None) -> int:
    """Start a study (``ml.tune``) and return the id of its ``tune`` job: ``ml.job_result(id)``
    tells when the best configuration is registered; :func:`study_progress` tells how far it is.

    ``dataset`` is an id, ``'name'`` (newest version) or ``'name@version'``. ``search_space``
    maps hyperparameters to ``{"type": "int" | "float", "low", "high", "log", "step"}`` or
    ``{"type": "categorical", "choices": [...]}``; ``options`` are ``ml.train``'s plus
    ``metric``, ``direction``, ``sampler`` (tpe | random) and ``pruner`` (none | median |
    hyperband).

    Raises:
        NotFound: unknown project or dataset. InvalidInput: unknown algorithm, a bad search
            space, n_trials outside 1..1000, bad options (the message names field and rule).
        AccessDenied: viewers and non-members.
    """
    dataset_id = dataset if isinstance(dataset, UUID) else datasets.dataset_info(conn, dataset).id
    return int(call(conn, "ml.tune(%s, %s, %s, %s, %s, %s)",
                    (project, dataset_id, algorithm, Jsonb(dict(search_space)), n_trials, Jsonb(dict(options or {})))))


def study_id_of(conn: Conn, tune_job_id: int) -> UUID:
    """The study a ``tune`` job (as :func:`tune` returns it) belongs to.

    Raises:
        NotFound: no study of the caller's has that job.
    """
    with sql_errors():
        row = conn.execute("select id from ml.tuning_studies where tune_job_id = %s", (tune_job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no tuning study has tune job {tune_job_id}", "P0002")
    return UUID(str(row[0]))


def _study_id(conn: Conn, study: UUID | str | int) -> UUID:
    return study_id_of(conn, study) if isinstance(study, int) else UUID(str(study))


def study_progress(conn: Conn, study: UUID | str | int) -> dict[str, Any]:
    """A study's progress (``ml.tuning_study``): status, n_trials, complete, pruned, failed,
    running, finished, best_value, best_params, best_trial, ... ``study`` is the study's id or
    its tune job's id.

    Raises:
        NotFound: the caller cannot read the study.
    """
    study_id = _study_id(conn, study)
    return dict(call(conn, "ml.tuning_study(%s)", (study_id,)))


def trials(conn: Conn, study: UUID | str | int) -> list[dict[str, Any]]:
    """The study's trials (``ml.tuning_trials``) in number order: number, state, params, value,
    duration. ``study`` is the study's id or its tune job's id."""
    study_id = _study_id(conn, study)
    with sql_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select number, state, params, value, duration from ml.tuning_trials "
                    "where study_id = %s order by number", (study_id,))
        return list(cur.fetchall())


# -- Optuna's storage ----------------------------------------------------------------------------

_storages: dict[str, RDBStorage] = {}
_storages_lock = threading.Lock()


def _conninfo(source: str | Conn | None) -> str:
    if isinstance(source, psycopg.Connection):
        # A connection's dsn leaves the password out; put it back.
        return make_conninfo(source.info.dsn, password=source.info.password or None)
    return make_conninfo(resolve_url(source))


def optuna_storage(source: str | Conn | None = None) -> RDBStorage:
    """An Optuna ``RDBStorage`` on the pgmlops database, its tables in schema ``optuna``.

    ``source`` is a database URL, an open connection whose parameters are reused, or None (see
    :func:`pgmlops.db.resolve_url`). One storage per database and process is kept and returned
    again. Optuna creates its tables the first time; concurrent first uses wait on an advisory
    lock, so two workers starting at once do not both create them. Optuna's own heartbeat is
    off: a trial whose worker died is failed by the queue's retry of its job instead.
    """
    from optuna.storages import RDBStorage

    conninfo = _conninfo(source)
    with _storages_lock:
        storage = _storages.get(conninfo)
        if storage is not None:
            return storage
        params = conninfo_to_dict(conninfo)
        options = " ".join(filter(None, [str(params.get("options") or ""), f"-csearch_path={OPTUNA_SCHEMA}"]))

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(conninfo, options=options, application_name="pgmlops optuna")

        with psycopg.connect(conninfo, autocommit=True) as lock:
            lock.execute("select pg_advisory_lock(hashtextextended('pgmlops.optuna_storage', 0))")
            storage = RDBStorage("postgresql+psycopg://", engine_kwargs={"creator": connect, "pool_pre_ping": True})
        _storages[conninfo] = storage
        return storage
