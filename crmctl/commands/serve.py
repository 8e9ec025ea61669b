"""`crmctl serve`: the wall screen — the control room, read-only, in a browser on 127.0.0.1.

textual-serve runs one `crmctl tui --read-only` process per browser session and streams it to
xterm.js over a websocket. Observers in the war room (or on a wall display) see exactly what the
operators' journal says, and can take no action: the served command is read-only, whatever the
browser sends. Only 127.0.0.1 is bound: put an authenticating reverse proxy in front to share it
further, never the raw port.

Textual and textual-serve are imported only when the command runs (`crmctl check` and the other
headless commands must not import Textual).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
"""The only interface the wall screen listens on."""
DEFAULT_PORT = 8000


def register(sub: Any) -> None:
    """Adds `crmctl serve` to the CLI."""
    from crmctl.cli import config_arg

    p = sub.add_parser("serve", help="publish the control room read-only in a browser (127.0.0.1)")
    config_arg(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (0 = ephemeral; default {DEFAULT_PORT})")
    p.add_argument("--title", help="browser tab title (default: the project name)")
    p.set_defaults(func=cmd_serve)


def served_command(config: Path) -> str:
    """The command textual-serve runs per browser session: this Python, this crmctl, read-only."""
    return shlex.join([sys.executable, "-m", "crmctl", "tui", "--read-only", "--config", str(Path(config).resolve())])


def cmd_serve(args: argparse.Namespace) -> int:
    from crmctl.cli import EXIT_OK, EXIT_USAGE, load_or_report

    config = load_or_report(args.config)  # refuse a broken config now, not in every browser tab
    if config is None:
        return EXIT_USAGE
    try:
        from textual_serve.server import Server
    except ImportError:
        print("crmctl serve needs textual-serve: pip install 'crmctl[serve]'", file=sys.stderr)
        return EXIT_USAGE
    server = Server(served_command(args.config), host=HOST, port=args.port, title=args.title or config.project)
    try:
        asyncio.run(serve(server, args.port))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


async def serve(server: Any, port: int) -> None:
    """Runs textual-serve's web app on HOST:port until SIGINT/SIGTERM, printing the URL first.

    textual-serve's own `serve()` cannot report an ephemeral port (it silences aiohttp), so the
    app it builds is run here instead; the page's websocket URL is derived from `public_url`,
    which is therefore set once the real port is known.
    """
    from aiohttp import web

    server.initialize_logging()
    app = await server._make_app()  # noqa: SLF001 - the documented Server builds it this way too
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    actual = runner.addresses[0][1]
    server.port = actual
    server.public_url = f"http://{HOST}:{actual}"
    print(f"crmctl serve: the control room, read-only, on {server.public_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # closes every session: each served app is told to quit


__all__ = ["HOST", "cmd_serve", "register", "served_command"]
