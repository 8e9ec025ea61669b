"""URL redaction in the query log, and error sentences that never carry a secret."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from crmctl.clock import FrozenClock
from crmctl.connectors.errors import (
    AggregateLimitExceeded,
    AuthError,
    BudgetExhausted,
    ConnectorError,
    DataverseError,
    MalformedResponse,
    NotFoundError,
    SourceError,
    ThrottledError,
    TransportError,
    scrub,
)
from crmctl.connectors.querylog import QueryLog, redact_url

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://alice:hunter2@contoso.crm.dynamics.com/api/data/v9.2/accounts?$select=name",
            "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$select=name",
        ),
        (
            "https://h/x?access_token=abc&sig=zz&client_secret=s&password=p&api_key=k&code=c&keep=1",
            "https://h/x?access_token=***&sig=***&client_secret=***&password=***&api_key=***&code=***&keep=1",
        ),
        (
            "https://h/api/data/v9.2/contacts?$select=fullname&$skiptoken=%3Ccookie%20pagenumber=%222%22%3E",
            "https://h/api/data/v9.2/contacts?$select=fullname&$skiptoken=%3Ccookie%20pagenumber=%222%22%3E",
        ),
        (
            "https://h/api/data/v9.2/accounts?$filter=name%20eq%20'O''Bryan'&$orderby=accountid&$count=true",
            "https://h/api/data/v9.2/accounts?$filter=name%20eq%20'O''Bryan'&$orderby=accountid&$count=true",
        ),
        (
            "https://h/api/data/v9.2/RetrieveTotalRecordCount(EntityNames=@p1)?@p1=%5B%22account%22%5D",
            "https://h/api/data/v9.2/RetrieveTotalRecordCount(EntityNames=@p1)?@p1=%5B%22account%22%5D",
        ),
        ("https://h/cb#access_token=abc", "https://h/cb"),
        ("accounts?$select=name&token=t", "accounts?$select=name&token=***"),
        ("https://h/api/data/v9.2/accounts?fetchXml=%3Cfetch%3E", "https://h/api/data/v9.2/accounts?fetchXml=%3Cfetch%3E"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_querylog_records_redacted_and_counts() -> None:
    clock = FrozenClock(datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc))
    log = QueryLog("dynamics", deadline=123.0, clock=clock)
    rec = log.record("GET", "https://u:p@h/x?$top=1&sig=abc", 200, 12.5, bytes=99)
    log.record("SQL", "SELECT count(*) FROM accounts WHERE owner = ?", None, 1.0, target="source")
    assert log.requests == 2
    assert rec.url == "https://h/x?$top=1&sig=***"
    assert rec.started == "2026-11-28T22:00:00.000000Z"
    assert (rec.target, rec.status, rec.bytes) == ("dynamics", 200, 99)
    assert log.records[1].url == "SELECT count(*) FROM accounts WHERE owner = ?"  # SQL text untouched
    assert log.records[1].target == "source"


def test_scrub_removes_tokens_and_url_secrets() -> None:
    text = f"proxy echoed Authorization: Bearer {JWT} for https://u:pw@h/x?sig=SIG123 and client_secret=abc\nline2"
    out = scrub(text)
    assert JWT not in out and "SIG123" not in out and "pw@" not in out and "abc" not in out
    assert "\n" not in out
    assert len(scrub("x" * 1000)) <= 300
    prose = "Use a basic query; the Bearer token is missing."
    assert scrub(prose) == prose  # only credential-looking strings are removed


def test_sentences() -> None:
    err = DataverseError(
        400,
        "0x0",
        "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.account'.",
        what="the query on 'accounts'",
    )
    assert str(err) == (
        "Dynamics rejected the query on 'accounts': Could not find a property named 'Name' on type "
        "'Microsoft.Dynamics.CRM.account' (400 0x0)."
    )
    assert str(AuthError(401, "ExpiredAuthTicket", "")) == "Dynamics refused the token (401 ExpiredAuthTicket)."
    assert str(AuthError(403, "0x80072560", "The user is not a member of the organization.")).startswith(
        "The application user is not a member of the organization (403 0x80072560)"
    )
    assert "50,000" in str(AggregateLimitExceeded(400, "0x8004e023", "x", what="the aggregate on 'asyncoperations'"))
    assert str(NotFoundError(404, "0x8006088a", "Resource not found for the segment 'Account'.", what="the query on 'Account'")) == (
        "Dynamics found nothing for the query on 'Account': Resource not found for the segment 'Account' (404 0x8006088a)."
    )
    assert str(TransportError(None, "", "h reset the connection", what="WhoAmI")) == (
        "Could not reach Dynamics for WhoAmI: h reset the connection."
    )
    for err in (
        ThrottledError(429, "0x80072322", "Number of requests exceeded the limit of 6000 over time window of 300 seconds."),
        MalformedResponse(200, "", "the body is not JSON"),
        BudgetExhausted("The request budget is spent."),
        SourceError("The source database is locked."),
    ):
        assert isinstance(err, ConnectorError)
        sentence = str(err)
        assert sentence.endswith(".") and "\n" not in sentence


def test_secret_never_in_sentence() -> None:
    err = AuthError(None, "invalid_client", f"AADSTS7000215: Invalid client secret. Header was Bearer {JWT}")
    assert JWT not in str(err)
    assert str(err).startswith("Sign-in failed (invalid_client): AADSTS7000215")
    override = DataverseError(None, "", "", sentence=f"token {JWT} leaked?")
    assert JWT not in str(override)
