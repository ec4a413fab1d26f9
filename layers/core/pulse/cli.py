"""The `pulse` command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse", description="Pulse: real-time interest capture")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the write path end to end on the embedded local stack")
    demo.add_argument("--port", type=int, default=4566, help="local AWS endpoint port (default 4566)")
    demo.add_argument("--users", type=int, default=40)
    demo.add_argument("--out", type=Path, default=Path(".pulse/demo.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "demo":
        from pulse.local.demo import print_summary, run_demo

        print_summary(run_demo(args.port, args.out, users=args.users))
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
