"""Adaptive Card payloads: the Workflows envelope, and the 28 KB cap kept by dropping detail, not bytes."""

from __future__ import annotations

import json

from crmctl.cards import ADAPTIVE_CARD_CONTENT_TYPE, TEAMS_MAX_BYTES, teams_payload, webhook_payload


async def test_a_small_card_is_complete_and_shaped_for_workflows(events) -> None:  # noqa: ANN001
    event = await events("Accounts missing in Dynamics", severity="sev1", check="account.count", note="34 short")
    payload = teams_payload(event, project="Contoso")
    assert not payload.truncated and payload.size < 4000
    message = json.loads(payload.body)
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == ADAPTIVE_CARD_CONTENT_TYPE
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    texts = json.dumps(card, ensure_ascii=False)
    assert f"Incident raised: INC-{event.incident.number} SEV1 · Accounts missing in Dynamics" in texts
    assert "account.count" in texts and "34 short" in texts and "Contoso" in texts
    assert card["body"][0]["color"] == "Attention"


async def test_huge_evidence_is_trimmed_to_fit_28_kb_and_stays_valid_json(events) -> None:  # noqa: ANN001
    evidence = {
        "result_seq": 7,
        "result_hash": "ab" * 32,
        "status": "BREACH",
        "explanation": "Dynamics has 40,000 fewer accounts than source; " + "é" * 40_000,  # 2 bytes each in UTF-8
        "values": {f"value_{i}": ["k-" + "x" * 40] * 50 for i in range(200)},
    }
    event = await events("Data loss " + "ü" * 3000, severity="sev1", evidence=evidence)
    payload = teams_payload(event, project="Contoso")
    assert payload.truncated
    assert payload.size <= TEAMS_MAX_BYTES
    card = json.loads(payload.body.decode("utf-8"))["attachments"][0]["content"]  # valid JSON, valid UTF-8
    text = json.dumps(card, ensure_ascii=False)
    assert f"INC-{event.incident.number}" in text
    assert "Shortened to fit Teams' 28 KB limit" in text
    assert "result seq 7" in text  # where the rest is


async def test_even_a_tiny_limit_gives_a_bare_valid_card(events) -> None:  # noqa: ANN001
    event = await events("x" * 5000, severity="sev2", note="y" * 2000)  # the title is capped at 300 on the way in
    payload = teams_payload(event, max_bytes=1500)
    assert payload.truncated and payload.size <= 1500
    body = json.loads(payload.body)["attachments"][0]["content"]["body"]
    assert "crmctl incident show" in json.dumps(body)


async def test_the_generic_webhook_gets_the_incident_as_data(events) -> None:  # noqa: ANN001
    event = await events("ERP sync failing", severity="sev2", check="erp-sync.jobs", owner="carol")
    data = json.loads(webhook_payload(event, project="Contoso").body)
    assert data["event"] == "incident.raised" and data["project"] == "Contoso"
    assert data["incident"]["id"] == f"INC-{event.incident.number}"
    assert (data["incident"]["severity"], data["incident"]["check"], data["incident"]["owner"]) == (
        "SEV2", "erp-sync.jobs", "carol")
    assert data["journal"]["seq"] == event.seq and data["truncated"] is False
