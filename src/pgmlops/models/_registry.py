"""The model registry from Python: models, versions, aliases, approvals, promotion policies and gates.

A thin layer over the SQL API (sql/registry.sql): version numbering, the SHA-256 check of every
registered artifact, the promotion gates and the audit log live in the database, so Python,
psql, Supabase RPC and edge functions all meet the same rules.

Versions are named by references: ``"churn"`` (the newest version), ``"churn@3"`` (version 3) or
``"churn@champion"`` (the version the alias points at). Every function takes an open psycopg
connection acting for a tenant (inside :func:`pgmlops.db.tenant_context`) and raises
:mod:`pgmlops.errors` exceptions for errors from the SQL API; writes join the connection's
transaction (commit it, or use an autocommit connection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgmlops.db import call, sql_errors
from pgmlops.errors import InvalidInput, PromotionRefused

__all__ = [
    "ModelRef",
    "PromotionRefused",
    "approve",
    "check_promotion",
    "list_models",
    "load_model",
    "model_version",
    "parse_ref",
    "promote",
    "set_alias",
    "set_policy",
    "show",
]

_REF = re.compile(r"^(?P<model>[a-z][a-z0-9_-]{0,62})(?:@(?:(?P<version>[0-9]{1,9})|(?P<alias>[a-z][a-z0-9_-]{0,62})))?$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: the model, and a version number or an alias (neither: the newest)."""

    model: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.model}@{self.version}"
        return f"{self.model}@{self.alias}" if self.alias else self.model


def _one(conn: psycopg.Connection[Any], expression: str, params: tuple[Any, ...]) -> Any:
    result = call(conn, expression, params)
    assert result is not None
    return result


def parse_ref(ref: str | ModelRef) -> ModelRef:
    """Parse ``"model"``, ``"model@3"`` or ``"model@alias"``.

    Raises:
        InvalidInput: ``ref`` is not a model reference (a ``ValueError`` too).
    """
    if isinstance(ref, ModelRef):
        return ref
    match = _REF.match(ref.strip())
    if match is None:
        raise InvalidInput(f"not a model reference (model, model@version or model@alias): {ref!r}", "22023")
    version = match.group("version")
    return ModelRef(match.group("model"), int(version) if version else None, match.group("alias"))


def list_models(conn: psycopg.Connection[Any], project: str | None = None) -> list[dict[str, Any]]:
    """The models of the tenant the caller acts for, by name: ``{name, project, task, versions,
    latest_version, aliases: {alias: version}, created_at}``; only ``project``'s when given.

    Raises:
        AccessDenied: the caller is not a member of the tenant.
    """
    with sql_errors():
        cur = conn.execute(
            """select m.name, p.name, p.task, count(v.id), max(v.version),
                      coalesce((select jsonb_object_agg(a.alias, av.version)
                                from ml.model_aliases a join ml.model_versions av on av.id = a.model_version_id
                                where a.model_id = m.id), '{}'),
                      m.created_at
               from ml.models m
               join ml.projects p on p.id = m.project_id
               left join ml.model_versions v on v.model_id = m.id
               where m.tenant_id = (select ml.current_tenant())
                 and (%(project)s::text is null or p.name = %(project)s::text)
               group by m.id, p.name, p.task
               order by m.name""", {"project": project})
        rows = cur.fetchall()
    return [{"name": r[0], "project": r[1], "task": r[2], "versions": int(r[3]), "latest_version": r[4],
             "aliases": dict(r[5]), "created_at": r[6]} for r in rows]


def show(conn: psycopg.Connection[Any], ref: str | ModelRef) -> dict[str, Any]:
    """A model (``"churn"``: ``ml.model``, with its versions, aliases and policies) or one version
    (``"churn@3"``, ``"churn@champion"``: ``ml.model_version``).

    Raises:
        NotFound: no such model, version or alias.
    """
    parsed = parse_ref(ref)
    if parsed.version is None and parsed.alias is None:
        return dict(_one(conn, "ml.model(%s)", (parsed.model,)))
    return model_version(conn, parsed)


def model_version(conn: psycopg.Connection[Any], ref: str | ModelRef) -> dict[str, Any]:
    """One version as ``ml.model_version`` returns it (no artifact bytes); ``"churn"`` is the newest.

    Raises:
        NotFound: no such model, version or alias (or a model with no versions).
    """
    parsed = parse_ref(ref)
    return dict(_one(conn, "ml.model_version(%s, %s, %s)", (parsed.model, parsed.version, parsed.alias)))


