"""`python -m crmctl.emulator`: serve a data file as a local Dataverse Web API until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import sys

from crmctl.emulator.scenario import ScenarioError
from crmctl.emulator.server import serve_forever


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crmctl.emulator", description=__doc__)
    parser.add_argument("--data", required=True, help="dataverse.db, or the folder holding it")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--scenario", help="fault scenario YAML (see data/scenarios/)")
    parser.add_argument("--token", help="bearer token to accept (random if omitted)")
    parser.add_argument("--log", help="append a JSON line per request to this file")
    args = parser.parse_args(argv)
    try:
        asyncio.run(
            serve_forever(args.data, args.port, args.scenario, args.token, log_path=args.log)
        )
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
