"""ai-enhancement through the real google-genai SDK against a local Gemini-speaking server."""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path

import pytest
from PIL import Image

from db.models import JobState, Media, MediaStatus
from db.repository import load_media
from db.session import session_scope
from deployments.operations.registration import register_media
from flows.media import process_media
from media_pipeline.errors import PermanentError, TransientError
from media_pipeline.settings import get_settings
from tasks.enhancement import AI_EDITED, enhance_portrait, gemini_client
from tests.support.fake_providers import Fault
from tests.support.media import is_marker, make_jpeg

PROMPT_START = "Enhance this portrait"


def blocked_prompt() -> dict:
    return {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}


def withheld_image(reason: str) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": reason}]}


def text_only() -> dict:
    parts = [{"text": "I cannot edit photos of real people."}]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}


def enhance(fake, tmp_path: Path, **options):
    photo = make_jpeg(tmp_path / "portrait.jpg", 1200, 1600, orientation=6)
    client = gemini_client(get_settings().gemini)
    return enhance_portrait(
        photo,
        tmp_path / "out" / "enhanced.jpg",
        client,
        model="gemini-2.5-flash-image",
        prompt="Enhance this portrait",
        **options,
    )


def test_request_carries_the_upright_downscaled_photo_and_prompt(fake_providers, tmp_path):
    result = enhance(fake_providers, tmp_path, max_side=1024)

    (call,) = fake_providers.calls("gemini")
    assert "/models/gemini-2.5-flash-image:generateContent" in call.path
    assert call.headers["x-goog-api-key"] == "gm-test-secret-key-9876543210"
    parts = call.json["contents"][0]["parts"]
    inline = next(p["inlineData"] for p in parts if "inlineData" in p)
    assert inline.get("mimeType", inline.get("mime_type")) == "image/jpeg"
    sent = Image.open(io.BytesIO(base64.urlsafe_b64decode(inline["data"] + "==")))
    # stored 1600x1200 with orientation 6: sent upright, longest side 1024
    assert sent.size == (768, 1024) and is_marker(sent.convert("RGB").getpixel((4, 4)))
    assert any(p.get("text", "").startswith(PROMPT_START) for p in parts)
    with Image.open(result.path) as written:
        assert written.format == "JPEG" and written.size == (576, 768)  # the model's PNG, 3/4
        xmp = written.info["xmp"].decode()
    assert AI_EDITED in xmp and "gemini-2.5-flash-image" in xmp
    assert result.usage["total_token_count"] == 2590


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (blocked_prompt(), "blocked the request"),
        (withheld_image("IMAGE_SAFETY"), "withheld the image \\(IMAGE_SAFETY\\)"),
        (withheld_image("NO_IMAGE"), "withheld the image \\(NO_IMAGE\\)"),
        (text_only(), "without an image.*cannot edit photos"),
    ],
)
def test_answers_without_an_image_are_permanent(fake_providers, tmp_path, answer, message):
    fake_providers.queue("gemini", Fault(body=answer))
    with pytest.raises(PermanentError, match=message):
        enhance(fake_providers, tmp_path)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
        (400, PermanentError),
        (403, PermanentError),
    ],
)
def test_http_errors_are_classified(fake_providers, tmp_path, status, kind):
    fake_providers.queue("gemini", Fault(status, {"Retry-After": "1"}))
    with pytest.raises(kind, match=str(status)):
        enhance(fake_providers, tmp_path)
    assert len(fake_providers.calls("gemini")) == 1  # the SDK itself never retried


