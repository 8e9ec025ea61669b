"""Notification payloads: Teams Adaptive Cards (within Teams' 28 KB) and the generic JSON webhook body.

Why it is built this way:

* Teams refuses a message over about 28 KB ("request entity too large"), and an incident's
  evidence can be large (a list of missing keys, a long explanation). Cutting the serialised
  bytes would send broken JSON, so the card is rebuilt at decreasing levels of detail (fewer
  timeline lines, fewer evidence facts, shorter texts) until its UTF-8 encoding fits. The last
  level is a bare card that always fits; every level is valid JSON by construction.
* The card says it was shortened and where the rest is (the journal seq), so nobody mistakes
  a trimmed card for the whole story.
* Pure functions of an `IncidentEvent`: testable without a network, and the same bytes are
  what the notifier sends, measures and journals the size of.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from crmctl.incidents import ACKNOWLEDGED, ESCALATED, RAISED, RESOLVED, IncidentEvent
from crmctl.model import iso

TEAMS_MAX_BYTES = 28 * 1024
"""Teams' message size limit (about 28 KB, request body included); cards never exceed it."""

ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_VERSION = "1.4"
"""1.4 is the newest version every Teams client renders from a Workflows webhook."""

_HEADLINE = {
    RAISED: "Incident raised",
    ACKNOWLEDGED: "Incident acknowledged",
    ESCALATED: "Incident ESCALATED",
    RESOLVED: "Incident resolved",
}

_COLOR = {"SEV1": "Attention", "UNKNOWN": "Attention", "SEV2": "Warning", "SEV3": "Accent", "SEV4": "Default"}


@dataclass(frozen=True)
class Level:
    """How much detail one attempt at building the card keeps (None = everything)."""

    text: int | None
    facts: int | None
    timeline: int | None


LEVELS: tuple[Level, ...] = (
    Level(None, None, None),
    Level(2000, 40, 10),
    Level(1000, 20, 5),
    Level(400, 10, 3),
    Level(200, 5, 1),
    Level(120, 0, 0),
)
"""Tried in order until the card fits; the last is followed by the bare card."""


@dataclass(frozen=True)
class Payload:
    """A body ready to POST."""

    body: bytes
    truncated: bool = False
    """True when detail was dropped to fit the size limit."""

    @property
    def size(self) -> int:
        return len(self.body)


