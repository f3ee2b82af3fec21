"""Video preview and thumbnail on generated videos, with the real ffmpeg."""

from __future__ import annotations

import uuid
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from db.models import JobState, MediaStatus
from db.repository import load_media
from db.session import session_scope
from deployments.operations.registration import register_media
from flows.media import process_media
from media_pipeline.errors import InvalidMedia
from tasks.video_preview import make_preview
from tasks.video_thumbnail import make_video_thumbnail
from tests.support.media import SECOND_COLOURS, make_tone, make_video, top_level_boxes

MEDIA_ID = uuid.UUID("abcdefab-1234-4678-9234-567812345678")


def colour_at(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    """Mean colour of a small patch at relative position (x, y)."""
    w, h = image.size
    box = (int(w * x) - 4, int(h * y) - 4, int(w * x) + 4, int(h * y) + 4)
    return tuple(int(v) for v in np.asarray(image.crop(box)).reshape(-1, 3).mean(0))


def close(colour, expected, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def playable(path: Path) -> dict:
    """What ffprobe would say, read back through FFmpeg's libraries."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        audio = container.streams.audio
        return {
            "video": container.streams.video[0].codec_context.name,
            "audio": audio[0].codec_context.name if audio else None,
            "frames": frames,
            "duration": container.duration / av.time_base,
        }


@pytest.mark.parametrize(
    ("seconds", "size", "expected"),
    [(1, "1280x720", 1.0), (5, "1280x720", 5.0), (60, "854x480", 10.0)],
)
def test_preview_is_at_most_10_seconds_and_web_playable(tmp_path: Path, seconds, size, expected):
    source = make_video(tmp_path / "clip.mp4", seconds, size=size)

    preview = make_preview(source, tmp_path / "out", MEDIA_ID)

    info = playable(preview.path)
    assert info["video"] == "h264" and info["audio"] == "aac"
    assert abs(info["duration"] - expected) < 0.15 and abs(preview.duration - expected) < 0.15
    assert info["frames"] >= int(expected * 25) - 2
    assert min(preview.width, preview.height) == min(720, int(size.split("x")[1]))
    boxes = top_level_boxes(preview.path)
    assert boxes.index("moov") < boxes.index("mdat")  # +faststart
    assert preview.extra["mode"] == ("copy" if seconds <= 10 else "transcode")
    assert preview.bytes == preview.path.stat().st_size


def test_small_short_web_playable_clip_is_copied(tmp_path: Path):
    source = make_video(tmp_path / "small.mp4", 4, size="640x360")
    preview = make_preview(source, tmp_path / "out", MEDIA_ID)
    assert preview.extra["mode"] == "copy"
    assert (preview.width, preview.height) == (640, 360)
    boxes = top_level_boxes(preview.path)
    assert boxes.index("moov") < boxes.index("mdat")


def test_large_video_is_scaled_to_720_short_side_never_up(tmp_path: Path):
    big = make_preview(
        make_video(tmp_path / "big.mp4", 2, size="1920x1080"), tmp_path / "a", MEDIA_ID
    )
    assert (big.width, big.height) == (1280, 720)
    vp9 = ("-c:v", "libvpx-vp9")
    webm = make_video(
        tmp_path / "tiny.webm", 3, size="320x240", video_args=vp9, audio_args=("-c:a", "libopus")
    )
    tiny = make_preview(webm, tmp_path / "b", MEDIA_ID)
    assert (tiny.width, tiny.height) == (320, 240) and tiny.extra["mode"] == "transcode"
    assert playable(tiny.path)["video"] == "h264"
    thumb = make_video_thumbnail(webm, tmp_path / "c", MEDIA_ID)
    assert close(colour_at(Image.open(thumb.path), 0.6, 0.6), SECOND_COLOURS[2])


def test_thumbnail_is_the_frame_at_2_seconds(tmp_path: Path):
    source = make_video(tmp_path / "clip.mp4", 5, size="640x480")

    thumb = make_video_thumbnail(source, tmp_path / "out", MEDIA_ID)

    image = Image.open(thumb.path)
    assert image.format == "JPEG" and image.size == (640, 480) == (thumb.width, thumb.height)
    assert close(colour_at(image, 0.6, 0.6), SECOND_COLOURS[2])  # red: second 2
    assert close(colour_at(image, 0.05, 0.05), (255, 0, 255))  # the magenta corner
    assert thumb.extra["at_seconds"] == 2.0


def test_thumbnail_of_a_short_video_is_its_middle_frame(tmp_path: Path):
    thumb = make_video_thumbnail(make_video(tmp_path / "s.mp4", 1), tmp_path / "out", MEDIA_ID)
    assert thumb.extra["at_seconds"] == 0.5
    assert close(colour_at(Image.open(thumb.path), 0.6, 0.6), SECOND_COLOURS[0])


def test_thumbnail_long_side_at_most_1280(tmp_path: Path):
    thumb = make_video_thumbnail(
        make_video(tmp_path / "w.mp4", 3, size="1920x1080"), tmp_path / "out", MEDIA_ID
    )
    assert (thumb.width, thumb.height) == (1280, 720)


def test_rotated_phone_video_comes_out_upright(tmp_path: Path):
    source = make_video(tmp_path / "phone.mp4", 3, size="640x360", rotation=90)

    thumb = make_video_thumbnail(source, tmp_path / "t", MEDIA_ID)
    preview = make_preview(source, tmp_path / "p", MEDIA_ID)

    image = Image.open(thumb.path)
    assert image.size == (360, 640)
    # display_rotation 90 turns the picture counter-clockwise: top-left goes bottom-left.
    assert close(colour_at(image, 0.05, 0.95), (255, 0, 255))
    assert not close(colour_at(image, 0.05, 0.05), (255, 0, 255))
    assert (preview.width, preview.height) == (360, 640) and preview.extra["mode"] == "transcode"
    with av.open(str(preview.path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height, frame.rotation) == (360, 640, 0)


def test_video_without_sound_and_hevc(tmp_path: Path):
    silent = make_preview(
        make_video(tmp_path / "mute.mp4", 3, audio=False), tmp_path / "a", MEDIA_ID
    )
    assert silent.extra["audio"] is False and playable(silent.path)["audio"] is None
    hevc = make_video(
        tmp_path / "hevc.mp4", 3, video_args=("-c:v", "libx265", "-x265-params", "log-level=error")
    )
    preview = make_preview(hevc, tmp_path / "b", MEDIA_ID)
    assert playable(preview.path)["video"] == "h264" and preview.extra["mode"] == "transcode"
    thumb = make_video_thumbnail(hevc, tmp_path / "c", MEDIA_ID)
    assert close(colour_at(Image.open(thumb.path), 0.6, 0.6), SECOND_COLOURS[2])


@pytest.mark.parametrize("kind", ["zero-byte", "corrupt", "audio-only"])
def test_unusable_input_fails_without_outputs(tmp_path: Path, kind: str):
    source = tmp_path / "in.mp4"
    if kind == "zero-byte":
        source.write_bytes(b"")
    elif kind == "corrupt":
        good = make_video(tmp_path / "good.mp4", 2).read_bytes()
        source.write_bytes(good[:200] + bytes(len(good) - 200))
    else:
        make_tone(source, 2.0, codec_args=("-c:a", "aac"))
    out = tmp_path / "out"
    for make in (make_preview, make_video_thumbnail):
        with pytest.raises(InvalidMedia):
            make(source, out, MEDIA_ID)
    assert not out.exists() or not list(out.iterdir())


def test_playlist_cannot_make_ffmpeg_fetch_a_url(tmp_path: Path, fake_providers):
    playlist = tmp_path / "evil.mp4"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"
        f"{fake_providers.url}/segment.ts\n#EXT-X-ENDLIST\n"
    )
    for make in (make_preview, make_video_thumbnail):
        with pytest.raises(InvalidMedia):
            make(playlist, tmp_path / "out", MEDIA_ID)
    assert fake_providers.requests == []


@pytest.mark.usefixtures("prefect_server")
def test_video_flow_records_both_derivatives(sqlite_db, tmp_path: Path):
    media = register_media(make_video(tmp_path / "v.mp4", 3), category="AUTRE")
    assert media.type.value == "VIDEO"

    state = process_media(str(media.id), return_state=True)

    assert state.is_completed(), state.message
    with session_scope() as session:
        stored = load_media(session, media.id)
        assert stored.status is MediaStatus.READY
        assert {j.job: j.state for j in stored.jobs} == {
            "generate-video-preview": JobState.SUCCEEDED,
            "generate-video-thumbnail": JobState.SUCCEEDED,
        }
        rows = {d.type.value: d for d in stored.derivatives}
        assert set(rows) == {"PREVIEW", "THUMBNAIL"}
        assert rows["PREVIEW"].mime_type == "video/mp4" and abs(rows["PREVIEW"].duration - 3) < 0.1
        assert (rows["THUMBNAIL"].width, rows["THUMBNAIL"].height) == (320, 240)


def test_ffmpeg_is_the_bundled_one_unless_configured_and_recent(monkeypatch, tmp_path: Path):
    import imageio_ffmpeg

    from media_pipeline.errors import PermanentError
    from media_pipeline.ffmpeg import ffmpeg_exe, run_ffmpeg
    from media_pipeline.settings import get_settings

    assert ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()  # even with one on PATH
    old = tmp_path / "ffmpeg"
    old.write_text("#!/bin/sh\necho 'ffmpeg version 5.1.6-0+deb12u1 Copyright (c) 2000-2024'\n")
    old.chmod(0o755)
    monkeypatch.setenv("MEDIA_PIPELINE_FFMPEG_PATH", str(old))
    get_settings.cache_clear()
    with pytest.raises(PermanentError, match=r"is ffmpeg 5\.1; the pipeline needs 7\.0 or newer"):
        run_ffmpeg(["-version"], what="probe")
