"""The base of every expected failure, in a module that imports nothing.

An expected failure (a bad config value, an unreachable or damaged store, a
missing dataset, a cluster that does not answer) is raised as a subclass of
:class:`UserError` whose message is one line naming the thing and what to do;
the CLI prints that line and exits 2. Anything else is a bug.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure; ``str(err)`` is one line for the user."""


class DataError(UserError):
    """A dataset that cannot be found or trusted; the message says what was tried and the fix."""


class StoreError(UserError):
    """A store that cannot be opened, read or trusted; the message says which."""


class StoreUnwritable(StoreError):
    """A write that the store's filesystem refuses for good (no space left, read-only): retrying
    cannot help; the message names the path and the cause."""


class WeightsDamaged(StoreError):
    """A stored weights file that is missing or does not match its ``index/weights`` rows; the
    message names the file, its epoch and what differs."""