def set_alias(conn: psycopg.Connection[Any], model: str, alias: str, version: int | None) -> dict[str, Any] | None:
    """Point ``alias`` of ``model`` at ``version`` (None removes the alias); returns
    ``{alias, version, model_version_id}`` or None when removed.

    Raises:
        InvalidInput: a bad alias name.
        NotFound: no such model or version.
        InvalidState: the alias has a promotion policy: use :func:`promote`.
        AccessDenied: the caller may not write in the tenant.
    """
    result = call(conn, "ml.set_alias(%s, %s, %s)", (model, alias, version))
    return dict(result) if result is not None else None


def approve(conn: psycopg.Connection[Any], model: str, version: int, decision: str = "approved",
            comment: str | None = None) -> dict[str, Any]:
    """Record the signed-in caller's review (``approved`` or ``rejected``) of a version; returns
    ``{model, version, decision, approvals, rejections}``.

    Raises:
        InvalidInput: a bad decision.
        NotFound: no such model or version.
        AccessDenied: a service caller, a viewer, or not a member (reviews are people's:
            owner, admin or ml_engineer).
    """
    return dict(_one(conn, "ml.approve(%s, %s, %s, %s)", (model, version, decision, comment)))


def set_policy(conn: psycopg.Connection[Any], project: str, policy: dict[str, Any] | None, *,
               alias: str = "champion") -> dict[str, Any] | None:
    """Set the gates a version must pass before :func:`promote` points ``alias`` of the
    project's models at it (None removes the policy). ``policy`` keys, all optional:
    ``min_metrics`` and ``max_metrics`` ({metric: bound}), ``max_inference_latency_ms``,
    ``min_approvals``, ``min_hours_as_challenger``. Returns the policy as stored.

    Raises:
        InvalidInput: a bad alias or policy (the message names the key and the rule).
        NotFound: no such project.
        AccessDenied: the caller is not an owner or admin of the tenant.
    """
    result = call(conn, "ml.set_promotion_policy(%s, %s, %s)",
                  (project, alias, Jsonb(policy) if policy is not None else None))
    return dict(result) if result is not None else None


def check_promotion(conn: psycopg.Connection[Any], model: str, version: int, alias: str = "champion") -> dict[str, Any]:
    """What :func:`promote` would decide now, changing nothing:
    ``{model, version, alias, policy, passed, gates: [{gate, passed, message}]}``."""
    return dict(_one(conn, "ml.check_promotion(%s, %s, %s)", (model, version, alias)))


def promote(conn: psycopg.Connection[Any], model: str, version: int, alias: str = "champion") -> dict[str, Any]:
    """Point ``alias`` of ``model`` at ``version`` once every gate of the project's policy
    passes; returns ``{model, version, alias, previous_version, changed, gates}``.

    Raises:
        PromotionRefused: a gate failed (``.failed`` lists each one); nothing changed.
        NotFound: no such model or version.
        AccessDenied: the caller may not write in the tenant.
    """
    return dict(_one(conn, "ml.promote(%s, %s, %s)", (model, version, alias)))


def load_model(conn: psycopg.Connection[Any], ref: str | ModelRef) -> Any:
    """Load the fitted model ``ref`` names (``"churn@champion"``, ``"churn@3"``, ``"churn"``).

    The artifact is read with ``ml.model_artifact`` and loaded by :func:`pgmlops.models.artifacts.load`:
    skops with its allowlist of trusted types, or a torch state dict with ``weights_only``; its
    SHA-256 is checked against the one recorded at registration.

    Raises:
        NotFound: no such model, version or alias.
        pgmlops.models.artifacts.ArtifactError: the bytes do not match their SHA-256, or hold a type
            outside the allowlist.
    """
    from pgmlops.models import artifacts

    parsed = parse_ref(ref)
    with sql_errors():
        row = conn.execute("select artifact, artifact_format, artifact_sha256 from ml.model_artifact(%s, %s)",
                           (str(parsed), None)).fetchone()
    assert row is not None
    return artifacts.load(bytes(row[0]), row[1], row[2])
