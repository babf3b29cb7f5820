"""Redacting credentials from store URIs and any text that may quote one.

A store URI may carry secrets: the user-info part (``s3://KEY:SECRET@bucket``)
or the ``access_key``, ``secret_key`` and ``session_token`` query options that
pyarrow accepts. Every store location that is printed or persisted (the sweep
record, Tune's parameters, reports, error lines, crash logs) goes through
:func:`redact_secrets` first; what is pickled to disk (Tune's storage
filesystem) is built after :func:`split_credentials`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

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


_AWS_ENV = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY",
            "session_token": "AWS_SESSION_TOKEN"}


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """An ``s3://`` URI without its credentials, and the AWS environment variables that carry them.

    For objects that get pickled to disk (Ray Tune persists its storage
    filesystem): built from the bare URI, a filesystem takes its credentials
    from the environment and its pickle holds none. Other URIs come back
    unchanged, with no variables.
    """
    parts = urlsplit(uri)
    if parts.scheme != "s3":
        return uri, {}
    env: dict[str, str] = {}
    netloc = parts.netloc
    if "@" in netloc:
        user_info, netloc = netloc.rsplit("@", 1)
        key, _, secret = user_info.partition(":")
        env.update(AWS_ACCESS_KEY_ID=unquote(key), AWS_SECRET_ACCESS_KEY=unquote(secret))
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _AWS_ENV:
            env[_AWS_ENV[name]] = value
    kept = "&".join(part for part in parts.query.split("&") if part and part.split("=", 1)[0] not in _AWS_ENV)
    return urlunsplit((parts.scheme, netloc, parts.path, kept, parts.fragment)), env
