"""Redacting credentials from store URIs and any text that may quote one.

A store URI may carry secrets: the user-info part (``s3://KEY:SECRET@bucket``)
or the ``access_key``, ``secret_key`` and ``session_token`` query options that
pyarrow accepts. Every store location that is printed or persisted (the sweep
record, Tune's parameters, reports, error lines, crash logs) goes through
:func:`redact_secrets` first.
"""

from __future__ import annotations

import re

REDACTED = "***"

_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"]*@")
_SECRET_OPTIONS = re.compile(
    r"(?P<key>\b(?:access_key|secret_key|session_token)=)[^&#\s'\"]*", re.IGNORECASE
)


def redact_secrets(text: str) -> str:
    """``text`` with every URI's user-info and secret query options replaced by ``***``.

    Works on a bare URI (``s3://K:S@b/p?secret_key=S`` -> ``s3://***@b/p?secret_key=***``)
    and on any message that quotes one.
    """
    text = _USER_INFO.sub(rf"\g<scheme>{REDACTED}@", text)
    return _SECRET_OPTIONS.sub(rf"\g<key>{REDACTED}", text)