def encode(data: Any) -> bytes:
    """Compact UTF-8 JSON: what is measured is exactly what is sent."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def teams_payload(event: IncidentEvent, *, project: str = "", max_bytes: int = TEAMS_MAX_BYTES) -> Payload:
    """The Workflows-webhook message carrying an Adaptive Card, at most `max_bytes` long."""
    for index, level in enumerate(LEVELS):
        body = encode(_envelope(_card(event, project, level, truncated=index > 0)))
        if len(body) <= max_bytes:
            return Payload(body, truncated=index > 0)
    body = encode(_envelope(_bare_card(event)))
    if len(body) > max_bytes:
        raise ValueError(f"max_bytes {max_bytes} is too small for even a bare card ({len(body)} bytes)")
    return Payload(body, truncated=True)


def webhook_payload(event: IncidentEvent, *, project: str = "", max_bytes: int = 256 * 1024) -> Payload:
    """The generic JSON webhook body: the incident as data, for any receiver to route."""
    incident = event.incident
    for index, level in enumerate(LEVELS):
        data = {
            "source": "crmctl",
            "project": project,
            "event": event.kind,
            "text": _headline(event),
            "journal": {"seq": event.seq, "hash": event.hash, "ts": iso(event.ts), "operator": event.operator},
            "incident": {
                "id": incident.id,
                "number": incident.number,
                "title": _cut(incident.title, level.text),
                "severity": incident.severity.value,
                "state": incident.state.value,
                "owner": incident.owner,
                "check": incident.check,
                "step": incident.step,
                "criterion": incident.criterion,
                "raised_at": iso(incident.raised_at),
                "raised_by": incident.raised_by,
                "source": incident.source,
                "escalated_to": incident.escalations[0].to if incident.escalations else None,
            },
            "evidence": _cut_evidence(incident.evidence, level),
            "timeline": [
                {"seq": t.seq, "ts": iso(t.ts), "operator": t.operator, "kind": t.kind, "text": _cut(t.text, level.text)}
                for t in _last(incident.timeline, level.timeline)
            ],
            "truncated": index > 0,
        }
        body = encode(data)
        if len(body) <= max_bytes:
            return Payload(body, truncated=index > 0)
    raise ValueError(f"max_bytes {max_bytes} is too small for a webhook body")


# --------------------------------------------------------------------------------------------
# building blocks


def _envelope(card: Mapping[str, Any]) -> dict[str, Any]:
    """The message shape a Teams Workflows "post to a channel when a webhook request is received"
    flow expects: one attachment holding the card."""
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def _headline(event: IncidentEvent) -> str:
    incident = event.incident
    return f"{_HEADLINE.get(event.kind, event.kind)}: {incident.id} {incident.severity.value} · {incident.title}"


def _card(event: IncidentEvent, project: str, level: Level, *, truncated: bool) -> dict[str, Any]:
    incident = event.incident
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _cut(_headline(event), level.text),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": _COLOR.get(incident.severity.value, "Default"),
        }
    ]
    if project:
        body.append({"type": "TextBlock", "text": _cut(project, level.text), "isSubtle": True, "spacing": "None", "wrap": True})
    facts = [
        ("Severity", incident.severity.value),
        ("State", incident.state.value),
        ("Owner", incident.owner or "nobody yet"),
        ("Check", incident.check),
        ("Step", incident.step),
        ("Criterion", incident.criterion),
        ("Raised", f"{iso(incident.raised_at)} by {incident.raised_by}"),
    ]
    if incident.escalations:
        first = incident.escalations[0]
        facts.append(("Escalated", f"to {first.to} at {iso(first.at)}"))
    body.append(_facts([(k, v) for k, v in facts if v], level.text))
    evidence = incident.evidence
    if evidence:
        why = evidence.get("explanation")
        if why:
            body.append({"type": "TextBlock", "text": _cut(str(why), level.text), "wrap": True})
        values = list((evidence.get("values") or {}).items())
        shown = values if level.facts is None else values[: level.facts]
        if shown:
            body.append(_facts([(str(k), _value_text(v, level.text)) for k, v in shown], level.text))
        if len(shown) < len(values):
            body.append(_subtle(f"… {len(values) - len(shown)} more values in the journal"))
    timeline = _last(incident.timeline, level.timeline)
    if timeline:
        lines = [f"{iso(t.ts)[11:19]} {t.operator}: {_cut(t.text, level.text)}" for t in timeline]
        body.append({"type": "TextBlock", "text": "\n\n".join(lines), "wrap": True, "size": "Small"})
    ref = f"journal seq {event.seq}"
    if evidence.get("result_seq"):
        ref += f" · evidence: result seq {evidence['result_seq']} ({str(evidence.get('result_hash', ''))[:12]})"
    body.append(_subtle(ref))
    if truncated:
        body.append(_subtle(f"Shortened to fit Teams' {TEAMS_MAX_BYTES // 1024} KB limit; `crmctl incident show {incident.number}` has it all."))
    return _adaptive(body)


def _bare_card(event: IncidentEvent) -> dict[str, Any]:
    incident = event.incident
    return _adaptive([
        {"type": "TextBlock", "text": _cut(_headline(event), 200), "weight": "Bolder", "wrap": True},
        _subtle(f"Details too large for Teams; see `crmctl incident show {incident.number}` (journal seq {event.seq})."),
    ])


def _adaptive(body: list[dict[str, Any]]) -> dict[str, Any]:
    return {"$schema": ADAPTIVE_CARD_SCHEMA, "type": "AdaptiveCard", "version": ADAPTIVE_CARD_VERSION, "body": body}


def _facts(pairs: list[tuple[str, str]], limit: int | None) -> dict[str, Any]:
    return {"type": "FactSet", "facts": [{"title": _cut(k, 60), "value": _cut(str(v), limit)} for k, v in pairs]}


def _subtle(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "isSubtle": True, "size": "Small", "wrap": True}


def _value_text(value: Any, limit: int | None) -> str:
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}: {v}" for k, v in value.items())
    else:
        text = str(value)
    return _cut(text, limit)


def _cut(text: str | None, limit: int | None) -> str:
    """`text` cut to `limit` characters with an ellipsis (never splitting a character)."""
    text = "" if text is None else str(text)
    if limit is None or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def _last(items: tuple[Any, ...], limit: int | None) -> tuple[Any, ...]:
    if limit is None:
        return items
    return items[-limit:] if limit else ()


def _cut_evidence(evidence: Mapping[str, Any], level: Level) -> dict[str, Any]:
    if not evidence:
        return {}
    out = {k: v for k, v in evidence.items() if k != "values"}
    if "explanation" in out:
        out["explanation"] = _cut(str(out["explanation"]), level.text)
    values = list((evidence.get("values") or {}).items())
    if level.facts is not None:
        values = values[: level.facts]
    out["values"] = {k: (_value_text(v, level.text) if level.text is not None else v) for k, v in values}
    return out


__all__ = [
    "ADAPTIVE_CARD_CONTENT_TYPE",
    "LEVELS",
    "Payload",
    "TEAMS_MAX_BYTES",
    "encode",
    "teams_payload",
    "webhook_payload",
]
