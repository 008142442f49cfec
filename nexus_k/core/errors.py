"""Errors that mean "the user asked for something we cannot do" (shown as one line, no traceback)."""


class UserError(Exception):
    """Bad input or an unmet precondition; the CLI prints the message and exits with status 2."""
