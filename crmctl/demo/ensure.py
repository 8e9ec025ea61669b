"""Makes sure a demo world exists, generating it only when needed, atomically.

`crmctl demo`, the embedded emulator and test sessions may all start at once on one folder.
A half-written world would give wrong counts that look like real defects, so a world is
built in a private sibling folder, stamped last, and renamed into place under an exclusive
lock; a folder with a matching stamp is always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from crmctl.demo.world import DATAVERSE_DB, DEFAULT_SEED, GROUND_TRUTH, SOURCE_DB, generate
from crmctl.demo.timeline import Timeline
from crmctl.demo.truth import GENERATOR_VERSION, GroundTruth

try:  # POSIX; elsewhere concurrent callers fall back to "first rename wins"
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STAMP = "world.stamp.json"
"""Written last into a finished world: what it was generated with."""
_WORLD_FILES = (SOURCE_DB, DATAVERSE_DB, GROUND_TRUTH)
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def _wanted(seed: int, scale: float, now: datetime | None) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "scale": float(scale),
        "now": Timeline.at(now).iso("now"),
    }


def _is_fresh(out: Path, wanted: dict[str, Any]) -> bool:
    """True when `out` holds a complete world generated with exactly these parameters."""
    try:
        stamp = json.loads((out / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp == wanted and all((out / name).is_file() for name in _WORLD_FILES)


def _is_world_entry(name: str) -> bool:
    return name == STAMP or any(name == f + s for f in _WORLD_FILES for s in ("", *_SQLITE_SIDECARS))


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on the folder that will hold the world (no lock file litter)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _install(built: Path, out: Path) -> None:
    """Puts the finished world at `out`, keeping any unrelated files the folder held.

    The old folder is renamed aside (its open databases keep working for whoever holds them)
    and the new one renamed in, so nobody ever opens a mixture of two worlds.
    """
    if not out.exists():
        os.rename(built, out)
        return
    for entry in out.iterdir():
        if not _is_world_entry(entry.name):
            os.rename(entry, built / entry.name)
    trash = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(out, trash)
    os.rename(built, out)
    shutil.rmtree(trash, ignore_errors=True)


def ensure_world(
    out_dir: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    scale: float = 1.0,
    now: datetime | None = None,
) -> GroundTruth:
    """Returns the truth of the world in `out_dir`, generating it first if missing or different.

    Regenerates when the stamp's seed, scale, demo `now` or generator version differ, or a
    file is missing. Safe to call from several processes at once: one generates, the others
    wait for the lock and then find the fresh stamp.
    """
    out = Path(out_dir).absolute()
    wanted = _wanted(seed, scale, now)
    if _is_fresh(out, wanted):
        return GroundTruth.load(out / GROUND_TRUTH)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out.parent):
        if _is_fresh(out, wanted):
            return GroundTruth.load(out / GROUND_TRUTH)
        built = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
        try:
            truth = generate(built, seed=seed, scale=scale, now=now)
            (built / STAMP).write_text(json.dumps(wanted, sort_keys=True) + "\n", encoding="utf-8")
            _install(built, out)
        finally:
            if built.exists():
                shutil.rmtree(built, ignore_errors=True)
    return truth
