"""Errors a person can act on that more than one layer raises or catches.

Each message is one line naming the thing and what to do; the CLI prints it
and exits with code 2. Defined here, below every layer, so that catching one
needs none of the heavy modules that raise it (ray, for a sweep that cannot
start).
"""

from __future__ import annotations


class SetupError(Exception):
    """The sweep cannot start (no cluster, storage not shared, no GPU); one line for people."""
