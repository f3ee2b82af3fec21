"""Media factories: real files generated on the spot (photos with EXIF orientation...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from media_pipeline.imaging import EXIF_TRANSPOSE

_INVERSE = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}
MARKER = (220, 20, 30)  # red block in the upright picture's top-left corner


def photo_pixels(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like upright picture: smooth gradients, texture, a red top-left marker."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 120 + 80 * np.sin(x / max(width, 1) * 6.0) + 20 * np.cos(y / 37.0)
    g = 110 + 70 * np.cos(y / max(height, 1) * 5.0) + 15 * np.sin((x + y) / 53.0)
    b = 100 + 60 * np.sin((x - y) / max(width + height, 1) * 9.0)
    pixels = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    block = max(4, min(width, height) // 8)
    image.paste(MARKER, (0, 0, block, block))
    return image


def stored_for_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    display = EXIF_TRANSPOSE.get(orientation)  # how a viewer shows it; the file stores the inverse
    if display is None:
        return upright
    return upright.transpose(_INVERSE.get(display, display))


def make_jpeg(
    path: Path,
    width: int,
    height: int,
    orientation: int | None = None,
    seed: int = 0,
    **save: Any,
) -> Path:
    """A JPEG that displays as ``width`` x ``height`` once its EXIF orientation is applied."""
    image = stored_for_orientation(photo_pixels(width, height, seed), orientation or 1)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    save.setdefault("quality", 90)
    image.save(path, "JPEG", exif=exif, **save)
    return path


def is_marker(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 170 and g < 90 and b < 90


def ffmpeg(*args: str) -> None:
    """Run the project's ffmpeg (imageio-ffmpeg's binary or the configured one)."""
    import subprocess

    from media_pipeline.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def make_tone(
    path: Path,
    seconds: float,
    frequency: int = 440,
    rate: int = 44100,
    channels: int = 1,
    codec_args: tuple[str, ...] = (),
) -> Path:
    """A sine tone encoded by ffmpeg into ``path`` (format from the extension)."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={frequency}:sample_rate={rate}:duration={seconds}",
        "-ac",
        str(channels),
        *codec_args,
        str(path),
    )
    return path


def make_voice_note(
    path: Path,
    seconds: float,
    gap_every: float = 50.0,
    rate: int = 16000,
    codec_args: tuple[str, ...] = (),
) -> Path:
    """Tone bursts with a one-second silence every ``gap_every`` seconds (speech-like pauses)."""
    expression = f"if(lt(mod(t\\,{gap_every})\\,{gap_every - 1})\\,0.5*sin(2*PI*300*t)\\,0)"
    ffmpeg(
        "-f", "lavfi", "-i", f"aevalsrc={expression}:s={rate}:d={seconds}", *codec_args, str(path)
    )
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = 44100, width: int = 2) -> Path:
    """Integer PCM WAV from (frames, channels) samples; width 2 (16-bit) or 3 (24-bit)."""
    import wave

    frames = np.asarray(samples, dtype=np.int32)
    if frames.ndim == 1:
        frames = frames[:, None]
    if width == 2:
        data = frames.astype("<i2").tobytes()
    else:
        raw = frames.astype("<i4").reshape(-1, 1).view(np.uint8).reshape(-1, 4)
        data = raw[:, :3].tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data)
    return path


SECOND_COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 255, 255), (255, 255, 0)]


def make_video(
    path: Path,
    seconds: float,
    size: str = "320x240",
    audio: bool = True,
    video_args: tuple[str, ...] = (
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ),
    audio_args: tuple[str, ...] = ("-c:a", "aac"),
    rotation: int | None = None,
) -> Path:
    """A video whose colour changes every second (SECOND_COLOURS, cycling) with a magenta
    block in its top-left corner, a tone as sound, optionally rotation metadata."""
    colours = "".join(
        f"color=c=0x{r:02x}{g:02x}{b:02x}:s={size}:r=25:d=1[c{i}];"
        for i, (r, g, b) in enumerate(SECOND_COLOURS)
    )
    source = (
        f"{colours}{''.join(f'[c{i}]' for i in range(5))}concat=n=5,"
        f"loop=loop=-1:size=125,trim=duration={seconds},"
        "drawbox=x=0:y=0:w=iw/5:h=ih/5:color=magenta:t=fill"
    )
    inputs = ["-f", "lavfi", "-i", source]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}"]
    codecs = [*video_args, *(audio_args if audio else ())]
    target = path.with_name(f".unrotated-{path.name}") if rotation else path
    ffmpeg(*inputs, *codecs, "-shortest", str(target))
    if rotation:
        ffmpeg("-display_rotation", str(rotation), "-i", str(target), "-c", "copy", str(path))
        target.unlink()
    return path


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 box types at the top level, in file order (moov before mdat: faststart)."""
    boxes, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        boxes.append(kind)
        if size == 0:
            break
        offset += size
    return boxes
