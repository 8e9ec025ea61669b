"""`ensure_world`: generates once, regenerates on a different seed/scale, never shows half a world."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crmctl.demo import ensure as ensure_module
from crmctl.demo_world import GroundTruth, ensure_world

SCALE = 0.02
REPO = Path(__file__).resolve().parents[2]


def _count_calls(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    real = ensure_module.generate

    def counting(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(ensure_module, "generate", counting)
    return calls


def test_generates_once(tmp_path, monkeypatch):
    calls = _count_calls(monkeypatch)
    world = tmp_path / "world"
    first = ensure_world(world, scale=SCALE)
    inode = (world / "dataverse.db").stat().st_ino
    second = ensure_world(world, scale=SCALE)
    assert first == second
    assert len(calls) == 1
    assert (world / "dataverse.db").stat().st_ino == inode
    assert sorted(p.name for p in world.iterdir()) == [
        "dataverse.db", "ground_truth.json", "source.db", "world.stamp.json"]
    assert not [p for p in tmp_path.iterdir() if p.name != "world"], "no temporary folders left behind"


def test_regenerates_when_seed_or_scale_differs(tmp_path, monkeypatch):
    calls = _count_calls(monkeypatch)
    world = tmp_path / "world"
    ensure_world(world, scale=SCALE)
    (world / "notes.txt").write_text("operator notes")
    other = ensure_world(world, seed=7, scale=SCALE)
    assert other.seed == 7 and len(calls) == 2
    assert GroundTruth.load(world).seed == 7
    assert (world / "notes.txt").read_text() == "operator notes", "unrelated files survive a regeneration"
    ensure_world(world, seed=7, scale=SCALE * 2)
    assert len(calls) == 3
    ensure_world(world, seed=7, scale=SCALE * 2)
    assert len(calls) == 3


def test_regenerates_when_a_file_is_missing_or_stamp_is_bad(tmp_path, monkeypatch):
    calls = _count_calls(monkeypatch)
    world = tmp_path / "world"
    ensure_world(world, scale=SCALE)
    (world / "source.db").unlink()
    ensure_world(world, scale=SCALE)
    assert len(calls) == 2 and (world / "source.db").exists()
    (world / "world.stamp.json").write_text("{not json")
    ensure_world(world, scale=SCALE)
    assert len(calls) == 3


def test_a_world_without_stamp_is_rebuilt(tmp_path, monkeypatch):
    """Files from an interrupted plain `generate` are not trusted."""
    calls = _count_calls(monkeypatch)
    world = tmp_path / "world"
    from crmctl.demo_world import generate

    generate(world, scale=SCALE)
    ensure_world(world, scale=SCALE)
    assert len(calls) == 1
    assert json.loads((world / "world.stamp.json").read_text())["scale"] == SCALE


_WORKER = textwrap.dedent("""
    import sys
    import crmctl.demo.ensure as e
    real = e.generate
    def counting(*a, **k):
        print("GENERATED", flush=True)
        return real(*a, **k)
    e.generate = counting
    truth = e.ensure_world(sys.argv[1], scale=float(sys.argv[2]))
    print("TRUTH", truth.entity("contact").target_count, flush=True)
""")


def test_concurrent_callers_share_one_generation(tmp_path):
    world = tmp_path / "world"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(world), str(SCALE)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    # Meanwhile: whenever the world folder is visible it must be complete.
    while any(p.poll() is None for p in procs):
        time.sleep(0.01)
        if (world / "world.stamp.json").exists():
            truth = GroundTruth.load(world)
            conn = sqlite3.connect(f"file:{world / 'dataverse.db'}?mode=ro", uri=True)
            try:
                assert conn.execute("SELECT COUNT(*) FROM e_contact").fetchone()[0] == truth.entity("contact").target_count
            finally:
                conn.close()
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    joined = "".join(out for out, _ in outputs)
    assert joined.count("GENERATED") == 1
    truths = {line for line in joined.splitlines() if line.startswith("TRUTH")}
    assert len(truths) == 1
    assert not [p for p in tmp_path.iterdir() if p.name != "world"], "no temporary folders left behind"


@pytest.mark.parametrize("name", ["world", "nested/deeper/world"])
def test_creates_missing_parents(tmp_path, name):
    truth = ensure_world(tmp_path / name, scale=SCALE)
    assert (tmp_path / name / "source.db").exists() and truth.scale == SCALE