def test_a_call_that_hangs_times_out(fake_providers, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIA_PIPELINE_GEMINI_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    fake_providers.queue("gemini", Fault(delay=3))
    with pytest.raises(TransientError, match="timeout"):
        enhance(fake_providers, tmp_path)


def enhanced_of(media_id: uuid.UUID) -> list[Media]:
    with session_scope() as session:
        return list(session.query(Media).filter_by(source_media_id=media_id))


@pytest.mark.usefixtures("prefect_server")
def test_missing_person_photo_gets_an_enhanced_media_with_thumbnails(
    app_db, fake_providers, tmp_path
):
    media = register_media(make_jpeg(tmp_path / "p.jpg", 1600, 1200), category="DISP")

    state = process_media(str(media.id), return_state=True)

    assert state.is_completed(), state.message
    (enhanced,) = enhanced_of(media.id)
    assert enhanced.is_enhanced and enhanced.alert_id == media.alert_id
    assert enhanced.storage_key.endswith(f"{media.id}/{media.id}-enhanced.jpg")
    with session_scope() as session:
        source = load_media(session, media.id)
        assert {j.job: j.state for j in source.jobs} == {
            "generate-thumbnails": JobState.SUCCEEDED,
            "ai-enhancement": JobState.SUCCEEDED,
        }
        assert source.status is MediaStatus.READY
        copy = load_media(session, enhanced.id)
        assert [j.job for j in copy.jobs] == ["generate-thumbnails"]  # never enhanced again
        assert copy.status is MediaStatus.READY
        names = sorted(Path(d.storage_key).name for d in copy.derivatives)
        assert names == sorted(f"{enhanced.id}-{k}.jpg" for k in ("large", "medium", "thumbnail"))
        assert all(f"/media/{media.id}/" in d.storage_key for d in copy.derivatives)

    again = process_media(str(media.id), return_state=True)
    assert again.is_completed()
    assert [m.id for m in enhanced_of(media.id)] == [enhanced.id]  # replaced, not added
    assert len(fake_providers.calls("gemini")) == 2


@pytest.mark.usefixtures("prefect_server")
def test_other_categories_never_call_gemini(sqlite_db, fake_providers, tmp_path):
    media = register_media(make_jpeg(tmp_path / "p.jpg", 800, 600), category="VOL")
    assert process_media(str(media.id), return_state=True).is_completed()
    with session_scope() as session:
        assert [j.job for j in load_media(session, media.id).jobs] == ["generate-thumbnails"]
    assert fake_providers.calls("gemini") == []


@pytest.mark.usefixtures("prefect_server")
def test_gemini_failures_are_retried_or_not(sqlite_db, fake_providers, tmp_path):
    retried = register_media(make_jpeg(tmp_path / "a.jpg", 800, 600), category="DECD")
    fake_providers.queue("gemini", Fault(500), Fault(429))
    assert process_media(str(retried.id), jobs=["ai-enhancement"], return_state=True).is_completed()
    with session_scope() as session:
        (job,) = load_media(session, retried.id).jobs
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 3)

    blocked = register_media(make_jpeg(tmp_path / "b.jpg", 800, 600), category="DECD")
    fake_providers.queue("gemini", Fault(body=withheld_image("IMAGE_SAFETY")))
    state = process_media(str(blocked.id), return_state=True)
    assert state.is_failed() and "IMAGE_SAFETY" in state.message
    with session_scope() as session:
        stored = load_media(session, blocked.id)
        jobs = {j.job: j for j in stored.jobs}
        assert (jobs["ai-enhancement"].state, jobs["ai-enhancement"].attempts) == (
            JobState.FAILED,
            1,
        )
        assert stored.status is MediaStatus.PARTIAL
    assert enhanced_of(blocked.id) == []


@pytest.mark.usefixtures("prefect_server")
def test_no_gemini_key_skips_enhancement(sqlite_db, tmp_path):
    media = register_media(make_jpeg(tmp_path / "p.jpg", 800, 600), category="DISP")
    assert process_media(str(media.id), return_state=True).is_completed()
    with session_scope() as session:
        jobs = {j.job: j for j in load_media(session, media.id).jobs}
    assert jobs["ai-enhancement"].state is JobState.SKIPPED
    assert "GEMINI_API_KEY" in jobs["ai-enhancement"].error
