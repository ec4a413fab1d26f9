"""Check built Lambda folders against Lambda's unzipped size limit.

    python -m pulse_dev.layer_size .aws-sam/build/EncoderLayer .aws-sam/build/CoreLayer ...

Prints each folder's unzipped size with its biggest packages, and the total against the limit that a
function and all its layers share; exits 1 if the total is over it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from pathlib import Path

LAMBDA_UNZIPPED_LIMIT = 262_144_000  # bytes: 250 MB for the function and all its layers, unzipped
TOP_PACKAGES = 8
MB = 1024 * 1024  # Lambda's "250 MB" is 250 * 2**20 bytes


def unzipped_size(path: Path | str) -> int:
    """Bytes of all regular files under path (or of path itself if it is a file); symlinks not followed."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            file_path = os.path.join(folder, name)
            if not os.path.islink(file_path):
                total += os.path.getsize(file_path)
    return total


def package_name(entry: str) -> str:
    """The package a top-level entry belongs to: numpy, numpy.libs and numpy-2.4.6.dist-info are numpy."""
    return re.sub(r"(-[^-]+\.dist-info|\.libs|\.py)$", "", entry)


def package_sizes(build_dir: Path) -> Counter[str]:
    # Layers keep their packages under python/; a function's code sits at the top level.
    packages_dir = build_dir / "python" if (build_dir / "python").is_dir() else build_dir
    sizes: Counter[str] = Counter()
    for entry in packages_dir.iterdir():
        sizes[package_name(entry.name)] += unzipped_size(entry)
    return sizes


def report(build_dirs: list[Path]) -> int:
    total = 0
    for build_dir in build_dirs:
        size = unzipped_size(build_dir)
        total += size
        print(f"{str(build_dir):<52} {size / MB:9.1f} MB")
        for name, package_size in package_sizes(build_dir).most_common(TOP_PACKAGES):
            print(f"    {name:<48} {package_size / MB:9.1f} MB")
    print(f"{'total':<52} {total / MB:9.1f} MB  ({total:,} bytes)")
    print(f"{'Lambda limit (function + layers, unzipped)':<52} {LAMBDA_UNZIPPED_LIMIT / MB:9.1f} MB  "
          f"({LAMBDA_UNZIPPED_LIMIT:,} bytes)")
    if total > LAMBDA_UNZIPPED_LIMIT:
        print(f"error: {(total - LAMBDA_UNZIPPED_LIMIT) / MB:.1f} MB over Lambda's unzipped limit", file=sys.stderr)
        return 1
    print(f"ok: {(LAMBDA_UNZIPPED_LIMIT - total) / MB:.1f} MB to spare")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pulse_dev.layer_size",
        description="Check built Lambda folders against Lambda's unzipped size limit.",
    )
    parser.add_argument("build_dirs", nargs="+", type=Path, metavar="DIR", help="built layer or function folder")
    args = parser.parse_args(argv)
    missing = [str(build_dir) for build_dir in args.build_dirs if not build_dir.is_dir()]
    if missing:
        parser.error(f"not a folder (run sam build first): {', '.join(missing)}")
    return report(args.build_dirs)


if __name__ == "__main__":
    sys.exit(main())
