"""Child process for the multi-process store tests (run as a script, never collected).

store_child.py append PATH COUNT TAG GOFILE   wait for GOFILE, then append COUNT entries
store_child.py ack PATH TAG                   append forever; print "seq<TAB>hash<TAB>payload"
                                              for each entry, only after append returned
store_child.py one PATH                       append one entry; print "seq<TAB>unix time"
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

from crmctl.identity import Actor
from crmctl.store import Store


async def append(path: str, count: int, tag: str, gofile: str) -> None:
    print("ready", flush=True)
    while not Path(gofile).exists():
        await asyncio.sleep(0.005)
    actor = Actor(operator=tag, host=f"pid:{os.getpid()}")
    async with await Store.open(path) as store:
        for i in range(count):
            await store.append("test.concurrent", {"tag": tag, "i": i}, actor=actor)
    print("done", flush=True)


async def ack(path: str, tag: str) -> None:
    actor = Actor(operator=tag, host=f"pid:{os.getpid()}")
    rng = random.Random(os.getpid())
    store = await Store.open(path)
    i = 0
    while True:
        payload = {"tag": tag, "i": i, "pad": "x" * rng.randrange(0, 3000)}
        if i % 5 == 4:  # some batches too, so a kill can land inside a multi-row transaction
            entries = await store.append_many(
                [("test.kill", payload), ("test.kill", {"i": i, "second": True})], actor=actor
            )
        else:
            entries = [await store.append("test.kill", payload, actor=actor)]
        for entry in entries:
            sys.stdout.write(
                f"{entry.seq}\t{entry.hash}\t{json.dumps(entry.payload, sort_keys=True)}\n"
            )
        sys.stdout.flush()
        i += 1


async def one(path: str) -> None:
    async with await Store.open(path) as store:
        entry = await store.append("test.feed", {"pid": os.getpid()}, actor=Actor("child", "local"))
        print(f"{entry.seq}\t{time.time()}", flush=True)


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "append":
        asyncio.run(append(argv[2], int(argv[3]), argv[4], argv[5]))
    elif mode == "ack":
        asyncio.run(ack(argv[2], argv[3]))
    elif mode == "one":
        asyncio.run(one(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
