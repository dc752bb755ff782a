"""Errors a user can act on."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: the message names the file, row or key, what is wrong and how to fix it.

    The command line prints it without a traceback and exits with status 2.
    """
