"""What ``complete`` accepts: declared kinds, sniffed containers, real files and heads."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from media_pipeline.enums import MediaType
from media_pipeline.errors import InvalidMedia
from media_pipeline.upload_check import HEAD_BYTES, declared_kind, inspect_upload, sniff
from tests.support.media import make_jpeg, make_tone, make_video

LIMIT = 89_478_485


def test_declarations():
    assert declared_kind("IMAGE", "image/jpeg") == (MediaType.IMAGE, "jpg")
    assert declared_kind("AUDIO", "audio/mp4; codecs=mp4a") == (MediaType.AUDIO, "m4a")
    assert declared_kind("AUDIO", "video/mp4") == (MediaType.AUDIO, "mp4")  # a voice note
    with pytest.raises(InvalidMedia, match="not accepted"):
        declared_kind("IMAGE", "image/svg+xml")
    with pytest.raises(InvalidMedia, match="does not match"):
        declared_kind("IMAGE", "audio/mpeg")
    with pytest.raises(InvalidMedia, match="not IMAGE, AUDIO or VIDEO"):
        declared_kind("DOCUMENT", "image/jpeg")


def test_real_files_are_what_they_say(tmp_path: Path):
    photo = make_jpeg(tmp_path / "p.jpg", 640, 480)
    assert inspect_upload(photo, MediaType.IMAGE, "image/jpeg", LIMIT, True).type is MediaType.IMAGE
    note = make_tone(tmp_path / "n.m4a", 2.0, codec_args=("-c:a", "aac"))
    # Declared VIDEO, but its only stream is audio: it is a voice note.
    found = inspect_upload(note, MediaType.VIDEO, "video/mp4", LIMIT, True)
    assert (found.type, found.mime_type) == (MediaType.AUDIO, "audio/mp4")
    clip = make_video(tmp_path / "v.mp4", 2)
    assert inspect_upload(clip, MediaType.VIDEO, "video/mp4", LIMIT, True).type is MediaType.VIDEO
    # Only the head of a long upload (object storage): the declared type stands.
    head = tmp_path / "head"
    head.write_bytes(clip.read_bytes()[:4096])
    assert inspect_upload(head, MediaType.VIDEO, "video/mp4", LIMIT, False).type is MediaType.VIDEO
    with pytest.raises(InvalidMedia):
        inspect_upload(head, MediaType.VIDEO, "video/mp4", LIMIT, True)  # whole: it is broken


def test_refusals(tmp_path: Path):
    photo = make_jpeg(tmp_path / "p.jpg", 640, 480)
    with pytest.raises(InvalidMedia, match="bytes are a JPEG image"):
        inspect_upload(photo, MediaType.AUDIO, "audio/mpeg", LIMIT, True)
    with pytest.raises(InvalidMedia, match="bytes are a JPEG image"):
        inspect_upload(photo, MediaType.IMAGE, "image/png", LIMIT, True)
    text = tmp_path / "t.jpg"
    text.write_text("<html>not a photo</html>")
    with pytest.raises(InvalidMedia, match="not a recognised"):
        inspect_upload(text, MediaType.IMAGE, "image/jpeg", LIMIT, True)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    assert bomb.stat().st_size < HEAD_BYTES
    with pytest.raises(InvalidMedia, match="decompression bomb"):
        inspect_upload(bomb, MediaType.IMAGE, "image/png", LIMIT, True)
    assert sniff(b"OggS\x00\x02").types == {MediaType.AUDIO, MediaType.VIDEO}
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ").types == {MediaType.AUDIO}


def test_audio_and_video_must_be_the_container_and_kind_they_declare(tmp_path: Path):
    wav = make_tone(tmp_path / "n.wav", 1.0)
    mp3 = make_tone(tmp_path / "n.mp3", 1.0)
    clip = make_video(tmp_path / "v.mp4", 2)
    assert inspect_upload(wav, MediaType.AUDIO, "audio/wav", LIMIT, True).extension == "wav"
    assert inspect_upload(mp3, MediaType.AUDIO, "audio/mpeg", LIMIT, True).type is MediaType.AUDIO
    # A WAV declared audio/mpeg would have been kept as original.mp3.
    with pytest.raises(InvalidMedia, match="declared audio/mpeg, but the bytes are a WAV"):
        inspect_upload(wav, MediaType.AUDIO, "audio/mpeg", LIMIT, True)
    with pytest.raises(InvalidMedia, match="bytes are a MPEG/AAC audio"):
        inspect_upload(mp3, MediaType.AUDIO, "audio/mp4", LIMIT, True)
    # A video declared as a voice note would have become a VIDEO stored as original.m4a.
    with pytest.raises(InvalidMedia, match="holds a video stream: declare it VIDEO"):
        inspect_upload(clip, MediaType.AUDIO, "audio/mp4", LIMIT, True)
