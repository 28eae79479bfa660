"""The one exception type of the ``orrery`` CLI.

Every failure a user can meet — bad arguments, an unreachable server, an HTTP error, a malformed
config file — is raised as :class:`CliError`; :func:`orrery.cli.main` prints its message on one
line as ``Error: <message>`` and exits with :attr:`CliError.exit_code`.
"""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A user-facing failure; ``message`` is printed on a single line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        self.message = " ".join(message.split()) if "\n" in message else message.strip()
        self.exit_code = exit_code
        super().__init__(self.message)
