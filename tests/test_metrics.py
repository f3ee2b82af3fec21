"""``media-pipeline metrics`` scraped over HTTP as Prometheus would, and the Grafana
dashboard's queries checked against the names it exports."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import httpx

from deployments.operations.registration import register_media
from flows.media import process_media
from tests.support.media import make_jpeg
from tests.support.processes import free_port, http_ok, start_process, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"media_pipeline_[a-z_]+")


def test_metrics_serve_the_pipeline_without_personal_data(
    prefect_server: str, postgres_app_db: str, tmp_path: Path
):
    photo = make_jpeg(tmp_path / "portrait-of-jane-doe.jpg", 800, 600)
    media = register_media(photo, category="DISP")
    assert process_media(str(media.id), return_state=True).is_completed()

    port = free_port()
    script = Path(sys.executable).parent / "media-pipeline"
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    server = start_process(
        [str(script), "metrics", "--port", str(port)], env, tmp_path / "metrics.log"
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: http_ok(url) or server.poll() is not None, 60, "the metrics server")
        text = httpx.get(url, timeout=30).text
    finally:
        stop_process(server)

    samples = dict(re.findall(r"^(media_pipeline_\S+) (\S+)$", text, re.MULTILINE))
    assert samples['media_pipeline_jobs{job="generate-thumbnails",state="succeeded"}'] == "1.0"
    assert samples['media_pipeline_jobs{job="ai-enhancement",state="skipped"}'] == "1.0"
    assert samples['media_pipeline_job_attempts_total{job="generate-thumbnails"}'] == "1.0"
    assert samples['media_pipeline_job_duration_seconds_count{job="generate-thumbnails"}'] == "1.0"
    assert samples["media_pipeline_outbox_runs"] == "0.0"  # every planned run made
    assert samples["media_pipeline_prefect_up"] == "1.0"
    for queue in ("high", "normal", "low"):
        assert f'media_pipeline_oldest_waiting_seconds{{queue="{queue}"}}' in samples
        assert f'media_pipeline_flow_runs{{queue="{queue}",state="running"}}' in samples
    # Queue, job, state and provider names only: nothing of the media or the alert.
    for personal in ("jane", str(media.id), str(media.alert_id), "DISP"):
        assert personal not in text


def test_the_grafana_dashboard_queries_exported_names():
    dashboard = json.loads((ROOT / "grafana" / "media-pipeline.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC.findall(target["expr"])
    }
    source = (ROOT / "deployments" / "operations" / "metrics.py").read_text()
    families = set(re.findall(r'MetricFamily\(\s*"(media_pipeline_[a-z_]+)"', source))
    exported = (
        families
        | {f"{f}_total" for f in families}
        | {f"{f}_{suffix}" for f in families for suffix in ("bucket", "sum", "count")}
    )
    assert queried and queried <= exported, queried - exported
    assert {
        "media_pipeline_flow_runs",
        "media_pipeline_oldest_waiting_seconds",
        "media_pipeline_jobs",
        "media_pipeline_job_duration_seconds_bucket",
    } <= queried
