"""Sign-offs and lessons: journalled with who, role, when and statement; scrubbed before they are."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crmctl.clock import FrozenClock
from crmctl.identity import Actor
from crmctl.model import CheckResult, Status
from crmctl.scrubber import Scrubber
from crmctl.signoff import (
    SignoffError,
    closure,
    closure_state,
    journal_head,
    lessons,
    record_lesson,
    record_signoff,
    signoffs,
)
from crmctl.store import Store

T0 = datetime(2026, 11, 29, 9, 30, tzinfo=timezone.utc)
OWNER = Actor("jdoe", "ssh:10.1.2.3")


@pytest.fixture
async def store(tmp_path: Path):
    clock = FrozenClock(T0)
    async with await Store.open(tmp_path / "state.db", clock=clock) as s:
        s.test_clock = clock  # type: ignore[attr-defined]
        yield s


async def test_a_signoff_records_who_role_when_statement_and_what_was_signed(store: Store) -> None:
    for n, status in enumerate((Status.OK, Status.OK, Status.BREACH)):
        await store.append_result(CheckResult(f"check.{n}", "row_count", status, T0, T0, "x"), actor=OWNER)
    head_seq, head_hash = await journal_head(store)
    store.test_clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    record = await record_signoff(store, OWNER, role="Business", statement="  Accepted on the evidence of pack 7.  ",
                                  name="Jane Doe", title="Business Owner")
    assert (record.role, record.name, record.title, record.statement) == ("business", "Jane Doe", "Business Owner",
                                                                          "Accepted on the evidence of pack 7.")
    assert (record.operator, record.host, record.ts) == ("jdoe", "ssh:10.1.2.3", T0 + timedelta(minutes=5))
    assert (record.head_seq, record.head_hash) == (head_seq, head_hash) == (3, record.head_hash)
    assert record.checks == {"BREACH": 1, "OK": 2}
    [again] = await signoffs(store)
    assert again == record


async def test_closure_needs_both_roles_and_the_newest_counts(store: Store) -> None:
    assert closure([]) == {"business": None, "technical": None}
    await record_signoff(store, OWNER, role="technical", statement="first")
    await record_signoff(store, OWNER, role="technical", statement="second", name="Raj")
    state = await closure_state(store)
    assert not state.closed and closure(list(state.signoffs))["technical"].statement == "second"
    await record_signoff(store, OWNER, role="business", statement="accepted")
    assert (await closure_state(store)).closed


async def test_bad_signoffs_are_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(SignoffError, match="role must be one of"):
        await record_signoff(store, OWNER, role="finance", statement="x")
    with pytest.raises(SignoffError, match="needs a statement"):
        await record_signoff(store, OWNER, role="business", statement="   ")
    with pytest.raises(SignoffError, match="too long"):
        await record_signoff(store, OWNER, role="business", statement="x" * 5000)
    with pytest.raises(SignoffError, match="category"):
        await record_lesson(store, OWNER, text="x", category="gossip")
    assert await store.last_seq() == 0


async def test_secrets_and_escapes_never_reach_the_journal(store: Store) -> None:
    scrub = Scrubber({"hunter2-secret": "${env:ERP_KEY}"})
    await record_signoff(store, OWNER, role="business", statement="key hunter2-secret \x1b[2J ok", scrubber=scrub)
    await record_lesson(store, OWNER, text="Authorization: Bearer abcdefghijklmnopqrstuvwxyz", owner="Ops\x07",
                        action="rotate hunter2-secret", scrubber=scrub)
    [entry_a, entry_b] = await store.entries()
    raw = repr(entry_a.payload) + repr(entry_b.payload)
    assert "hunter2" not in raw and "abcdefghijklmnop" not in raw and "\x1b" not in raw and "\x07" not in raw
    [lesson] = await lessons(store)
    assert lesson.text == "Authorization: ***" and lesson.owner == "Ops\\x07" and lesson.action == "rotate ${env:ERP_KEY}"
    assert (await signoffs(store))[0].statement == "key ${env:ERP_KEY} \\x1b[2J ok"


async def test_history_is_readable_as_of_a_moment(store: Store) -> None:
    await record_lesson(store, OWNER, text="early")
    store.test_clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    await record_lesson(store, OWNER, text="late", category="went-well")
    assert [x.text for x in (await closure_state(store, T0)).lessons] == ["early"]
    assert [(x.text, x.category) for x in (await closure_state(store)).lessons] == [("early", "improve"), ("late", "went-well")]
