"""Placeholder sub-app; the area's owner fills in the commands."""

import typer

app = typer.Typer(no_args_is_help=True)
