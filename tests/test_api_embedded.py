"""The README's three ``curl`` calls, run as written against ``media-pipeline api`` on the
embedded default (no PREFECT_API_URL, no worker started by hand): the API submits and
its own child worker processes, so the photo gets its derivatives."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
from PIL import Image

from tests.support.api import start_api
from tests.support.embedded import alive, cli
from tests.support.media import make_jpeg
from tests.support.processes import stop_process, wait_until

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_calls(base: str) -> str:
    text = README.read_text()
    block = text.split("<!-- api-curl:start -->")[1].split("<!-- api-curl:end -->")[0]
    script = re.search(r"```bash\n(.*?)```", block, re.S)
    assert script is not None
    return script.group(1).replace("http://127.0.0.1:8000", base)


def test_readme_curl_calls_process_a_photo_on_the_embedded_default(tmp_path: Path):
    skip = ("PREFECT_API_", "DATABASE_URL", "MEDIA_PIPELINE_DATA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    make_jpeg(tmp_path / "test.jpg", 2000, 1500, orientation=6)
    api, base = start_api(tmp_path / "api.log", timeout=400, cwd=tmp_path, base_env=env)
    try:
        calls = subprocess.run(
            ["bash", "-e", "-c", readme_calls(base)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert calls.returncode == 0, calls.stderr + (tmp_path / "api.log").read_text()[-3000:]
        media_id = re.findall(r'"mediaId":"([0-9a-f-]{36})"', calls.stdout)[-1]
        token = (tmp_path / ".data" / "api-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        view: dict = {}

        def ready() -> bool:
            view.update(httpx.get(f"{base}/api/media/{media_id}", headers=headers).json())
            return view["status"] == "READY"

        wait_until(ready, 300, "the photo to be READY", interval=1)
        sizes: dict[str, tuple[int, int]] = {}
        for derivative in view["derivatives"]:
            (tmp_path / derivative["type"]).write_bytes(httpx.get(derivative["url"]).content)
            sizes[derivative["type"]] = Image.open(tmp_path / derivative["type"]).size
        assert sizes == {"THUMBNAIL": (150, 150), "MEDIUM": (800, 600), "LARGE": (1440, 1080)}
        jobs = {j["job"]: j["state"] for j in view["jobs"]}
        assert jobs == {"generate-thumbnails": "SUCCEEDED", "ai-enhancement": "SKIPPED"}
        worker = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and f"api-{api.pid}".encode() in _cmdline(p)
        )
    finally:
        stop_process(api, timeout=90)
        cli({**env, "MEDIA_PIPELINE_DATA_DIR": str(tmp_path / ".data")}, "server", "stop")
    wait_until(lambda: not alive(worker), 60, "the API's worker to stop")


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
