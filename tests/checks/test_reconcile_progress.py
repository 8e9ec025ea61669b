"""reconcile reports its progress (rows of the source's keys, pages, expected total) while it runs."""

from __future__ import annotations

from pathlib import Path

from crmctl.checking import CheckProgress
from crmctl.control import ControlRoom
from tests.checks.datachecks import ACTOR, REGISTRY, load
from tests.checks.test_reconcile import _tiny_config, _tiny_world


async def test_progress_climbs_to_every_source_key_with_pages_and_a_total(tmp_path: Path) -> None:
    # 60 source keys in 3 ranges of 3-row pages: many merge windows, so many reports.
    source = [f"ACC-{i:03d}" for i in range(60)]
    target: list[str | None] = [k for i, k in enumerate(source) if i not in (7, 31)] + ["ACC-999", None]
    world_dir = _tiny_world(tmp_path / "world", source, target)
    config = load(_tiny_config(tmp_path, world_dir, 3))
    reports: list[CheckProgress] = []
    async with ControlRoom.open(config, REGISTRY, actor=ACTOR) as room:
        engine = room.engine
        forward = engine.progress_listener

        def listen(progress: CheckProgress) -> None:
            reports.append(progress)
            if forward is not None:
                forward(progress)

        engine.progress_listener = listen
        (result,) = await room.run_checks(["r"])
    assert (result.values["missing"], result.values["extra"], result.values["partitions"]) == (2, 1, 3)
    running = [p for p in reports if not p.done]
    assert reports[-1].done and all(p.check_id == "r" for p in reports)
    # the engine's opening report, then the check's own: rows only ever climb, to every key
    rows = [p.rows for p in running]
    assert rows == sorted(rows) and rows[0] == 0
    assert rows[-1] == len(source)
    assert len({p.rows for p in running if p.rows}) > 5  # reported window by window, not once at the end
    assert all(p.total == len(source) for p in running[1:])
    assert running[-1].fraction == 1.0
    # pages: the Dynamics requests spent so far, climbing with the scan, never past the total
    pages = [p.pages for p in running]
    gets = sum(1 for q in result.queries if q.method == "GET")
    assert pages == sorted(pages) and 0 < pages[-1] <= gets and len(set(pages)) > 2
    assert room.progress == {}  # the room forgot the run once it ended
