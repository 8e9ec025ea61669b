"""The errors every connector raises: each one renders as one clear sentence without a secret in it.

Checks turn any `ConnectorError` into an ERROR result whose explanation is `str(error)`, so the
sentence is what the cutover lead reads on the wall screen and what the auditor reads in the
evidence pack. That is why every message passes through `scrub()` (no bearer tokens, no JWTs, no
credentials in URLs) and is collapsed to a single line.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote

from crmctl.connectors.querylog import redact_url

AGGREGATE_LIMIT_CODE = "0x8004e023"
"""Dataverse's AggregateQueryRecordLimitExceeded (more than 50,000 rows under an aggregate)."""
NOT_A_MEMBER_CODE = "0x80072560"
"""403 "The user is not a member of the organization": the token is fine, the application user is missing."""

_MAX_DETAIL = 300
_BEARER = re.compile(r"\b((?i:bearer|basic))\s+[A-Za-z0-9._~+/=-]{16,}")
"""A credential after an auth scheme; 16+ characters so that prose ("a basic query") survives."""
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL = re.compile(r"https?://[^\s'\"<>]+")
_SECRET_ASSIGN = re.compile(
    r"(?i)\b(client_secret|secret|password|passphrase|access_token|refresh_token|id_token|assertion)"
    r"(\s*[=:]\s*)[^\s&,;'\"]+"
)


_KNOWN: dict[str, None] = {}
"""Live secret values (bearer tokens sent, client secrets held), newest last, at most `_KNOWN_MAX`."""
_KNOWN_MAX = 256
_KNOWN_MIN_LEN = 8
_KNOWN_LOCK = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Adds a live secret value that `scrub` must remove wherever it appears.

    Shapes catch a JWT or a credential after "Bearer", but an opaque token (the emulator's, many
    identity providers') quoted bare in a server's error message has no shape: only its value
    betrays it. The Dataverse client remembers every token it sends and the token providers the
    secrets they hold, so every connector error is scrubbed of them. Values shorter than
    `_KNOWN_MIN_LEN` are ignored (masking every "prod" would destroy messages, and they are not
    credentials); the oldest are forgotten past `_KNOWN_MAX` (tokens rotate).
    """
    if not value or len(value) < _KNOWN_MIN_LEN:
        return
    with _KNOWN_LOCK:
        _KNOWN.pop(value, None)
        _KNOWN[value] = None
        while len(_KNOWN) > _KNOWN_MAX:
            del _KNOWN[next(iter(_KNOWN))]


def _remove_known(text: str) -> str:
    with _KNOWN_LOCK:
        known = list(_KNOWN)
    for value in known:
        if value in text:
            text = text.replace(value, "***")
        encoded = quote(value, safe="")
        if encoded != value and encoded in text:
            text = text.replace(encoded, "***")
    return text


def scrub(text: str, *, limit: int = _MAX_DETAIL) -> str:
    """Returns `text` as one line with tokens, JWTs and URL credentials removed, cut to `limit`.

    Server messages are untrusted: a proxy may echo the request (Authorization header included),
    and an identity provider may quote a URL with a signature in it. Scrubbing here means no caller
    has to remember to. Known live secrets (`remember_secret`) go first, whatever their shape.
    """
    text = _remove_known(text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} ***", text)
    text = _JWT.sub("***", text)
    text = _SECRET_ASSIGN.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def status_tag(status: int | None, code: str) -> str:
    """" (429 0x80072322)": the status and OData code that end an error sentence, if known."""
    parts = [str(p) for p in (status, code) if p not in (None, "")]
    return f" ({' '.join(parts)})" if parts else ""


def _clause(text: str) -> str:
    """A scrubbed server message ready to sit inside our sentence (no trailing full stop)."""
    return scrub(text).rstrip(" .")


class ConnectorError(Exception):
    """Base of every connector error; `str()` is one sentence fit for an operator.

    Args:
        sentence: The complete human sentence. It is scrubbed again here as a last line of defence.
    """

    def __init__(self, sentence: str) -> None:
        self.sentence = scrub(sentence, limit=600)
        super().__init__(self.sentence)

    def __str__(self) -> str:
        return self.sentence


class DataverseError(ConnectorError):
    """Dynamics answered with an error (or could not be asked at all, for the transport subclasses).

    Args:
        status: HTTP status, or None when no response arrived.
        code: The OData error code (often hex like ``0x80040265``, frequently empty).
        message: The OData error message as the server sent it (scrubbed before display).
        what: What was being asked, for the sentence: "the query on 'accounts'", "WhoAmI".
        request_id: The server's request id, for a support ticket; never part of the sentence.
        sentence: Overrides the generated sentence.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        what: str = "the request",
        request_id: str | None = None,
        sentence: str | None = None,
    ) -> None:
        self.status = status
        self.code = _remove_known(code or "")  # shown and journalled: a hostile server chooses it
        self.message = scrub(message)
        self.what = what
        self.request_id = request_id
        super().__init__(sentence or self._sentence())

    @property
    def tag(self) -> str:
        """" (400 0x0)" style suffix: status and code, whichever are known."""
        return status_tag(self.status, self.code)

    def _sentence(self) -> str:
        detail = _clause(self.message)
        if detail:
            return f"Dynamics rejected {self.what}: {detail}{self.tag}."
        return f"Dynamics rejected {self.what}{self.tag}."


