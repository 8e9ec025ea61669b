"""Value types and text parsers of the config: secrets, durations, timestamps, env references, URLs."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Mapping
from urllib.parse import SplitResult, urlsplit

ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
ENV_REF = re.compile(r"\$\{env:(" + ENV_NAME_PATTERN + r")\}")
"""A `${env:NAME}` reference: the only way a secret (or a credential in a URL) enters a config."""

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
"""Hosts that may be spoken to over plain http (a local emulator or tunnel); nothing else may."""


class SecretUnavailable(LookupError):
    """The environment variable behind a `Secret` is not set (or empty) at the moment of use."""

    def __init__(self, env_name: str) -> None:
        self.env_name = env_name
        super().__init__(f"environment variable {env_name} is not set (a secret in the config refers to it)")


@dataclass(frozen=True)
class Secret:
    """A secret named by the environment variable that holds it; the value is read only at use.

    The config never holds the value itself, so no repr, log line, problem report or evidence
    pack can leak it: printing a `Secret` shows `${env:NAME}`, exactly what the file says.
    """

    env_name: str
    """The environment variable that holds the value, e.g. ``CRMCTL_SECRET``."""

    def reveal(self, env: Mapping[str, str] = os.environ) -> str:
        """Returns the value, read now from `env`.

        Raises:
            SecretUnavailable: the variable is not set, or set to the empty string.
        """
        value = env.get(self.env_name)
        if not value:
            raise SecretUnavailable(self.env_name)
        return value

    def __str__(self) -> str:
        return f"${{env:{self.env_name}}}"

    def __repr__(self) -> str:
        return f"Secret(env_name={self.env_name!r})"


def whole_env_ref(text: str) -> str | None:
    """The variable name when `text` is exactly one `${env:NAME}` (surrounding blanks allowed)."""
    match = ENV_REF.fullmatch(text.strip())
    return match.group(1) if match else None


def has_env_syntax(text: str) -> bool:
    """True when `text` contains `${`: an env reference, or a malformed attempt at one."""
    return "${" in text


@dataclass(frozen=True)
class Substitution:
    """The outcome of replacing every `${env:NAME}` in one string with the variable's value."""

    value: str
    """The text with every reference replaced (references to unset variables left as written)."""
    names: tuple[str, ...]
    """The variables referenced, in order of appearance."""
    missing: tuple[str, ...]
    """Referenced variables that are unset or empty in the environment given."""
    malformed: bool
    """True when a `${` remains that is not a well-formed `${env:NAME}`."""


def substitute_env(text: str, env: Mapping[str, str]) -> Substitution:
    """Replaces each `${env:NAME}` in `text` by its value from `env`."""
    names: list[str] = []
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        names.append(name)
        value = env.get(name)
        if not value:
            missing.append(name)
            return match.group(0)
        return value

    value = ENV_REF.sub(replace, text)
    malformed = "${" in ENV_REF.sub("", text)
    return Substitution(value, tuple(names), tuple(dict.fromkeys(missing)), malformed)


DURATION_EXAMPLES = "a duration such as 30s, 15m, 2h, 1d, 1h30m, 250ms or a number of seconds"
_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: object) -> timedelta:
    """Reads a duration: ``30s``, ``15m``, ``2h``, ``1d``, ``1h30m``, ``250ms``, or bare seconds.

    Bare numbers (YAML integers or floats, or digit strings) are seconds, since that is the one
    unit nobody needs to be told. Negative durations are refused: nothing in a cutover lasts less
    than no time.

    Raises:
        ValueError: `value` is not a duration; the message says what was seen.
    """
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a duration")
    if isinstance(value, (int, float)):
        if isinstance(value, int) and abs(value) > 10**15:  # past float range, or past any timedelta
            raise ValueError("a number of seconds that large is not a duration")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value} is not a non-negative number of seconds")
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"{value} seconds is too long") from None
    if not isinstance(value, str):
        raise ValueError("not a duration")
    text = value.strip()
    try:
        if _PLAIN_NUMBER.fullmatch(text):
            return timedelta(seconds=float(text))
        if not text or not _DURATION.fullmatch(text):
            raise ValueError(f"{value!r} is not a duration")
        total = timedelta(0)
        for number, unit in _DURATION_PART.findall(text):
            total += _UNITS[unit] * float(number)
        return total
    except OverflowError:
        raise ValueError(f"{value!r} is too long") from None


def format_duration(delta: timedelta) -> str:
    """Writes a duration the way the config reads them (``1h30m``, ``250ms``, ``0s``)."""
    if delta < timedelta(0):
        return "-" + format_duration(-delta)
    micros = delta // timedelta(microseconds=1)
    parts: list[str] = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000)):
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        millis = micros / 1000
        parts.append(f"{millis:g}ms")
    return "".join(parts) or "0s"


TIMESTAMP_EXAMPLE = "an ISO-8601 timestamp with a timezone, such as 2026-11-28T23:00:00Z"


def parse_timestamp(value: object) -> datetime:
    """Reads an aware timestamp and returns it in UTC.

    YAML hands over unquoted timestamps as datetimes already, quoted ones as text; both are
    accepted. A timestamp without a timezone is refused rather than guessed: a war room spans
    time zones, and a point of no return an hour off is worse than an error at startup.

    Raises:
        ValueError: not a timestamp, or ``timezone required``.
    """
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):
        raise ValueError("timezone required (a date alone has no time or timezone)")
    elif isinstance(value, str):
        text = value.strip()
        try:
            stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" and text else text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    else:
        raise ValueError("not a timestamp")
    if stamp.tzinfo is None or stamp.utcoffset() is None:
        raise ValueError("timezone required")
    try:
        return stamp.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("timestamp is out of range") from None


DATE_EXAMPLE = "a date such as 2026-11-28"


def parse_date(value: object) -> date:
    """Reads a calendar date (YAML's unquoted ``2026-11-28``, or the same text quoted).

    Raises:
        ValueError: not a plain date (a timestamp is refused too: a day is meant, not an instant).
    """
    if isinstance(value, datetime):
        raise ValueError("a timestamp, not a date")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date") from None
    raise ValueError("not a date")


def split_url(text: str) -> SplitResult:
    """Splits an absolute URL, checking what `urlsplit` leaves unchecked.

    Raises:
        ValueError: no scheme, no host, blanks inside, or a port that is not a number.
    """
    if not text or any(ch.isspace() for ch in text):
        raise ValueError("contains blanks" if text else "is empty")
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc or not parts.hostname:
        raise ValueError("is not an absolute URL with a scheme and a host")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily, on access
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    return parts


def url_password_is_literal(parts: SplitResult, template: str) -> bool:
    """True when a URL carries a password that was written into the file, not taken from env.

    ``postgresql://app:hunter2@db/crm`` is a literal secret; ``postgresql://app:${env:DB_PASSWORD}@db/crm``
    is not.
    """
    if parts.password is None:
        return False
    written = urlsplit(template)
    try:
        written_password = written.password
    except ValueError:
        return True
    return written_password is None or whole_env_ref(written_password) is None


def mask_url(template: str) -> str:
    """The URL as written, with any password in it replaced by ``***``: safe for a problem report."""
    return re.sub(r"(//[^/@:\s]*:)[^/@\s]*@", r"\1***@", template)
