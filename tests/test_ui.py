"""What operators see in the Prefect UI, checked in headless Chromium (Debian's chromium and
chromium-driver, installed by ``make test``): a photo and a voice note processed by a warm
worker, then their flow run pages, the Artifacts tab, the derivative table and the
transcript. Screenshots go to ``.test-output/ui/``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.operations.client_api import submit_media
from deployments.operations.registration import register_media
from deployments.worker.warm import WORKER_TYPE
from tests.support.media import make_jpeg, make_voice_note
from tests.support.processes import wait_until
from tests.support.production import wait_for_runs

SCREENSHOTS = Path(__file__).resolve().parents[1] / ".test-output" / "ui"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and the browser it started


def wait_for_text(driver, text: str, timeout: float = 30) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout).until(
            lambda d: text in d.find_element("tag name", "body").text
        )
    except TimeoutException:
        shot = screenshot(driver, "failed")
        page = driver.find_element("tag name", "body").text[:1500]
        pytest.fail(f"{text!r} never appeared on {driver.current_url} (see {shot}):\n{page}")


def click_text(driver, text: str, timeout: float = 30) -> None:
    """Click the first visible element with ``text`` in its own text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    xpath = f"//*[text()[contains(., '{text}')]]"
    try:
        element = WebDriverWait(driver, timeout).until(
            lambda d: next((e for e in d.find_elements("xpath", xpath) if e.is_displayed()), None)
        )
    except TimeoutException:
        shot = screenshot(driver, "failed")
        found = [
            (e.tag_name, e.is_displayed(), e.get_attribute("outerHTML")[:300])
            for e in driver.find_elements("xpath", f"//*[contains(., '{text}')]")
        ][-5:]
        pytest.fail(f"no {text!r} to click on {driver.current_url} (see {shot}): {found}")
    element.click()


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def run_logs(run_id: str) -> list[str]:
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)])), limit=200
        )
    return [log.message for log in logs]


def current_state_id(run_id: str) -> object:
    import uuid

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id)).state_id