class AggregateLimitExceeded(DataverseError):
    """More than 50,000 rows fell under an aggregate (0x8004e023).

    A backlog check treats this as a red "≥ 50,000" signal rather than a failure to measure.
    """

    def _sentence(self) -> str:
        return (
            f"Dynamics refused {self.what}: more than 50,000 records fall under the aggregate"
            f"{self.tag}; narrow the filter or split the query."
        )


class ThrottledError(DataverseError):
    """Dynamics kept answering 429 after the retries, or asked for a wait past the deadline.

    Args:
        retry_after: The last Retry-After the server asked for, in seconds (None if absent).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        what: str = "the request",
        request_id: str | None = None,
        sentence: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, code, message, what=what, request_id=request_id, sentence=sentence)

    def _sentence(self) -> str:
        return f"Dynamics kept throttling {self.what}{self.tag}; the retries ran out."


class AuthError(DataverseError):
    """Sign-in failed, or Dynamics refused the token (401) or the principal (403)."""

    def _sentence(self) -> str:
        if self.status == 401:
            return f"Dynamics refused the token{self.tag}."
        if self.status == 403 and self.code.lower() == NOT_A_MEMBER_CODE:
            return (
                f"The application user is not a member of the organization{self.tag}; "
                "add it as an application user in the Power Platform admin center."
            )
        if self.status == 403:
            detail = _clause(self.message)
            return f"Dynamics denied access to {self.what}{': ' + detail if detail else ''}{self.tag}."
        detail = _clause(self.message)
        return f"Sign-in failed{self.tag}{': ' + detail if detail else ''}."


class NotFoundError(DataverseError):
    """404: an unknown entity set, function or record (names are case sensitive)."""

    def _sentence(self) -> str:
        detail = _clause(self.message)
        return f"Dynamics found nothing for {self.what}{': ' + detail if detail else ''}{self.tag}."


class TransportError(DataverseError):
    """No usable HTTP answer: connection refused or reset, DNS failure, timeout, truncated body."""

    def _sentence(self) -> str:
        detail = _clause(self.message)
        return f"Could not reach Dynamics for {self.what}{': ' + detail if detail else ''}."


class MalformedResponse(DataverseError):
    """The answer was not the JSON shape the call needs; never mistaken for an empty result."""

    def _sentence(self) -> str:
        detail = _clause(self.message)
        return f"Dynamics sent an unusable answer to {self.what}{': ' + detail if detail else ''}{self.tag}."


class BudgetExhausted(ConnectorError):
    """The request budget or a server back-off would keep the caller waiting past its deadline."""


class DeadlineExceeded(ConnectorError):
    """The caller's deadline passed (or is reached) before the request could start."""


class SourceError(ConnectorError):
    """The source database refused or failed a query (locked, missing table, unreachable)."""
