"""Starts the real OData v4 server (tests/peers/odata/server.py, odatapy from PyPI) on 127.0.0.1.

odatapy is a test extra in pyproject.toml; without it the tests skip locally and fail under
CI=true, where `make test` should have installed it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parent / "odata" / "server.py"


def require_odatapy() -> None:
    if importlib.util.find_spec("odatapy") is None:
        message = "odatapy is not installed (pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class OdataPeer:
    """A running odatapy service: `root` is the service root, e.g. http://127.0.0.1:PORT/odata/."""

    root: str
    port: int
    process: subprocess.Popen[bytes]
    request_log: Path
    output: Path

    def requests(self) -> list[str]:
        """Every request line the service received ("GET /odata/Accounts?..."), in order."""
        return self.request_log.read_text().splitlines() if self.request_log.exists() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdin is not None:
            self.process.stdin.close()


def start_odata_peer(
    folder: Path,
    accounts: list[dict[str, Any]],
    *,
    page_size: int | None,
    basic: str | None = None,
    bearer: str | None = None,
    timeout: float = 30.0,
) -> OdataPeer:
    """Starts the service with `accounts` and waits until it listens."""
    require_odatapy()
    folder.mkdir(parents=True, exist_ok=True)
    ready = folder / "ready.json"
    config = {
        "readyFile": str(ready),
        "pageSize": page_size,
        "accounts": accounts,
        "basic": basic,
        "bearer": bearer,
        "requestLog": str(folder / "requests.log"),
    }
    return launch(SERVER, folder, config, timeout)


def launch(server: Path, folder: Path, config: dict[str, Any], timeout: float) -> OdataPeer:
    """Runs the odatapy `server` script with `config` (written to FOLDER/odata.json) and waits,
    generously (the machine may be loaded), for its ready file; its output goes to FOLDER/odata.out."""
    ready = Path(config["readyFile"])
    config_path = folder / "odata.json"
    config_path.write_text(json.dumps(config))
    output = folder / "odata.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(server), str(config_path)],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
        )
    give_up = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > give_up:
            process.kill()
            process.wait()
            raise RuntimeError(f"the OData server did not start: {output.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return OdataPeer(info["root"] + "/", int(info["port"]), process, folder / "requests.log", output)
