"""Reading untrusted photos: limits, fast decode, orientation, colour.

Shared by the thumbnail and enhancement jobs. ``open_photo`` (Pillow, header only)
refuses what must never be decoded (bombs, non-images) before any pixel is read.
``load_upright`` gives the photo fitted inside a box, upright and in sRGB: a JPEG or PNG
is decoded by libvips and reduced by Lanczos-3 as it streams (a JPEG first scaled down in
the DCT domain); other formats are decoded by Pillow and resized by ``resample``
(libvips' vectorised Lanczos-3, three times as fast as Pillow's for the same quality).
Only the small result is turned upright and colour-converted.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyvips
from PIL import (
    Image,
    ImageCms,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
)
from pillow_heif import register_heif_opener

from media_pipeline.errors import InvalidMedia

# EXIF orientations 5-8 store the picture rotated a quarter turn.
QUARTER_TURN_ORIENTATIONS = {5, 6, 7, 8}
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION = 0x0112


@cache
def prepare_imaging(max_pixels: int = 0) -> None:
    """Process-wide set-up, done the first time a photo is opened (the warm worker does
    it once, in its interpreter, for every flow run it forks), never on import: the app
    that imports our client keeps its own Pillow settings. HEIF/HEIC (iPhone photos)
    through pillow-heif, all of Pillow's plugins loaded, one libvips thread per job (jobs
    already run side by side), no libvips operation cache (it would keep recent pictures
    in memory); Pillow's pixel limit raised to ``max_pixels`` when that is higher (our
    own check in ``open_photo`` refuses bombs with a clear message)."""
    register_heif_opener()
    Image.init()
    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


@contextmanager
def open_photo(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """Open an image for reading, refusing empty files, non-images and bombs.

    The image is not decoded yet: :func:`load_upright` decodes what it needs.
    """
    prepare_imaging(max_pixels)
    if path.stat().st_size == 0:
        raise InvalidMedia(f"{path.name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # the size is checked below, with our limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InvalidMedia(
            f"{path.name}: refused as a possible decompression bomb ({exc})"
        ) from None
    except UnidentifiedImageError:
        raise InvalidMedia(f"{path.name}: cannot identify image file; not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidMedia(f"{path.name}: unreadable image ({exc})") from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidMedia(f"{path.name}: image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise InvalidMedia(
                f"{path.name}: {width}x{height} is {width * height / 1e6:.0f} MP, over the "
                f"limit of {max_pixels / 1e6:.0f} MP (MEDIA_PIPELINE_MAX_PIXELS); "
                "refused as a possible decompression bomb"
            )
        yield image


def orientation(image: Image.Image) -> int:
    try:
        if isinstance(image, PngImagePlugin.PngImageFile) and "exif" not in image.info:
            exif = _png_exif_after_pixels(image)
        else:
            exif = image.getexif()
        value = exif.get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not make a good photo fail
        return 1
    return value if value in range(1, 9) else 1


def _png_exif_after_pixels(image: PngImagePlugin.PngImageFile) -> Image.Exif:
    """The eXIf chunk a PNG may keep after its pixels, reached by skipping their chunks
    (Pillow's ``getexif`` would decode the whole picture to get there)."""
    exif = Image.Exif()
    with open(image.filename, "rb") as file:
        file.seek(8)  # the signature
        chunks = PngImagePlugin.ChunkStream(file)
        while True:
            kind, position, length = chunks.read()
            if kind == b"eXIf":
                exif.load(file.read(length))
            if kind in (b"eXIf", b"IEND"):
                return exif
            file.seek(position + length + 4)  # past the data and its CRC


def decode(image: Image.Image) -> Image.Image:
    """Decode the first frame, refusing corrupt data."""
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = image.format or "image"
        raise InvalidMedia(f"{_name(image)}: corrupt {kind} data ({exc})") from None
    return image


def _name(image: Image.Image) -> str:
    return Path(getattr(image, "filename", "") or "image").name


def _decode_reduced(image: Image.Image, size: tuple[int, int]) -> Image.Image | None:
    """A JPEG (or an iPhone's MPO) or PNG decoded straight to ``size`` by libvips, streamed.

    A JPEG is first scaled down in the DCT domain (1/2, 1/4 or 1/8: the smallest that
    still covers ``size``); a PNG is flattened onto white and brought to 8 bits as it is
    read. Lanczos-3 does the rest, strip by strip: no full-size picture is ever held,
    and nothing is copied between libraries but the result. None for other formats.
    """
    try:
        if isinstance(image, JpegImagePlugin.JpegImageFile):
            source = _jpeg_source(image, size)
        elif isinstance(image, PngImagePlugin.PngImageFile):
            source = _png_source(image)
        else:
            return None
        scale = (source.width / size[0], source.height / size[1])
        if scale != (1, 1):
            source = source.reduce(*scale, kernel="lanczos3")
        pixels = source.write_to_memory()
    except pyvips.Error as exc:
        detail = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "unreadable"
        raise InvalidMedia(f"{_name(image)}: corrupt {image.format} data ({detail})") from None
    return Image.frombytes(_MODE_OF_BANDS[source.bands], size, pixels)


def _jpeg_source(image: JpegImagePlugin.JpegImageFile, size: tuple[int, int]) -> pyvips.Image:
    width, height = image.size
    ratio = min(width // size[0], height // size[1])
    shrink = next(factor for factor in (8, 4, 2, 1) if ratio >= factor)
    return pyvips.Image.jpegload(
        image.filename,
        shrink=shrink,
        autorotate=False,
        fail_on="truncated",
        access="sequential",
    )


def _png_source(image: PngImagePlugin.PngImageFile) -> pyvips.Image:
    source = pyvips.Image.pngload(image.filename, fail_on="truncated", access="sequential")
    white = 65535 if source.format == "ushort" else 255
    if source.hasalpha():  # an alpha band, a palette's or a tRNS chunk's transparency
        source = source.flatten(background=[white] * (source.bands - 1), max_alpha=white)
    if source.format != "uchar":
        source = source.colourspace("srgb" if source.bands >= 3 else "b-w")
    return source


def transpose_upright(image: Image.Image, exif_orientation: int) -> Image.Image:
    method = EXIF_TRANSPOSE.get(exif_orientation)
    return image.transpose(method) if method is not None else image


def to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """RGB (or YCbCr) pixels in sRGB; an embedded ICC profile is applied, not dropped.

    Alpha is flattened onto white; 16-bit greyscale is scaled, not clipped.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.uint32)
        peak = 65535 if image.mode.startswith("I;16") or array.max() > 255 else 255
        image = Image.fromarray((array * 255 // peak).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("RGB", "L") and "transparency" in image.info
    ):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    if icc_profile and image.mode in ("RGB", "CMYK", "L", "YCbCr"):
        converted = _apply_icc(image, icc_profile)
        if converted is not None:
            return converted
    if image.mode not in ("RGB", "YCbCr"):
        image = image.convert("RGB")
    return image


@cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@cache
def _transform(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (OSError, ImageCms.PyCMSError):
        return None  # an unreadable profile: keep the pixels as they are
    description = (ImageCms.getProfileDescription(source) or "").lower()
    if "srgb" in description and mode == "RGB":
        return None
    try:
        return ImageCms.buildTransform(source, _srgb_profile(), mode, "RGB")
    except ImageCms.PyCMSError:
        return None


def _apply_icc(image: Image.Image, icc_profile: bytes) -> Image.Image | None:
    mode = "RGB" if image.mode == "YCbCr" else image.mode
    transform = _transform(icc_profile, mode)
    if transform is None:
        return None
    source = image.convert("RGB") if image.mode == "YCbCr" else image
    return ImageCms.applyTransform(source, transform)


# Pillow modes whose pixels are 8-bit bands libvips can take as they are.
_VIPS_BANDS = {"L": 1, "RGB": 3, "YCbCr": 3, "CMYK": 4}
_MODE_OF_BANDS = {1: "L", 3: "RGB", 4: "CMYK"}


def resample(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` reduced to ``size`` with an antialiasing Lanczos-3 kernel."""
    if image.size == size:
        return image
    width, height = image.size
    bands = _VIPS_BANDS.get(image.mode)
    if bands is None or size[0] > width or size[1] > height:
        return image.resize(size, Image.Resampling.LANCZOS)
    source = pyvips.Image.new_from_memory(image.tobytes(), width, height, bands, "uchar")
    reduced = source.reduce(width / size[0], height / size[1], kernel="lanczos3")
    return Image.frombytes(image.mode, size, reduced.write_to_memory())


@dataclass(frozen=True)
class UprightPhoto:
    picture: Image.Image  # as people see it, RGB in sRGB, fitted inside the box
    full_size: tuple[int, int]  # the whole photo's upright size


def load_upright(path: Path, box: tuple[int, int], max_pixels: int) -> UprightPhoto:
    """The photo at ``path`` fitted inside ``box`` (never enlarged), upright and in sRGB.

    JPEGs and PNGs stream through libvips (see ``_decode_reduced``), other formats are
    decoded by Pillow; the picture is resized in its stored orientation and only the
    result is turned upright and converted, which touches the fewest pixels.
    """
    with open_photo(path, max_pixels) as image:
        exif_orientation = orientation(image)
        quarter_turn = exif_orientation in QUARTER_TURN_ORIENTATIONS
        width, height = image.size
        stored_size = fit_inside((width, height), (box[1], box[0]) if quarter_turn else box)
        icc_profile = image.info.get("icc_profile")
        picture = _decode_reduced(image, stored_size)
        if picture is None:
            picture = decode(image)
            if picture.mode not in _VIPS_BANDS:  # palette, 16-bit, alpha: normalised first
                picture, icc_profile = to_srgb(picture, icc_profile), None
            picture = resample(picture, stored_size)
        picture = transpose_upright(picture, exif_orientation)
    full_size = (height, width) if quarter_turn else (width, height)
    return UprightPhoto(to_srgb(picture, icc_profile), full_size)


def fit_inside(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with ``size``'s aspect ratio inside ``box``; never larger than ``size``."""
    width, height = size
    scale = min(box[0] / width, box[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def save_jpeg(image: Image.Image, target: Path, quality: int, xmp: bytes | None = None) -> None:
    """Baseline JPEG, 4:2:0, no EXIF (no GPS or maker notes can leak); XMP only if given.

    Baseline, not progressive: progressive encoding tripled the encode time of LARGE
    (7 ms to 25 ms for 1440x1080 here) for files a few percent smaller.
    """
    extra = {"xmp": xmp} if xmp else {}
    image.save(target, "JPEG", quality=quality, subsampling="4:2:0", optimize=False, **extra)
