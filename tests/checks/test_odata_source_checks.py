"""Every data check kind on an OData source: the same figures as on SQLite, and ERROR when it cannot know.

The demo world's source.db is served by a real OData v4 server (odatapy from PyPI, see
tests/sources/odata_world_server.py) with server-driven paging, so every source read crosses
real HTTP, nextLinks and typed JSON. The same checks run once against the SQLite file and
once against the service; the figures must be identical (the planted ones, from the generator's
ground truth), whichever way the OData source computed them: `$apply` on the server, or a
streamed fold when the service has no aggregation extension.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from crmctl.model import CheckResult, Status
from tests.checks.datachecks import KPI, ONE_OF_EACH, assert_error, run, verify, world, write_config
from tests.peers.odata_peer import OdataPeer
from tests.peers.odata_proxy import ODataFaultProxy
from tests.sources.odata_world import start_world_service

EXTRA = """\
  - {id: account.row_count, kind: row_count, entity: account, warn: 0, breach: 0.001}
  - {id: contact.row_count, kind: row_count, entity: contact, warn: 0, breach: 0.001}
  - {id: opportunity.sampled, kind: reconcile, entity: opportunity, warn: 0, breach: 0.001, sample: 150,
     trim: false, ignore_case: false, fields: {name: name, estimated_value: {target: estimatedvalue, type: number},
     close_date: {target: estimatedclosedate, type: date}}}
  - {id: contact.reconcile, kind: reconcile, entity: contact, warn: 0, breach: 0.001, partitions: 3}
"""
CHECKS = ONE_OF_EACH + EXTRA
VOLATILE = ("exports", "method", "partitions", "snapshot_hint")
"""Values that say how a figure was obtained (or where a file went), not what it is."""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world(tmp_path_factory, 0.05)


@pytest.fixture(scope="module")
def service(small: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OdataPeer]:
    """The world's source over OData, 500 rows a page (so every scan of a table pages)."""
    peer = start_world_service(tmp_path_factory.mktemp("odata-world"), small / "source.db", page_size=500)
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def plain_service(small: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OdataPeer]:
    """The same service without the aggregation extension: every `$apply` is answered 501."""
    peer = start_world_service(tmp_path_factory.mktemp("odata-plain"), small / "source.db", page_size=500,
                               apply=False)
    try:
        yield peer
    finally:
        peer.stop()


def odata_config(folder: Path, small: Path, checks: str, url: str, patch: tuple[str, str] | None = None) -> Path:
    """`write_config` with the source switched to `kind: odata` at `url`."""
    path = write_config(folder, small, checks, patch=patch)
    text = path.read_text()
    line = f"source: {{kind: sql, url: \"sqlite:///{small / 'source.db'}\"}}\n"
    assert line in text
    path.write_text(text.replace(line, f"source: {{kind: odata, url: \"{url}\"}}\n"))
    return path


def figures(result: CheckResult) -> dict[str, Any]:
    return {k: v for k, v in result.values.items() if k not in VOLATILE}


@pytest.fixture(scope="module")
def sqlite_results(small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CheckResult]:
    return asyncio.run(run(write_config(tmp_path_factory.mktemp("on-sqlite"), small, CHECKS))).results


def test_every_data_check_gives_the_same_figures_over_odata_as_on_sqlite(
    small: Path, service: OdataPeer, sqlite_results: dict[str, CheckResult], tmp_path: Path
) -> None:
    odata = asyncio.run(run(odata_config(tmp_path, small, CHECKS, service.root))).results
    assert set(odata) == set(sqlite_results)
    for check_id, on_sqlite in sqlite_results.items():
        over_odata = odata[check_id]
        assert over_odata.status is not Status.ERROR, (check_id, over_odata.explanation)
        assert over_odata.status == on_sqlite.status, check_id
        assert figures(over_odata) == figures(on_sqlite), check_id
        if check_id in {"account.reconcile", "contact.duplicates", "contact.nulls", "opportunity.orphans",
                        "source.write_freeze", "contact.delta", "opportunity.kpi"}:
            verify(over_odata, small)  # the generator's planted figures, not just agreement
    requests = service.requests()
    assert requests and all(line.startswith("GET ") for line in requests)
    assert any("$apply=" in line for line in requests), "the KPIs and duplicates were not asked of the server"
    assert any("$skiptoken=" in line for line in requests), "no read crossed a page boundary"
    assert odata["account.row_count"].values["source"] == truth_count(small, "account")


def truth_count(small: Path, entity: str) -> int:
    import json

    return int(json.loads((small / "ground_truth.json").read_text())["entities"][entity]["source_count"])