def log_in(driver, ui: str, auth: str) -> Path:
    """The UI refuses a visitor without credentials (it asks for them); then log in as an
    operator does, by the credentials the UI keeps in the browser. Returns a screenshot
    of the refusal."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ui}/dashboard")
    WebDriverWait(driver, 30).until(
        lambda d: d.find_elements("css selector", "input[placeholder='admin:pass']")
    )
    refused = screenshot(driver, "login-required")
    driver.execute_script("localStorage.setItem('prefect-password', btoa(arguments[0]))", auth)
    return refused


def test_flow_run_pages_show_derivatives_and_transcript(
    production, prefect_server: str, prefect_auth: str, browser, tmp_path: Path
):
    production["use"](WORKER_TYPE)
    photo = register_media(make_jpeg(tmp_path / "p.jpg", 1600, 1200), category="AUTRE")
    voice = make_voice_note(
        tmp_path / "n.m4a", 8, gap_every=4, rate=16000, codec_args=("-c:a", "aac")
    )
    note = register_media(voice, category="AUTRE")
    photo_run, *_ = submit_media(str(photo.id))
    note_run, *_ = submit_media(str(note.id))  # high tier: the transcription
    production["start_worker"]()
    runs = wait_for_runs([photo_run, note_run], timeout=120)
    assert {r.state.name for r in runs.values()} == {"Completed"}
    ui = prefect_server.removesuffix("/api")
    refused = log_in(browser, ui, prefect_auth)

    browser.get(f"{ui}/runs/flow-run/{photo_run}")
    wait_for_text(browser, f"media · {str(photo.id)[:8]} · high")
    browser.find_element("css selector", "li.p-tab#artifacts").click()
    wait_for_text(browser, f"media-{photo.id}")
    shots = [refused, screenshot(browser, "photo-run-artifacts")]
    click_text(browser, f"media-{photo.id}")
    for text in ("generate-thumbnails", "THUMBNAIL", "150x150", "MEDIUM", "800x600", "LARGE"):
        wait_for_text(browser, text)
    shots.append(screenshot(browser, "photo-derivative-table"))

    browser.get(f"{ui}/runs/flow-run/{note_run}")
    wait_for_text(browser, f"media · {str(note.id)[:8]} · high")
    browser.find_element("css selector", "li.p-tab#artifacts").click()
    wait_for_text(browser, f"transcript-{note.id}")
    shots.append(screenshot(browser, "voice-note-run-artifacts"))
    click_text(browser, f"transcript-{note.id}")
    wait_for_text(browser, "Transcript v1")
    wait_for_text(browser, "Segment 1 of the voice note.")
    shots.append(screenshot(browser, "voice-note-transcript"))

    for shot in shots:  # real pictures of the pages, not empty files
        assert shot.stat().st_size > 10_000


def test_operators_see_a_failure_retry_it_and_read_the_queues(
    production, prefect_server: str, prefect_auth: str, browser, tmp_path: Path
):
    from deployments.operations.queue_board import publish_queue_board
    from tests.support.media import make_video

    production["use"](WORKER_TYPE)
    video = register_media(make_video(tmp_path / "v.mp4", 3), category="AUTRE")
    production["start_worker"](MEDIA_PIPELINE_FFMPEG_TIMEOUT_SECONDS="0.001")  # broken set-up
    (run_id,) = submit_media(str(video.id))
    (run,) = wait_for_runs([run_id], timeout=120).values()
    assert run.state.name == "Failed"
    # Its logs reach the server as the run's process ends, a moment after its state.
    wait_until(
        lambda: any("ffmpeg took longer than 0 s" in m for m in run_logs(run_id)),
        60,
        "the run's logs",
    )
    production["stop_workers"]()
    production["start_worker"]()  # the cause is fixed
    publish_queue_board()
    ui = prefect_server.removesuffix("/api")
    log_in(browser, ui, prefect_auth)

    # The failed run's page says why; its Retry button runs it again, under the same id.
    browser.get(f"{ui}/runs/flow-run/{run_id}")
    wait_for_text(browser, "ffmpeg took longer than 0 s")
    shots = [screenshot(browser, "failed-run")]
    click_text(browser, "Retry")
    shots.append(screenshot(browser, "retry-dialog"))
    buttons = [
        b
        for b in browser.find_elements("xpath", "//button[contains(., 'Retry')]")
        if b.is_displayed()
    ]
    buttons[-1].click()  # the dialog's confirmation
    # The click's request lands a moment later: until then the run is still Failed (final).
    wait_until(lambda: current_state_id(run_id) != run.state_id, 60, "the retry to land")
    (run,) = wait_for_runs([run_id], timeout=120).values()
    assert run.state.name == "Completed" and run.run_count == 2
    from db.models import MediaStatus
    from db.repository import load_media
    from db.session import session_scope

    with session_scope() as session:
        assert load_media(session, video.id).status is MediaStatus.READY

    # The work pool lists its queues with their priorities.
    browser.get(f"{ui}/work-pools/work-pool/media?tab=Work+Queues")
    for text in ("high", "normal", "low"):
        wait_for_text(browser, text)
    shots.append(screenshot(browser, "work-pool-queues"))

    # The queue board, as the workers publish it: its newest version.
    browser.get(f"{ui}/artifacts/key/queue-board")
    wait_for_text(browser, "Created queue-board")
    versions = browser.find_elements("xpath", "//a[contains(@href, '/artifacts/artifact/')]")
    versions[0].click()
    for text in ("Queue board", "Queues, last hour", "waiting", "Newest failures"):
        wait_for_text(browser, text)
    shots.append(screenshot(browser, "queue-board"))
    for shot in shots:
        assert shot.stat().st_size > 10_000
