"""The `pulse` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

LOCAL_RUNTIME_FILE = Path(".pulse/local.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse", description="Pulse: real-time interest capture")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the write path end to end on the embedded local stack")
    demo.add_argument("--port", type=int, default=4566, help="local AWS endpoint port (default 4566)")
    demo.add_argument("--users", type=int, default=40)
    demo.add_argument("--out", type=Path, default=Path(".pulse/demo.json"))

    catalog = commands.add_parser("catalog", help="catalogue commands").add_subparsers(dest="action", required=True)
    build = catalog.add_parser("build", help="validate, embed and publish a JSON Lines catalogue")
    build.add_argument("file", type=Path, help="JSON Lines: item_id, title, text, categories, available, ...")
    build.add_argument("--bucket", help="target bucket (default: $PULSE_BUCKET, else the local stack's)")
    build.add_argument("--prefix", default=os.environ.get("PULSE_CATALOG_PREFIX", "catalog/"))
    build.add_argument("--skip-invalid", action="store_true", help="publish the valid lines, report the others")
    build.add_argument("--batch-size", type=int, default=256)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from pulse.local.demo import print_summary, run_demo

        print_summary(run_demo(args.port, args.out, users=args.users))
        print(f"\nwritten to {args.out}")
        return 0
    if args.command == "catalog":
        return catalog_build(args)
    return 2


def target_bucket(explicit: str | None) -> str:
    """--bucket, else $PULSE_BUCKET, else the running local stack's (its endpoint then becomes the default)."""
    bucket = explicit or os.environ.get("PULSE_BUCKET")
    if bucket:
        return bucket
    if LOCAL_RUNTIME_FILE.is_file():
        local = json.loads(LOCAL_RUNTIME_FILE.read_text())
        os.environ.setdefault("AWS_ENDPOINT_URL", local["aws_endpoint"])
        os.environ.setdefault("AWS_DEFAULT_REGION", local["region"])
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(key, "pulse-local")
        return local["bucket"]
    raise SystemExit("no bucket: pass --bucket, set PULSE_BUCKET, or start the local stack (make local)")


def catalog_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pulse.catalog_build import CatalogInvalid, parse_catalog_lines, publish_catalog
    from pulse.catalog_store import S3CatalogRepository
    from pulse_encoder import load_encoder

    if not args.file.is_file():
        raise SystemExit(f"{args.file}: no such file")
    lines = args.file.read_bytes().splitlines()
    repository = S3CatalogRepository(target_bucket(args.bucket), args.prefix)
    items, _ = parse_catalog_lines(lines)
    try:
        with tqdm(total=len(items), desc="embedding items", unit="item") as progress:
            result = publish_catalog(lines, load_encoder(), repository, skip_invalid=args.skip_invalid,
                                     progress=progress.update, batch_size=args.batch_size)
    except CatalogInvalid as error:
        for line, problem in error.problems[:50]:
            print(f"{args.file}:{line}: {problem}", file=sys.stderr)
        print(f"{len(error.problems)} invalid line(s): nothing published (--skip-invalid publishes the rest)",
              file=sys.stderr)
        return 1
    for line, problem in result.skipped:
        print(f"{args.file}:{line}: skipped: {problem}", file=sys.stderr)
    state = "published" if result.new_files else "already published; CURRENT points at it"
    print(f"catalogue {result.version}: {result.items} items {state} in s3://{repository.bucket}/{repository.prefix}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
