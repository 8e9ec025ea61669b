"""Keeps secrets and terminal tricks out of everything crmctl exports (the evidence pack above all).

An evidence pack is mailed, archived and opened by people who never saw the config: whatever
leaks into it leaks for good. Three layers, applied to every piece of text written:

1. **Known values**: every secret the config can reach (`Secret`s whose environment variable
   is set, values substituted into URLs, anything the caller adds, such as the live bearer
   token) is replaced by `${env:NAME}` or `***`. `Config.redact` is part of this layer.
2. **Known shapes**: bearer / basic credentials, JWTs, `secret=...`-style assignments, URLs
   with user-info or secret-looking parameters, Teams / Power Automate webhook paths.
3. **Neutralised control characters**: ESC and every other C0/C1 control, and the Unicode
   bidirectional overrides, are written as visible `\\x1b` / `\\u202e` text. A journal entry can
   hold text from anyone who could type into crmctl or from any server message; opened with
   `cat` in an auditor's terminal, or in a browser, it must not repaint the screen or reorder
   what is read ("Trojan Source").

`leaks()` is the last line of defence: after the pack is written, every file is scanned for the
known values and the token shapes, and the export fails rather than ship one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields, is_dataclass
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, quote_plus

from crmctl.config.values import Secret
from crmctl.connectors.querylog import redact_url

MASK = "***"
CACHE_SIZE = 200_000
MIN_SECRET_LEN = 6
"""Known values shorter than this are not hunted for: masking every "443" or "prod" in a pack
would destroy it, and values that short are not credentials."""

_BEARER = re.compile(r"\b((?i:bearer|basic))(\s+)[A-Za-z0-9._~+/=-]{16,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_ASSIGN = re.compile(
    r"(?i)\b(client_secret|secret|password|passwd|pwd|passphrase|access_token|refresh_token|id_token"
    r"|assertion|api[_-]?key|accountkey|sharedaccesskey|sig)(\s*[=:]\s*)(?!\*\*\*)[^\s&,;'\"<>]+"
)
_AUTH_HEADER = re.compile(r"(?i)\b(authorization|x-api-key|api-key|ocp-apim-subscription-key)(\s*:\s*)[^\r\n]+")
_URL = re.compile(r"https?://[^\s'\"<>`]+")
_WEBHOOK = re.compile(
    r"(?i)(https://[a-z0-9.-]*(?:webhook\.office\.com|logic\.azure\.com|environment\.api\.powerplatform\.com)"
    r"(?::\d+)?/)[^\s'\"<>`]+"
)
_LEAK_SHAPES = (_BEARER, _JWT)
"""Shapes the final scan refuses outright (an assignment or URL may legitimately survive as
`secret=***`; a 16+ character bearer credential never does)."""

_UNSAFE_ONE_LINE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_UNSAFE_MULTILINE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def neutralise(text: str, *, multiline: bool = True) -> str:
    """`text` with every control character a terminal or a browser would act on made visible.

    Tabs (and, when `multiline`, newlines) are kept; CRLF becomes LF. Everything else below
    U+0020, DEL, the C1 range and the bidi controls become `\\xNN` / `\\uNNNN` text.
    """
    if multiline:
        text = text.replace("\r\n", "\n")
        return _UNSAFE_MULTILINE.sub(_visible, text)
    return _UNSAFE_ONE_LINE.sub(_visible, text)


def config_secrets(config: Any, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every secret value the config can reach now: {value: replacement}.

    `Secret` fields anywhere in the config (client secret, certificate passphrases, webhooks),
    revealed from `env` when set, and every value substituted into a URL.
    """
    found: dict[str, str] = {}

    def walk(obj: Any, depth: int = 0) -> None:
        if depth > 8:
            return
        if isinstance(obj, Secret):
            try:
                found[obj.reveal(env)] = str(obj)
            except LookupError:
                pass
        elif is_dataclass(obj) and not isinstance(obj, type):
            for f in fields(obj):
                if f.name != "substitutions":
                    walk(getattr(obj, f.name), depth + 1)
        elif isinstance(obj, Mapping):
            for value in obj.values():
                walk(value, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value, depth + 1)

    walk(config)
    for name, value in dict(getattr(config, "substitutions", {}) or {}).items():
        if value:
            found[value] = f"${{env:{name}}}"
    return found


