"""`pgmlops tenants`: tenants and members."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgmlops import tenants
from pgmlops.cli._common import connection, console
from pgmlops.db import sql_errors

app = typer.Typer(help="Tenants and members.", no_args_is_help=True)


@app.command("create")
def tenants_create(name: str, owner: Annotated[str | None, typer.Option(help="Owner's user id.")] = None) -> None:
    """Create a tenant and print its id."""
    with connection() as conn:
        console.print(str(tenants.create_tenant(conn, name, owner)))


@app.command("add-member")
def tenants_add_member(tenant: str, user_id: str, role: str) -> None:
    """Add a member to a tenant with a role (owner, admin, ml_engineer, viewer)."""
    with connection() as conn:
        tenants.add_member(conn, tenant, user_id, role)
    console.print("ok")


@app.command("list")
def tenants_list() -> None:
    """List tenants with their member counts."""
    with connection() as conn, sql_errors():
        rows = conn.execute(
            "select t.id, t.name, count(m.user_id), t.created_at from ml.tenants t "
            "left join ml.tenant_members m on m.tenant_id = t.id group by t.id order by t.created_at"
        ).fetchall()
    table = Table("id", "name", "members", "created")
    for r in rows:
        table.add_row(str(r[0]), r[1], str(r[2]), f"{r[3]:%Y-%m-%d %H:%M}")
    console.print(table)
