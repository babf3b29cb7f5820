"""The primitives of config validation: one-line errors that echo a bad value, and the checks of
integers, numbers and choices bounded by the Arrow columns that store them."""

from __future__ import annotations

import math
import reprlib
from typing import Any

from trainables.errors import UserError

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

ECHO_CHARS = 40
"""Longest echo of a bad value in an error line."""


class ConfigError(UserError):
    """One line: the field, the bad value, what is allowed."""


_ECHO = reprlib.Repr()
_ECHO.maxlevel = 3
_ECHO.maxtuple = _ECHO.maxlist = _ECHO.maxdict = _ECHO.maxset = 4
_ECHO.maxstring = _ECHO.maxother = _ECHO.maxlong = ECHO_CHARS


def echo(value: Any) -> str:
    """``repr(value)`` cut to about ECHO_CHARS characters, at bounded cost for any value."""
    text = _ECHO.repr(value)
    return text if len(text) <= ECHO_CHARS + 5 else text[:ECHO_CHARS] + "…"


def fail(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{field}: {echo(value)} is not allowed; {allowed}")


def integer(raw: dict, field: str, minimum: int, default: int | None = None, maximum: int = INT32_MAX) -> int:
    """An integer in [minimum, maximum]; the default maximum is that of an int32 column."""
    value = raw.get(field.rsplit(".", 1)[-1], default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise fail(field, value, f"expected an integer in [{minimum}, {maximum}]")
    return value


def number(raw: dict, field: str, default: float | None, positive: bool) -> float:
    value = raw.get(field.rsplit(".", 1)[-1], default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise fail(field, value, f"expected a number {'> 0' if positive else '>= 0'}")
    return float(value)


def choice(raw: dict, field: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = raw.get(field.rsplit(".", 1)[-1], default)
    if value not in allowed:
        raise fail(field, value, f"allowed: {', '.join(allowed)}")
    return value
