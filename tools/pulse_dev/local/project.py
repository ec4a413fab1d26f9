"""Which Pulse project the developer tools work on: found from the working directory, never from where the
package happens to be installed (the tools work from a plain install as from an editable one)."""

from __future__ import annotations

from pathlib import Path


class ProjectNotFoundError(RuntimeError):
    """No template.yaml in the working directory or above it."""


def project_root(start: Path | None = None) -> Path:
    """The nearest folder holding template.yaml, from `start` (default: the working directory) upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "template.yaml").is_file():
            return folder
    raise ProjectNotFoundError(f"no template.yaml in {here} or any folder above it: run pulse from the project's "
                          "folder (the one with template.yaml)")