def test_without_the_aggregation_extension_the_figures_are_folded_from_the_rows(
    small: Path, plain_service: OdataPeer, sqlite_results: dict[str, CheckResult], tmp_path: Path
) -> None:
    duplicates = next(line for line in ONE_OF_EACH.splitlines() if "contact.duplicates" in line)
    checks = duplicates + "\n" + KPI
    odata = asyncio.run(run(odata_config(tmp_path, small, checks, plain_service.root))).results
    assert set(odata) == {"opportunity.kpi", "contact.duplicates"}
    for check_id, over_odata in odata.items():
        assert figures(over_odata) == figures(sqlite_results[check_id]), check_id
        verify(over_odata, small)
    refused = [line for line in plain_service.requests() if "$apply=" in line]
    # Both checks start at once and may each be refused before either learns; never more.
    assert 1 <= len(refused) <= len(odata), "a refused $apply is not asked again: the source folds"


# -- ERROR paths on an OData source -------------------------------------------------------

ONE_EACH = {
    "row_count": "  - {id: x, kind: row_count, entity: account}\n",
    "reconcile": "  - {id: x, kind: reconcile, entity: account}\n",
    "duplicates": "  - {id: x, kind: duplicates, entity: contact, columns: {emailaddress1: email}}\n",
    "nulls": "  - {id: x, kind: nulls, entity: contact, columns: {lastname: last_name}}\n",
    "orphans": "  - {id: x, kind: orphans, entity: opportunity}\n",
    "write_freeze": "  - {id: x, kind: write_freeze, since: 2026-11-28T18:00:00Z, writer: updated_by}\n",
    "delta": "  - {id: x, kind: delta, entity: contact, watermark: 2026-11-28T17:45:00Z}\n",
    "kpi_parity": "  - {id: x, kind: kpi_parity, entity: opportunity, measures: [{name: value, agg: sum, "
                  "source: estimated_value, target: estimatedvalue}]}\n",
}
UNKNOWN: dict[str, tuple[str, tuple[str, str] | None, str]] = {
    "row_count": (ONE_EACH["row_count"], ("source: {table: accounts,", "source: {table: acounts,"), "acounts"),
    "reconcile": (ONE_EACH["reconcile"], ("source: {table: accounts, key: account_id,",
                                          "source: {table: accounts, key: nosuchcol,"), "nosuchcol"),
    "duplicates": (ONE_EACH["duplicates"].replace("email}", "nosuchcol}"), None, "nosuchcol"),
    "nulls": (ONE_EACH["nulls"].replace("last_name}", "nosuchcol}"), None, "nosuchcol"),
    "orphans": (ONE_EACH["orphans"], ("{field: _parentaccountid_value, entity: account, source_field: account_id}",
                                      "{field: _parentaccountid_value, entity: account, source_field: nosuchcol}"),
                "nosuchcol"),
    "write_freeze": (ONE_EACH["write_freeze"].replace("updated_by", "nosuchcol"), None, "nosuchcol"),
    "delta": (ONE_EACH["delta"], ("source: {table: contacts, key: contact_id, modified: updated_at}",
                                  "source: {table: contacts, key: contact_id, modified: nosuchcol}"), "nosuchcol"),
    "kpi_parity": (ONE_EACH["kpi_parity"].replace("source: estimated_value", "source: nosuchcol"), None, "nosuchcol"),
}


@pytest.mark.parametrize("kind", list(ONE_EACH))
async def test_an_unknown_column_on_the_odata_source_is_error(
    kind: str, small: Path, service: OdataPeer, tmp_path: Path
) -> None:
    checks, patch, name = UNKNOWN[kind]
    result = (await run(odata_config(tmp_path, small, checks, service.root, patch=patch))).results["x"]
    assert_error(result, name)


async def test_an_unreachable_odata_source_is_error_for_every_kind(small: Path, tmp_path: Path) -> None:
    # A port that was just listening and is closed now: nothing answers there.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    checks = "".join(line.replace("id: x,", f"id: {kind},") for kind, line in ONE_EACH.items())
    results = (await run(odata_config(tmp_path, small, checks, f"http://127.0.0.1:{port}/odata/"))).results
    assert set(results) == set(ONE_EACH)
    for result in results.values():
        assert_error(result, "could not reach the odata source")


def every_kind() -> str:
    """One check of every kind in ONE_EACH, each with its kind as its id, for one run of them all."""
    return "".join(line.replace("id: x,", f"id: {kind},") for kind, line in ONE_EACH.items())


