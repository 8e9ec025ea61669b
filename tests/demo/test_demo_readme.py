"""data/demo/README.md quotes the numbers the generator really plants (scale 1, default seed)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "data" / "demo" / "README.md"
_ROW = re.compile(r"^\| (account|contact|opportunity) \| (.+?) \| (\d+) \| `([^`]+)` \|$")


def _measure(entity, path: str) -> int:
    if path.startswith("mismatch:"):
        return entity.mismatch_kinds().get(path.split(":", 1)[1], 0)
    value = entity.to_json()
    for part in path.split("."):
        value = value[part]
    return len(value)


def test_defect_table_matches_truth(full_world):
    rows = [m.groups() for line in README.read_text().splitlines() if (m := _ROW.match(line))]
    assert len(rows) >= 30
    for entity_name, what, count, path in rows:
        measured = _measure(full_world.truth.entity(entity_name), path)
        assert measured == int(count), f"{entity_name}: {what}: README says {count}, truth has {measured}"


def test_volume_table_matches_truth(full_world):
    text = README.read_text()
    for name, e in full_world.truth.entities.items():
        assert f"| {name} | {e.source_count:,} | {e.target_count:,} |" in text
    totals = full_world.truth.totals()
    assert f"**{totals['source']:,}**" in text and f"**{totals['target']:,}**" in text
    for name, e in full_world.truth.entities.items():
        assert f"{e.count_snapshot.count:,}" in text
