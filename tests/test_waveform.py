"""Waveform peaks identical to BBC audiowaveform's, on real decoded audio."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from media_pipeline.errors import InvalidMedia
from tasks.waveform import compute_peaks, make_waveform
from tests.support.media import make_tone, write_wav

# A copy of shared/reference/waveform: BBC audiowaveform 1.10.3's outputs for a stereo WAV.
REFERENCE = Path(__file__).resolve().parent / "data" / "audiowaveform"
MEDIA_ID = uuid.UUID("0f0f0f0f-1234-4678-9234-567812345678")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("z256_b8", {}),
        ("z256_b16", {"bits": 16}),
        ("z256_b8_split", {"split_channels": True}),
        ("z100_b8", {"samples_per_pixel": 100}),
        ("pps20_b16", {"bits": 16, "pixels_per_second": 20}),
    ],
)
def test_peaks_match_audiowaveform_byte_for_byte(name: str, options: dict):
    expected = (REFERENCE / f"{name}.json").read_text().strip()

    produced = compute_peaks(REFERENCE / "stereo_5s.wav", **options).to_json()

    assert json.loads(produced) == json.loads(expected)
    assert produced == expected


def test_mixing_truncates_toward_zero_and_keeps_the_last_partial_block(tmp_path: Path):
    left = np.array([1, -1, 3, -3, 32767, -32768, 255, -255, 0, 100], dtype=np.int32)
    right = np.array([0, 0, 0, 0, 32767, -32768, 0, 0, 0, 101], dtype=np.int32)
    wav = write_wav(tmp_path / "edge.wav", np.stack([left, right], axis=1))

    peaks = compute_peaks(wav, samples_per_pixel=4, bits=16)

    # mixed: 0, 0, 1, -1 | 32767, -32768, 127, -127 | 0, 100
    assert peaks.length == 3
    assert peaks.data.reshape(-1).tolist() == [-1, 1, -32768, 32767, 0, 100]
    eight = compute_peaks(wav, samples_per_pixel=4, bits=8).data.reshape(-1).tolist()
    assert eight == [0, 0, -128, 127, 0, 0]


def test_square_wave_has_known_peaks(tmp_path: Path):
    square = np.where(np.arange(44100) % 100 < 50, 12800, -12800)
    peaks = compute_peaks(write_wav(tmp_path / "sq.wav", square))
    assert peaks.length == -(-44100 // 256)
    assert set(peaks.data[:, 0, 0].tolist()) == {-50} and set(peaks.data[:, 0, 1].tolist()) == {50}


def test_24_bit_wav_is_read_as_its_top_16_bits(tmp_path: Path):
    values = np.array([0x7FFFFF, -0x800000, 0x0100FF, -0x0100FF, 256, -1] * 50, dtype=np.int32)
    peaks = compute_peaks(write_wav(tmp_path / "deep.wav", values, width=3), 300, bits=16)
    assert peaks.data.reshape(-1).tolist() == [(-0x800000) >> 8, 0x7FFFFF >> 8]


def test_silence_short_and_empty_audio(tmp_path: Path):
    silent = compute_peaks(write_wav(tmp_path / "silence.wav", np.zeros(10_000)))
    assert silent.length == 40 and not silent.data.any()
    short = compute_peaks(write_wav(tmp_path / "short.wav", np.array([5, -700, 300])), bits=16)
    assert short.length == 1 and short.data.reshape(-1).tolist() == [-700, 300]
    empty = compute_peaks(write_wav(tmp_path / "empty.wav", np.zeros((0, 1))))
    assert json.loads(empty.to_json())["length"] == 0 and json.loads(empty.to_json())["data"] == []


@pytest.mark.parametrize(
    ("name", "codec_args"),
    [
        ("note.m4a", ("-c:a", "aac", "-b:a", "64k")),
        ("note.ogg", ("-c:a", "libopus", "-b:a", "24k")),
        ("note.webm", ("-c:a", "libopus", "-b:a", "24k")),
        ("note.mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
        ("note.flac", ()),
    ],
)
def test_every_voice_note_format_gives_a_waveform(tmp_path: Path, name: str, codec_args):
    source = make_tone(tmp_path / name, 3.0, rate=48000, codec_args=codec_args)

    derivative = make_waveform(source, tmp_path / "out", MEDIA_ID)

    document = json.loads(derivative.path.read_text())
    assert document["version"] == 2 and document["channels"] == 1
    assert document["samples_per_pixel"] == 256 and document["bits"] == 8
    assert abs(document["length"] - 3.0 * document["sample_rate"] / 256) < 30
    assert len(document["data"]) == 2 * document["length"]
    loud = np.array(document["data"][40:-40]).reshape(-1, 2)
    # ffmpeg's sine source has an amplitude of 1/8 full scale: 4096, i.e. 16 in 8 bits.
    assert -17 <= loud[:, 0].min() <= -14 and 14 <= loud[:, 1].max() <= 17
    assert derivative.path.name == f"{MEDIA_ID}-waveform.json"
    assert abs(derivative.duration - 3.0) < 0.1
    svg = derivative.extra["svg"]
    assert svg.name == f"{MEDIA_ID}-waveform.svg"
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg") and root.find("{http://www.w3.org/2000/svg}path") is not None


def test_a_file_without_audio_is_refused_without_outputs(tmp_path: Path):
    text = tmp_path / "note.m4a"
    text.write_text("not audio at all")
    out = tmp_path / "out"
    with pytest.raises(InvalidMedia):
        make_waveform(text, out, MEDIA_ID)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(InvalidMedia, match="empty"):
        make_waveform(empty, out, MEDIA_ID)
    assert not out.exists() or not list(out.iterdir())
