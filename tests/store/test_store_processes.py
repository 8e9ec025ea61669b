"""Store across processes: concurrent appenders, the change feed, and SIGKILL at random moments."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crmctl.store import Store, verify_file

CHILD = str(Path(__file__).with_name("store_child.py"))
KILLS = int(os.environ.get("CRMCTL_KILLS", "10"))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_processes_appending_at_once_build_one_chain(tmp_path):
    """4 x 200 appends racing on a file that does not exist yet (so creation and migration race
    too): 800 entries, no gaps, every writer's entries in its own order, chain verifies."""
    path = tmp_path / "state" / "state.db"
    gofile = tmp_path / "go"
    children = [spawn("append", str(path), "200", f"p{n}", str(gofile)) for n in range(4)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        gofile.touch()
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            assert out.strip() == "done"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    report = verify_file(path)
    assert report.ok, report.reason
    assert report.entries == 800

    async def read() -> list:
        async with await Store.open(path, readonly=True) as store:
            return await store.entries()

    entries = asyncio.run(read())
    assert [e.seq for e in entries] == list(range(1, 801))
    for n in range(4):
        mine = [e.payload["i"] for e in entries if e.payload["tag"] == f"p{n}"]
        assert mine == list(range(200))
    # The writers really interleaved (otherwise this test proves little).
    switches = sum(
        1
        for a, b in zip(entries, entries[1:], strict=False)
        if a.payload["tag"] != b.payload["tag"]
    )
    assert switches > 3


async def test_change_feed_sees_another_process_within_a_second(tmp_path):
    path = tmp_path / "state.db"
    store = await Store.open(path)
    received: dict[int, float] = {}

    async def watch(start: int) -> None:
        async for batch in store.watch(interval=0.25, after_seq=start):
            for entry in batch:
                received[entry.seq] = time.time()

    try:
        start = await store.last_seq()
        watcher = asyncio.ensure_future(watch(start))
        acks: dict[int, float] = {}
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                CHILD,
                "one",
                str(path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            seq, committed = out.decode().split()
            acks[int(seq)] = float(committed)
        deadline = time.time() + 3
        while set(acks) - set(received) and time.time() < deadline:
            await asyncio.sleep(0.02)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    finally:
        await store.close()
    assert set(received) == set(acks) == {1, 2}
    for seq, committed in acks.items():
        assert received[seq] - committed < 1.0, (seq, received[seq] - committed)


def test_sigkill_never_loses_an_acknowledged_entry(tmp_path):
    """A child appends in a loop and prints each seq only after append returned; we SIGKILL it
    at random moments (CRMCTL_KILLS times, default 10) and restart it on the same file. Every
    acknowledged entry must be there, byte for byte, and the chain must verify."""
    path = tmp_path / "state.db"
    seed = int(os.environ.get("CRMCTL_KILL_SEED", time.time_ns() % 10**9))
    rng = random.Random(seed)
    acked: dict[int, tuple[str, dict]] = {}
    for round_ in range(KILLS):
        child = spawn("ack", str(path), f"r{round_}")
        assert child.stdout is not None
        wanted = rng.choice([0, 1, 2, 5, 10, 20, 40])
        if wanted == 0:
            time.sleep(rng.uniform(0.0, 0.4))  # may land during start-up, open or recovery
        lines: list[str] = []
        while len(lines) < wanted:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        time.sleep(rng.uniform(0, 0.01))
        child.send_signal(signal.SIGKILL)
        # Not communicate(): it reads the raw pipe and would skip what readline() buffered.
        rest = child.stdout.read()
        err = child.stderr.read() if child.stderr else ""
        child.wait(timeout=30)
        child.stdout.close()
        if child.stderr:
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL, f"seed {seed}: child died early: {err}"
        lines += rest.splitlines(keepends=True)
        for line in lines:
            if not line.endswith("\n"):
                continue  # cut mid-line by the kill: it was never fully acknowledged
            seq_text, digest, payload = line.rstrip("\n").split("\t")
            seq = int(seq_text)
            assert seq not in acked, f"seed {seed}: seq {seq} acknowledged twice"
            acked[seq] = (digest, json.loads(payload))

    report = verify_file(path)
    assert report.ok, f"seed {seed}: {report.reason}"
    assert acked, f"seed {seed}: nothing was ever acknowledged"

    async def read() -> dict:
        async with await Store.open(path, readonly=True) as store:
            return {e.seq: e for e in await store.entries()}

    stored = asyncio.run(read())
    for seq, (digest, payload) in acked.items():
        assert seq in stored, f"seed {seed}: acknowledged seq {seq} lost"
        assert stored[seq].hash == digest, f"seed {seed}: seq {seq} changed"
        assert stored[seq].payload == payload, f"seed {seed}: seq {seq} payload changed"
