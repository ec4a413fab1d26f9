"""Mutation testing of the deployed package's core modules with mutmut, and a killed/survived table per module.

mutmut 3 imports the mutated copy from `mutants/src/` and names modules by their path under `src/`, so this
stages the package as `src/pulse` in a work folder per module (.mutation/MODULE/, kept between runs: mutmut
resumes and retests only what changed). template.yaml, functions/ and events/ are linked in where the local
stack and the tests look for them. Each module is checked by the fast tests named for it below; of those,
mutmut runs for each mutant only the tests that call the mutated function.

    python tools/pulse_dev/mutation.py                  # every module below, on the project in the working directory
    python tools/pulse_dev/mutation.py events.behaviour events.dead_letters --max-children 1 --project /path/to/pulse
    python tools/pulse_dev/mutation.py catalog.store --only 'pulse.catalog.store.x_publish*'   # a few functions again
"""

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from pulse_dev.local.project import ProjectNotFoundError, project_root

# module -> the fast tests that cover it (none is marked slow; each file takes under 25 s).
TESTS = {
    "events.behaviour": [
        "tests/unit/catalog/test_catalog.py",
        "tests/unit/events/test_events.py",
        "tests/unit/events/test_event_fuzz.py",
        "tests/unit/ingest/test_ingest_pipeline.py",
        "tests/integration/ingest/test_ingest_handler.py",
        "tests/integration/ingest/test_dlq_replay.py",
    ],
    "events.dead_letters": [
        "tests/unit/events/test_dead_letters.py",
        "tests/unit/ingest/test_ingest_pipeline.py",
        "tests/unit/events/test_event_fuzz.py",
        "tests/integration/ingest/test_ingest_handler.py",
        "tests/integration/ingest/test_dlq_replay.py",
        "tests/integration/ingest/test_faults.py",
    ],
    "interest.model": [
        "tests/unit/interest/test_interest.py",
        "tests/unit/interest/test_interest_edges.py",
        "tests/unit/interest/test_state_bounds.py",
        "tests/unit/serving/test_recommend.py",
        "tests/integration/ingest/test_ingest_handler.py",
    ],
    "interest.store": [
        "tests/unit/interest/test_store.py",
        "tests/integration/interest/test_store_dynamo.py",
        "tests/unit/interest/test_state_bounds.py",
        "tests/unit/interest/test_interest.py",
        "tests/unit/ingest/test_ingest_pipeline.py",
        "tests/integration/ingest/test_ingest_handler.py",
        "tests/integration/ingest/test_faults.py",
        "tests/integration/privacy/test_privacy.py",
    ],
    "ingest.pipeline": [
        "tests/unit/ingest/test_ingest_pipeline.py",
        "tests/unit/ingest/test_ingest_edges.py",
        "tests/unit/events/test_event_fuzz.py",
        "tests/integration/ingest/test_ingest_handler.py",
        "tests/integration/ingest/test_faults.py",
    ],
    "catalog.store": [
        "tests/unit/catalog/test_catalog.py",
        "tests/integration/catalog/test_catalog_faults.py",
        "tests/integration/catalog/test_catalog_store_edges.py",
        "tests/integration/training/test_training.py",
        "tests/integration/ingest/test_faults.py",
    ],
    "serving.recommend": [
        "tests/unit/serving/test_recommend.py",
        "tests/unit/serving/test_int8_scan.py",
        "tests/unit/ingest/test_ingest_pipeline.py",
        "tests/integration/serving/test_api.py",
    ],
    "serving.int8_scan": [
        "tests/unit/serving/test_int8_scan.py",
        "tests/integration/catalog/test_catalog_store_edges.py",
    ],
}
# Fixed order (mutmut's timing stats assume it), never a slow test, one process (mutmut forks one per mutant).
PYTEST_ARGS = ["-p", "no:randomly", "-n", "0", "-m", "not slow", "-p", "no:cacheprovider"]
LINKED = ["template.yaml", "functions", "events", "tests"]
COLUMNS = ["killed", "survived", "timeout", "no tests", "not checked", "other"]


