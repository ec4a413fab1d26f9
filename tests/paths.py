"""Where the tests find the project: they live in the repository, one folder below its root."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
