"""`pgmlops migrate` and `pgmlops supabase export`: the schema and its Supabase files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pgmlops import migrations
from pgmlops.cli._common import console, database_url, err_console

supabase_app = typer.Typer(help="Supabase project files.", no_args_is_help=True)


def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    downgrade: Annotated[bool, typer.Option("--downgrade", help="Downgrade to --revision (default -1).")] = False,
) -> None:
    """Upgrade the database to the latest schema (or downgrade with --downgrade)."""
    url = database_url()
    with err_console.status("migrating"):
        if downgrade:
            migrations.downgrade(url, "-1" if revision == "head" else revision)
        else:
            migrations.upgrade(url, revision)
    console.print(f"schema at revision [bold]{migrations.current(url) or 'base'}[/bold]")


@supabase_app.command("export")
def supabase_export(
    directory: Annotated[Path, typer.Option("--dir", help="Supabase project directory.")] = Path("supabase"),
    seeds: Annotated[Path, typer.Option(help="Directory of seed SQL files.")] = Path("seeds"),
    check: Annotated[bool, typer.Option("--check", help="Only check that the export is current (exit 1 if not).")] = False,
) -> None:
    """Write each new revision as a Supabase migration (Alembic offline SQL) and seeds/ as seed.sql."""
    migrations_dir, seed_file = directory / "migrations", directory / "seed.sql"
    if check:
        current = migrations.supabase_export_is_current(migrations_dir, seed_file, seeds)
        console.print("supabase export is current" if current else "supabase export is OUT OF DATE")
        raise typer.Exit(0 if current else 1)
    written = migrations.export_supabase(migrations_dir)
    for path in written:
        console.print(f"wrote {path}")
    if not written:
        console.print(f"unchanged {migrations_dir}")
    console.print(f"{'wrote' if migrations.export_seed(seed_file, seeds) else 'unchanged'} {seed_file}")