def sync_tree(source: Path, target: Path) -> None:
    """Make target a copy of source, touching only what differs (mutmut compares modification times)."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {path.name for path in source.iterdir() if path.name != "__pycache__"}
    for stale in {path.name for path in target.iterdir()} - wanted:
        shutil.rmtree(target / stale) if (target / stale).is_dir() else (target / stale).unlink()
    for name in wanted:
        if (source / name).is_dir():
            sync_tree(source / name, target / name)
        elif not (target / name).exists() or not filecmp.cmp(source / name, target / name, shallow=False):
            shutil.copy2(source / name, target / name)


def module_path(module: str) -> str:
    """events.behaviour -> events/behaviour.py (the module's file under the package)."""
    return module.replace(".", "/") + ".py"


def stage(project: Path, work: Path, module: str) -> None:
    sync_tree(project / "layers" / "core" / "pulse", work / "src" / "pulse")
    for name in LINKED:
        link = work / name
        if not link.is_symlink():
            link.symlink_to(project / name)
    config = {
        "source_paths": ["src/pulse"],
        "only_mutate": [f"src/pulse/{module_path(module)}"],
        "also_copy": ["events", "template.yaml", "functions"],  # tests find them beside tests/
        "pytest_add_cli_args": PYTEST_ARGS,
        "pytest_add_cli_args_test_selection": TESTS[module],
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (work / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + "\n[tool.mutmut]\n"
                                         + "\n".join(lines) + "\n")


def outcomes(work: Path, module: str) -> tuple[dict[str, int], list[str]]:
    """Counts per outcome for one module, and the names of its surviving mutants, from mutmut's record."""
    from mutmut.stats import status_by_exit_code

    meta = work / "mutants" / "src" / "pulse" / f"{module_path(module)}.meta"
    if not meta.exists():
        raise SystemExit(f"mutmut left no results for {module} ({meta} is missing); see its output above.")
    counts = dict.fromkeys(COLUMNS, 0)
    survivors = []
    for name, exit_code in json.loads(meta.read_text())["exit_code_by_key"].items():
        status = status_by_exit_code[exit_code]
        counts[status if status in counts else "other"] += 1
        if status == "survived":
            survivors.append(name)
    return counts, survivors


def table(rows: dict[str, dict[str, int]]) -> str:
    header = ["module", *COLUMNS, "killed %"]
    lines = [header]
    for module, counts in rows.items():
        checked = sum(counts.values()) - counts["not checked"]  # a run stopped early counts what it checked
        rate = f"{100 * counts['killed'] / checked:.1f}" if checked else "-"
        lines.append([module, *(str(counts[column]) for column in COLUMNS), rate])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=list(TESTS), help=f"some of: {', '.join(TESTS)}")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--project", type=Path, help="the Pulse project (default: the folder with template.yaml "
                        "from the working directory up)")
    parser.add_argument("--work", type=Path, help="work folder (default: the project's .mutation/)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", default=[],
                        help="test only the mutants matching these patterns (fnmatch, e.g. "
                             "'pulse.catalog.store.x_publish*'); the rest keep their last results")
    parser.add_argument("--report-only", action="store_true", help="print the table of the last run, run nothing")
    args = parser.parse_args()
    unknown = [module for module in args.modules if module not in TESTS]
    if unknown:
        parser.error(f"no tests are mapped for {', '.join(unknown)}; choose among {', '.join(TESTS)}")
    try:
        project = (args.project or project_root()).resolve()
    except ProjectNotFoundError as error:
        parser.error(f"{error} (or pass --project)")
    work = (args.work or project / ".mutation").resolve()
    tomllib.loads((project / "pyproject.toml").read_text())  # a broken pyproject fails here, not inside mutmut
    mutmut = Path(sys.executable).with_name("mutmut")
    for module in [] if args.report_only else args.modules:
        stage(project, work / module, module)
        run = subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children), *args.only],
                             cwd=work / module)
        if run.returncode:
            print(f"mutmut stopped on {module} with exit code {run.returncode}", file=sys.stderr)
            return run.returncode
    results = {module: outcomes(work / module, module) for module in args.modules}
    survivors = [name for _, names in results.values() for name in names]
    for name in survivors:
        print(f"survived: {name}")
    if survivors:
        print(f"(the diff of one: cd {work}/MODULE && {mutmut} show NAME)")
    print()
    print(table({module: counts for module, (counts, _) in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
