"""Benchmark: page a 1,000,000-row key column through the emulator with maxpagesize 5000."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crmctl.emulator.server import Emulator  # noqa: E402
from crmctl.emulator.storage import Attribute, EmulatorData, EntityDef  # noqa: E402

ENTITY = EntityDef(
    logical_name="contact",
    entity_set="contacts",
    primary_id="contactid",
    primary_name="fullname",
    attributes=(Attribute("contactid", "guid"), Attribute("fullname", "string")),
)


def build(path: Path, rows: int, seed: int) -> float:
    """Writes `rows` contacts in one bulk transaction; returns the seconds it took."""
    rng = random.Random(seed)
    started = time.perf_counter()
    with EmulatorData(path) as data:
        data.define_entity(ENTITY)
        data.insert_rows(
            "contact",
            (
                {
                    "contactid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "fullname": f"Contact {i}",
                }
                for i in range(rows)
            ),
        )
    return time.perf_counter() - started


async def page_all(emu: Emulator, page_size: int) -> tuple[int, int, float]:
    """Follows @odata.nextLink untouched until the last page; returns (rows, requests, s)."""
    headers = {
        "Authorization": f"Bearer {emu.token}",
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "Prefer": f"odata.maxpagesize={page_size}",
    }
    rows = requests = 0
    started = time.perf_counter()
    url: str | None = f"{emu.api_url}contacts?$select=contactid"
    async with aiohttp.ClientSession(headers=headers) as session:
        while url:
            async with session.get(URL(url, encoded=True)) as resp:
                resp.raise_for_status()
                body = await resp.json()
            requests += 1
            rows += len(body["value"])
            url = body.get("@odata.nextLink")
    return rows, requests, time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crmctl-bench-") as tmp:
        path = Path(tmp) / "dataverse.db"
        build_s = build(path, args.rows, args.seed)
        print(
            f"bulk insert: {args.rows:,} rows in {build_s:.2f} s "
            f"({args.rows / build_s:,.0f} rows/s)"
        )
        async with Emulator(path) as emu:
            rows, requests, wall = await page_all(emu, args.page_size)
        assert rows == args.rows, f"paged {rows} rows, expected {args.rows}"
        print(
            f"paging: {rows:,} rows, {requests} requests, {wall:.2f} s wall, "
            f"{rows / wall:,.0f} rows/s, {wall / requests * 1000:.1f} ms/request"
        )


if __name__ == "__main__":
    asyncio.run(main())
