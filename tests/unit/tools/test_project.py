"""The developer tools find the project from the working directory, not from where pulse is installed."""

import pytest

from pulse_dev.local.project import ProjectNotFoundError, project_root


def test_the_project_is_the_nearest_folder_with_template_yaml_from_the_working_directory_up(tmp_path, monkeypatch):
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    nested = tmp_path / "functions" / "ingest"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert project_root() == tmp_path
    assert project_root(tmp_path / "functions") == tmp_path


def test_outside_a_project_the_error_says_where_to_run_from(tmp_path):
    with pytest.raises(ProjectNotFoundError, match="run pulse from the project's folder"):
        project_root(tmp_path)