class Scrubber:
    """Removes known secret values and known credential shapes from text, then neutralises it.

    Args:
        secrets: {value: replacement} of known secret values (see `config_secrets`).
        redact: An extra redaction pass, normally `Config.redact`.
    """

    def __init__(self, secrets: Mapping[str, str] | Iterable[str] = (), redact: Callable[[str], str] | None = None) -> None:
        pairs = secrets.items() if isinstance(secrets, Mapping) else ((s, MASK) for s in secrets)
        self._values = sorted(
            ((v, r) for v, r in pairs if isinstance(v, str) and len(v) >= MIN_SECRET_LEN),
            key=lambda item: -len(item[0]),
        )
        self._redact = redact
        self._cache: dict[tuple[str, bool], str] = {}

    @classmethod
    def for_config(cls, config: Any, extra: Iterable[str] = (), env: Mapping[str, str] = os.environ) -> Scrubber:
        """The scrubber for one cutover: its config's secrets, plus `extra` values (live tokens)."""
        secrets = config_secrets(config, env)
        for value in extra:
            if value:
                secrets.setdefault(value, MASK)
        return cls(secrets, getattr(config, "redact", None))

    def text(self, value: str, *, multiline: bool = True) -> str:
        """One piece of text, scrubbed and neutralised.

        A journal repeats the same strings (keys, URLs, explanations) thousands of times, so
        answers are remembered; the cache is bounded and per scrubber (per export).
        """
        key = (value, multiline)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        text = value
        for secret, replacement in self._values:
            if secret in text:
                text = text.replace(secret, replacement)
        if self._redact is not None:
            text = self._redact(text)
        lowered = text.lower()
        # Each shape needs a marker to match at all; skipping the regexes when it is absent
        # makes scrubbing a 100,000-entry journal a matter of seconds.
        if ":" in text:
            text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        if "bearer" in lowered or "basic" in lowered:
            text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        if "eyj" in lowered:
            text = _JWT.sub(MASK, text)
        if "http" in lowered:
            text = _WEBHOOK.sub(lambda m: f"{m.group(1)}{MASK}", text)
            text = _URL.sub(lambda m: _safe_url(m.group(0)), text)
        if "=" in text or ":" in text:
            text = _ASSIGN.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = neutralise(text, multiline=multiline)
        if len(self._cache) < CACHE_SIZE:
            self._cache[key] = text
        return text

    def value(self, obj: Any) -> Any:
        """A JSON-like value with every string (keys included) scrubbed."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {self.text(str(k), multiline=False): self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj

    def leaks(self, data: bytes) -> list[str]:
        """What in `data` is a secret (named by its replacement, never by its value).

        Each known value is looked for as it is, URL-encoded and JSON-escaped, since that is how
        a value travels into URLs and JSON; the shapes are looked for in the raw bytes.
        """
        found = []
        for secret, replacement in self._values:
            forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
            if any(form.encode("utf-8") in data for form in forms if form):
                found.append(f"the value of {replacement}" if replacement != MASK else "a known secret value")
        text = data.decode("latin-1")
        for shape in _LEAK_SHAPES:
            match = shape.search(text)
            if match:
                found.append("a bearer credential" if shape is _BEARER else "a JSON web token")
        return found


def _safe_url(url: str) -> str:
    trail = ""
    while url and url[-1] in ".,;:)]}":
        trail = url[-1] + trail
        url = url[:-1]
    return redact_url(url) + trail if url else trail
