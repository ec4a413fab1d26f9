"""`pulse catalog build`: the same code path as the catalogue function, from a terminal."""

import json

from pulse_dev.cli import main
from tests.scenarios import catalog_lines


def test_catalog_build_publishes_and_reports_bad_lines_with_their_number(stack, tmp_path, capsys):
    bucket = stack.name_of("AWS::S3::Bucket")
    good = tmp_path / "movies.jsonl"
    good.write_text("\n".join(catalog_lines()) + "\n")
    assert main(["catalog", "build", str(good), "--bucket", bucket]) == 0
    assert "32 items published" in capsys.readouterr().out
    current = json.loads(stack.client("s3").get_object(Bucket=bucket, Key="catalog/CURRENT")["Body"].read())

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*catalog_lines(), '{"item_id": "x"}', "oops"]) + "\n")
    assert main(["catalog", "build", str(bad), "--bucket", bucket]) == 1
    errors = capsys.readouterr().err
    assert f"{bad}:33: an item needs a title or a text to embed" in errors
    assert f"{bad}:34: not valid JSON" in errors and "nothing published" in errors
    assert json.loads(stack.client("s3").get_object(Bucket=bucket, Key="catalog/CURRENT")["Body"].read()) == current

    assert main(["catalog", "build", str(bad), "--bucket", bucket, "--skip-invalid"]) == 0
    captured = capsys.readouterr()
    assert "already published" in captured.out and ":33: skipped" in captured.err


def test_catalog_build_finds_its_prefix_without_reading_the_other_settings(stack, tmp_path, capsys, monkeypatch):
    """Found by review: without --prefix, a bad unrelated PULSE_* variable in the shell stopped the build."""
    bucket = stack.name_of("AWS::S3::Bucket")
    lines = tmp_path / "movies.jsonl"
    lines.write_text("\n".join(catalog_lines()) + "\n")
    monkeypatch.setenv("PULSE_TTL_DAYS", "soon")
    monkeypatch.setenv("PULSE_CATALOG_PREFIX", "shop/")
    assert main(["catalog", "build", str(lines), "--bucket", bucket]) == 0
    assert f"s3://{bucket}/shop/" in capsys.readouterr().out
    monkeypatch.delenv("PULSE_CATALOG_PREFIX")
    assert main(["catalog", "build", str(lines), "--bucket", bucket]) == 0
    assert f"s3://{bucket}/catalog/" in capsys.readouterr().out
