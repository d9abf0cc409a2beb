"""The command line: thin Typer commands that import heavy modules only when run."""
