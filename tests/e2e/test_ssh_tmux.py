"""The control room over `ssh -tt` inside tmux, at 80x24: the jump-host way of working.

A private sshd (own host key, own config, key authentication only, 127.0.0.1 on a free high
port) is started for the test; tmux runs `ssh -tt` to it, and the remote side runs the real
`crmctl tui --read-only` on a journal with results. The header must name the operator as coming
from SSH (the identity the journal would record), the screens must draw and switch, and quitting
must end the remote process and the ssh session.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.e2e.terminal import CRMCTL, Tmux, crmctl_processes, descendants, wait_gone
from tests.e2e.test_terminals_tmux import _journal

pytestmark = pytest.mark.e2e


def _sshd() -> str:
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if found is None:
        require_tool("sshd")  # skips locally, fails under CI=true, with the reason
    return str(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def test_control_room_over_ssh_tt_inside_tmux(demo_config: Path, tmp_path: Path) -> None:
    tmux = Tmux(require_tool("tmux"))
    ssh = require_tool("ssh")
    sshd = _sshd()
    require_tool("ssh-keygen")
    asyncio.run(_journal(demo_config))

    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    _keygen(keys / "host_key")
    _keygen(keys / "id")
    (keys / "authorized_keys").write_text((keys / "id.pub").read_text())
    os.chmod(keys / "authorized_keys", 0o600)
    port = _free_port()
    (keys / "sshd_config").write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {keys / 'host_key'}",
            f"AuthorizedKeysFile {keys / 'authorized_keys'}",
            f"PidFile {keys / 'sshd.pid'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            "",
        ])
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    daemon = subprocess.Popen([sshd, "-D", "-e", "-f", str(keys / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert daemon.poll() is None, f"sshd did not start: {daemon.stderr.read() if daemon.stderr else ''}"
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.05)

        remote = f"cd {shlex.quote(str(demo_config.parent))} && CRMCTL_OPERATOR=sam {CRMCTL} tui --read-only --config {demo_config}"
        command = " ".join([
            ssh, "-tt", "-i", str(keys / "id"), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", f"{os.environ.get('USER') or 'root'}@127.0.0.1", shlex.quote(remote),
        ])
        tmux.start("jump", command, {"TERM": "tmux-256color"}, size=(80, 24))
        screen = tmux.wait_for("jump", lambda s: "Red items" in s and "account.count" in s, timeout=30)
        header = screen.splitlines()[0]
        assert "sam@ssh:127.0.0.1" in header and "READ-ONLY" in header  # who, and from where
        assert "✖ BREACH" in screen and "q Quit" in screen.splitlines()[-1]
        tmux.keys("jump", "2")
        tmux.wait_for("jump", lambda s: "⏎ Details" in s and "20,000 → 19,966 (-34)" in s, timeout=10)
        tmux.keys("jump", "5")
        tmux.wait_for("jump", lambda s: "erp-sync · ERP Sync" in s and "Failures 12" in s, timeout=10)
        shell = tmux.pane_pid("jump")
        assert crmctl_processes(shell), "ssh is not running"
        sessions = [p for p in descendants(daemon.pid)]
        assert sessions, "no ssh session on the server side"
        tmux.keys("jump", "q")
        wait_gone(shell, timeout=15)  # the remote crmctl quit, so ssh ended too
        deadline = time.monotonic() + 10
        while [p for p in sessions if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in sessions if Path(f"/proc/{p}").exists()], "the remote side was left running"
    finally:
        tmux.kill()
        daemon.terminate()
        daemon.wait(timeout=10)
