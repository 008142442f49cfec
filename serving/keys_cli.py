"""``nexus-k keys``: API keys per organisation (being written)."""

import typer

app = typer.Typer(no_args_is_help=True)
