"""Which modules of the deployed packages the Lambda handlers can import: the static import closure.

Every `import` and `from … import` in a module counts, wherever it is written (a function body's lazy import
included), so the closure is what a handler may ever load. A module a layer ships outside it is dead weight
in every function: tests fail on one (tests/integration/packaging/test_built_artifacts.py, tests/unit/test_layout.py).

    python -m pulse_dev.reachable functions/*/app.py --package-root layers/core --package-root layers/encoder
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterable, Sequence
from pathlib import Path


def imported_names(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Module names one file imports, relative imports resolved against `module` (its dotted name)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def module_file(name: str, roots: Sequence[Path]) -> Path | None:
    """The file of a dotted module name under one of the package roots, or None (stdlib, third party)."""
    for root in roots:
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def reachable_modules(entry_points: Iterable[Path], roots: Sequence[Path]) -> set[str]:
    """Dotted names of the modules under `roots` that the entry-point files import, directly or not."""
    pending = [name for entry in entry_points for name in imported_names(Path(entry).read_text(), "__main__")]
    reached: set[str] = set()
    while pending:
        name = pending.pop()
        path = module_file(name, roots)
        if path is None or name in reached:
            continue
        reached.add(name)
        parts = name.split(".")
        pending.extend(".".join(parts[:end]) for end in range(1, len(parts)))  # a package runs its __init__
        pending.extend(imported_names(path.read_text(), name, is_package=path.name == "__init__.py"))
    return reached


def shipped_modules(root: Path, packages: Iterable[str]) -> set[str]:
    """Dotted names of every .py module of `packages` under `root` (a source tree or a built layer)."""
    names = set()
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def shipped_packages(root: Path) -> set[str]:
    """Top-level import names a built layer's folder holds (packages, single-file modules and extension modules;
    not their metadata nor the `<name>.libs` folders of their bundled shared libraries)."""
    names = set()
    for entry in root.iterdir():
        if entry.name.endswith((".dist-info", ".libs")) or entry.name.startswith((".", "_distutils_hack")):
            continue
        if entry.is_dir() and (any(entry.glob("*.py")) or any(entry.glob("*.so"))):
            names.add(entry.name)
        elif entry.suffix in (".py", ".so"):
            names.add(entry.name.split(".")[0])
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entry_points", nargs="+", type=Path, help="handler files (functions/*/app.py)")
    parser.add_argument("--package-root", action="append", type=Path, required=True,
                        help="a folder holding deployed packages (repeatable)")
    parser.add_argument("--package", action="append", default=None,
                        help="the packages to check (default: pulse, pulse_encoder)")
    args = parser.parse_args(argv)
    packages = args.package or ["pulse", "pulse_encoder"]
    reached = reachable_modules(args.entry_points, args.package_root)
    shipped = set().union(*(shipped_modules(root, [p for p in packages if (root / p).is_dir()])
                            for root in args.package_root))
    for name in sorted(shipped - reached):
        print(f"unreachable: {name}")
    print(f"{len(shipped & reached)} of {len(shipped)} shipped modules are reachable from the handlers")
    return 1 if shipped - reached else 0


if __name__ == "__main__":
    raise SystemExit(main())
