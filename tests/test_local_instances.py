"""Every command of the embedded default is served with its own settings: a local service
serves only the commands whose settings it was started with (their fingerprint), and a
command with other settings gets an instance of its own, running side by side."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

from tests.support.embedded import (
    cli,
    embedded_env,
    service_ready,
    service_states,
)
from tests.support.fake_providers import FakeProviders
from tests.support.media import make_jpeg, make_voice_note
from tests.support.processes import wait_until

PROVIDERS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GEMINI_BASE_URL")


def wait_for_services(data: Path, count: int) -> list[str]:
    """The URLs of the ``count`` local services under ``data``, once each has its worker."""
    wait_until(lambda: len(service_states(data)) == count, 120, f"{count} local services")
    urls = [state["url"] for state in service_states(data)]
    for url in urls:
        wait_until(lambda url=url: service_ready(url), 300, f"the local service at {url}")
    return urls


def job(summary: dict, name: str) -> dict:
    return next(j for j in summary["jobs"] if j["job"] == name)


def test_a_provider_key_set_after_the_demo_is_used_by_the_next_command(
    tmp_path: Path, fake_providers: FakeProviders
):
    """The demo's SKIPPED line says to set OPENAI_API_KEY; the next command has it."""
    data = tmp_path / "data"
    keys = embedded_env(data)
    without_keys = {k: v for k, v in keys.items() if k not in PROVIDERS}
    try:
        demo = cli(without_keys, "demo", "--json")
        assert demo.returncode == 0, demo.stderr[-2000:]
        voice = next(s for s in json.loads(demo.stdout) if s["type"] == "AUDIO")
        assert job(voice, "transcribe-audio")["state"] == "SKIPPED"
        [demo_service] = wait_for_services(data, 1)

        note = make_voice_note(tmp_path / "voice.m4a", 6, codec_args=("-c:a", "aac"))
        done = cli(keys, "process", str(note), "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        transcription = job(json.loads(done.stdout), "transcribe-audio")
        assert transcription["state"] == "SUCCEEDED"
        assert transcription["outputs"][0]["type"] == "TRANSCRIPTION"
        assert len(fake_providers.calls("openai")) == 1
        assert demo_service not in done.stderr  # not handed to the demo's service

        [keyed_service] = set(wait_for_services(data, 2)) - {demo_service}
        again = cli(keys, "process", str(note), "--json")  # now through its own service
        assert again.returncode == 0, again.stdout[-3000:]
        assert job(json.loads(again.stdout), "transcribe-audio")["state"] == "SUCCEEDED"
        assert f"processed by the local service at {keyed_service}" in again.stderr
        assert len(fake_providers.calls("openai")) == 2
        status = cli(keys, "server", "status").stdout
        assert status.count("running at") == 1  # one Prefect server for the data dir
        assert status.count("local service at") == 2
        assert f"media root {data / 'media'}" in status
        stored = "".join(p.read_text() for p in data.glob("local-service/**/*.json"))
        assert "sk-test" not in status and "sk-test" not in stored
    finally:
        stopped = cli(keys, "server", "stop")
    assert stopped.stdout.strip() == "stopped"
    assert cli(keys, "server", "status").stdout.strip() == "not running"


def rows(database: Path, table: str) -> set[str]:
    with sqlite3.connect(database) as connection:
        return {str(uuid.UUID(r[0])) for r in connection.execute(f"SELECT id FROM {table}")}


def stored_media(root: Path) -> set[str]:
    return {p.name for p in root.glob("alerts/*/media/*")}


def test_two_roots_processed_alternately_each_get_exactly_their_own(tmp_path: Path):
    """One data dir, two media roots and databases, commands alternating while both local
    services run: every media, row and file lands in its own root."""
    data, photo = tmp_path / "data", make_jpeg(tmp_path / "p.jpg", 900, 700)
    roots = {name: tmp_path / name for name in ("a", "b")}
    envs = {
        name: embedded_env(
            data, MEDIA_ROOT=str(root / "media"), DATABASE_URL=f"sqlite:///{root / 'app.db'}"
        )
        for name, root in roots.items()
    }
    made: dict[str, set[str]] = {name: set() for name in roots}
    served: list[str] = []
    try:
        for round_ in range(3):
            for name in roots:
                done = cli(envs[name], "process", str(photo), "--json")
                assert done.returncode == 0, done.stderr[-2000:]
                made[name].add(json.loads(done.stdout)["media_id"])
                served += [line for line in done.stderr.splitlines() if "local service" in line]
            if round_ == 0:
                wait_for_services(data, 2)
    finally:
        cli(envs["a"], "server", "stop")
    for name, root in roots.items():
        assert len(made[name]) == 3
        assert rows(root / "app.db", "media") == made[name]
        assert stored_media(root / "media") == made[name]
        assert len(list((root / "media").glob("alerts/*/media/*/*-thumbnail.jpg"))) == 3
    assert len(served) == 4 and len({line.split()[-1] for line in served}) == 2


def test_a_changed_enhancement_category_takes_effect_at_the_next_command(
    tmp_path: Path, fake_providers: FakeProviders
):
    data, photo = tmp_path / "data", make_jpeg(tmp_path / "p.jpg", 900, 700)
    env = embedded_env(data)
    try:
        first = cli(env, "process", str(photo), "--category", "AUTRE", "--json")
        assert first.returncode == 0, first.stderr[-2000:]
        assert "ai-enhancement" not in {j["job"] for j in json.loads(first.stdout)["jobs"]}
        wait_for_services(data, 1)  # the service of the default categories is up

        changed = {**env, "MEDIA_PIPELINE_ENHANCEMENT_CATEGORIES": '["AUTRE"]'}
        second = cli(changed, "process", str(photo), "--category", "AUTRE", "--json")
        assert second.returncode == 0, second.stderr[-2000:]
        assert job(json.loads(second.stdout), "ai-enhancement")["state"] == "SUCCEEDED"
        assert len(fake_providers.calls("gemini")) == 1
    finally:
        cli(env, "server", "stop")
