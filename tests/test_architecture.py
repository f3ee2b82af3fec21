"""The floor plan: layers import only downward (import-linter, run by ``make lint`` and
here), the job table is cheap data, and the app's import of our client changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tasks.table import BACKFILL_QUEUE, JOB_TABLE, PRIORITY_QUEUES

ROOT = Path(__file__).resolve().parents[1]


def test_layers_import_only_downward():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 7 kept, 0 broken." in result.stdout


def test_importing_the_client_api_loads_no_media_library_and_keeps_pillow_settings():
    probe = (
        "from PIL import Image; limit = Image.MAX_IMAGE_PIXELS; import sys; "
        "import deployments.operations.client_api, tasks.table; "
        "print(limit == Image.MAX_IMAGE_PIXELS, "
        "sorted(m for m in ('pyvips', 'av', 'numpy', 'openai', 'google.genai', 'pillow_heif') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "[]"]


def test_every_job_core_is_importable_and_callable():
    for job in JOB_TABLE:
        assert callable(job.load()), job.name


def test_prefect_yaml_has_one_deployment_per_tier_of_the_job_table():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    media = {  # named after the pool they are deployed to
        d["name"].replace("{{ $MEDIA_PIPELINE_WORK_POOL }}", "media"): d
        for d in config["deployments"]
        if d["entrypoint"].startswith("flows/media")
    }
    tiers = {job.queue for job in JOB_TABLE}
    backfill = media.pop(f"media-{BACKFILL_QUEUE}")  # a named job of any tier, below them all
    assert backfill["work_pool"]["work_queue_name"] == BACKFILL_QUEUE
    assert "parameters" not in backfill
    assert set(media) == {f"media-{tier}" for tier in tiers}
    for tier in tiers:
        deployment = media[f"media-{tier}"]
        assert deployment["parameters"] == {"tier": tier}
        assert deployment["work_pool"]["work_queue_name"] == tier
    assert set(PRIORITY_QUEUES.values()) == tiers


def test_the_readme_job_table_is_the_job_table():
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `") and "` | " in line]
    listed = {row.split("`")[1]: row for row in rows if row.split("`")[1] in JOB_TABLE.names()}
    assert set(listed) == set(JOB_TABLE.names())
    for job in JOB_TABLE:
        row = listed[job.name]
        assert f"| {job.media_type.value}" in row
        assert f"| {job.priority} (`{job.queue}`) |" in row
