"""The `pgmlops` command line: a thin layer over the library (typer + rich)."""

from __future__ import annotations

from pgmlops.cli._app import app, main

__all__ = ["app", "main"]