RETRY_AFTER = 1.0
"""Seconds the throttle storm asks for: long enough to tell a wait from none, short enough for `make test`."""


def secret_free_everywhere(results: dict[str, CheckResult], folder: Path, *secrets: str) -> None:
    """No secret in any result (explanation, values, queries) nor in any file the run wrote (journal, state)."""
    for result in results.values():
        blob = json.dumps(result.to_json())
        assert not any(s in blob for s in secrets), result.check_id
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets), path


async def test_an_odata_source_throttling_past_the_retries_is_error_for_every_kind(
    small: Path, service: OdataPeer, tmp_path: Path
) -> None:
    """Every request is answered 429 with Retry-After: each check waits as asked, retries, and
    ends ERROR saying it was throttled; no figure comes out of data it could not read."""
    async with ODataFaultProxy(service.root, throttle=RETRY_AFTER) as proxy:
        results = (await run(odata_config(tmp_path, small, every_kind(), proxy.url))).results
    assert set(results) == set(ONE_EACH)
    for result in results.values():
        assert_error(result, "kept throttling")
        assert "(429" in result.explanation, result.explanation
    assert proxy.seen and all(s.status == 429 for s in proxy.seen)
    by_path: dict[str, list[float]] = {}
    for s in proxy.seen:
        by_path.setdefault(s.path_qs, []).append(s.at)
    # Every kind's first source query differs, so each path is one request and its retries.
    assert len(by_path) == len(ONE_EACH), sorted(by_path)
    for path, arrivals in by_path.items():
        assert len(arrivals) >= 2, f"{path} was never retried"
        gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
        assert min(gaps) >= RETRY_AFTER, f"{path} came back {min(gaps):.3f} s after a 429 asking for {RETRY_AFTER} s"


async def test_a_retry_after_past_the_deadline_is_error_for_every_kind_without_waiting(
    small: Path, service: OdataPeer, tmp_path: Path
) -> None:
    """A 429 asking for a wait longer than the check has left: ERROR at once, never a retry that
    would come back early, never a sleep past the deadline."""
    checks = "".join(line[:-2] + ", timeout: 30s}\n" for line in every_kind().splitlines(keepends=True))
    async with ODataFaultProxy(service.root, throttle=600) as proxy:
        results = (await run(odata_config(tmp_path, small, checks, proxy.url))).results
    assert set(results) == set(ONE_EACH)
    for result in results.values():
        assert_error(result, "asked crmctl to back off 600 s")
        assert "past the check's deadline" in result.explanation and "(429" in result.explanation
    paths = [s.path_qs for s in proxy.seen]
    assert len(paths) == len(set(paths)) == len(ONE_EACH), "one request each, none sent again"


async def test_an_odata_source_refusing_the_credentials_is_error_for_every_kind_and_no_secret_leaks(
    small: Path, service: OdataPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401 to user and password (sent as Basic, loopback http allows it): ERROR saying the
    credentials were refused, and the password appears in no result and no file of the run."""
    password = "0data-Pa55word-k7Qz"
    basic = base64.b64encode(f"svc_crm:{password}".encode()).decode()
    monkeypatch.setenv("CRMCTL_TEST_ODATA_PW", password)  # a literal password is refused by the loader
    async with ODataFaultProxy(service.root, unauthorised=True) as proxy:
        scheme, rest = proxy.url.split("://", 1)
        url = f"{scheme}://svc_crm:${{env:CRMCTL_TEST_ODATA_PW}}@{rest}"
        results = (await run(odata_config(tmp_path, small, every_kind(), url))).results
    assert set(results) == set(ONE_EACH)
    for result in results.values():
        assert_error(result, "refused crmctl's credentials")
        assert "(401" in result.explanation, result.explanation
    assert proxy.seen and all(s.status == 401 and s.authorization for s in proxy.seen), "credentials were offered"
    assert len(proxy.seen) == len(ONE_EACH), "a refused password is not sent again"
    secret_free_everywhere(results, tmp_path, password, basic)


async def test_sql_only_parameters_say_so_on_an_odata_source(small: Path, service: OdataPeer, tmp_path: Path) -> None:
    checks = (
        "  - {id: x, kind: delta, entity: contact, watermark_sql: \"SELECT MAX(last_watermark) FROM migration_watermarks\"}\n"
        "  - {id: y, kind: kpi_parity, entity: opportunity, source_where: \"lower(status) = 'open' OR stage = 'Close'\"}\n"
    )
    results = (await run(odata_config(tmp_path, small, checks, service.root))).results
    assert_error(results["x"], "cannot run sql")
    assert_error(results["y"], "source_where")
