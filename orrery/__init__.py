"""Orrery's user-facing entry points: the standalone server, the quickstart and the CLI."""
