"""The ``media-pipeline`` command line as a person runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.cli.app import app
from tests.support.media import make_jpeg

runner = CliRunner()


@pytest.mark.usefixtures("prefect_server", "sqlite_db")
def test_process_prints_jobs_and_exits_0_when_ready(tmp_path: Path):
    photo = make_jpeg(tmp_path / "photo.jpg", 1200, 900)

    table = runner.invoke(app, ["process", str(photo), "--category", "AUTRE"])
    as_json = runner.invoke(app, ["process", str(photo), "--json"])

    assert table.exit_code == 0, table.output
    assert "(IMAGE): READY" in table.output and "generate-thumbnails  SUCCEEDED" in table.output
    assert "LARGE:" in table.output and "(1200x900" in table.output
    assert as_json.exit_code == 0
    summary = json.loads(as_json.stdout)  # logs go to stderr: stdout is the JSON alone
    assert summary["status"] == "READY" and summary["type"] == "IMAGE"
    assert {o["type"] for o in summary["jobs"][0]["outputs"]} == {"THUMBNAIL", "MEDIUM", "LARGE"}


@pytest.mark.usefixtures("sqlite_db")
def test_refused_input_exits_2_with_a_clear_error(tmp_path: Path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    result = runner.invoke(app, ["process", str(notes)])
    assert result.exit_code == 2
    assert "not a recognised image, audio or video file" in result.output


def test_config_lists_every_setting():
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    for name in (
        "DATABASE_URL",
        "MEDIA_ROOT",
        "OPENAI_API_KEY",
        "GEMINI_BASE_URL",
        "MEDIA_PIPELINE_JPEG_QUALITY",
        "MEDIA_PIPELINE_WORK_POOL",
    ):
        assert f"`{name}`" in result.output


def test_readme_configuration_table_is_the_config_commands():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = runner.invoke(app, ["config"]).output
    assert table in readme, "run `media-pipeline config` and paste it into the README"


@pytest.mark.usefixtures("sqlite_db")
def test_register_answers_in_json(tmp_path: Path):
    photo = make_jpeg(tmp_path / "photo.jpg", 640, 480)
    result = runner.invoke(app, ["register", str(photo), "--category", "DISP", "--json"])
    assert result.exit_code == 0, result.output
    registered = json.loads(result.stdout)
    assert registered["type"] == "IMAGE" and registered["flow_runs"] == []
    assert len(registered["media_id"]) == 36 and len(registered["alert_id"]) == 36
