"""The thumbnail core on every kind of photo people upload (no Prefect, no database)."""

from __future__ import annotations

import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import pyvips
from PIL import Image, ImageDraw

from media_pipeline.errors import InvalidMedia
from tasks.thumbnails import make_thumbnails
from tests.support.icc import matrix_profile
from tests.support.media import is_marker, make_jpeg, photo_pixels, stored_for_orientation

MEDIA_ID = uuid.UUID("12345678-1234-4678-9234-567812345678")


def thumbnails(source: Path, out: Path, **options) -> dict[str, Image.Image]:
    result = make_thumbnails(source, out, MEDIA_ID, **options)
    images = {}
    for derivative in result.derivatives:
        with Image.open(derivative.path) as image:
            image.load()
        assert image.format == "JPEG" and image.mode == "RGB"
        assert (derivative.width, derivative.height) == image.size
        assert derivative.bytes == derivative.path.stat().st_size
        assert derivative.mime_type == "image/jpeg"
        images[derivative.kind] = image
    assert set(images) == {"THUMBNAIL", "MEDIUM", "LARGE"}
    return images


def sizes(images: dict[str, Image.Image]) -> dict[str, tuple[int, int]]:
    return {kind: image.size for kind, image in images.items()}


def mean_colour(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    return np.asarray(image.crop(box) if box else image, dtype=np.float64).reshape(-1, 3).mean(0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_thumbnails_keep_every_exif_orientation_upright(tmp_path: Path, orientation: int):
    photo = make_jpeg(tmp_path / "o.jpg", 1600, 1200, orientation=orientation)

    images = thumbnails(photo, tmp_path / "out")

    assert sizes(images) == {"THUMBNAIL": (150, 150), "MEDIUM": (800, 600), "LARGE": (1440, 1080)}
    for kind in ("MEDIUM", "LARGE"):
        image = images[kind]
        assert is_marker(image.getpixel((3, 3))), (kind, image.getpixel((3, 3)))
        assert not is_marker(image.getpixel((image.width - 4, image.height - 4)))
        assert not is_marker(image.getpixel((image.width - 4, 3)))
        assert not is_marker(image.getpixel((3, image.height - 4)))


def test_iphone_mpo_with_a_depth_map_appended_is_read_as_its_first_picture(tmp_path: Path):
    """iPhones append a second picture (MPF): Pillow calls such a file MPO, not JPEG."""
    photo = make_jpeg(tmp_path / "main.jpg", 3000, 4000, orientation=6)
    with Image.open(photo) as main:
        depth = Image.new("L", (750, 1000), 128)
        main.save(
            tmp_path / "iphone.jpg",
            "MPO",
            save_all=True,
            append_images=[depth],
            exif=main.getexif(),
        )
    assert Image.open(tmp_path / "iphone.jpg").format == "MPO"

    images = thumbnails(tmp_path / "iphone.jpg", tmp_path / "out")

    assert sizes(images) == {"THUMBNAIL": (150, 150), "MEDIUM": (450, 600), "LARGE": (810, 1080)}
    assert is_marker(images["LARGE"].getpixel((3, 3)))
    assert not is_marker(images["LARGE"].getpixel((806, 1076)))


def test_portrait_3000x4000_fits_inside_the_boxes(tmp_path: Path):
    images = thumbnails(make_jpeg(tmp_path / "p.jpg", 3000, 4000), tmp_path / "out")
    assert sizes(images) == {"THUMBNAIL": (150, 150), "MEDIUM": (450, 600), "LARGE": (810, 1080)}


def test_progressive_jpeg(tmp_path: Path):
    photo = make_jpeg(tmp_path / "p.jpg", 2000, 1000, progressive=True)
    assert Image.open(photo).info.get("progressive")
    images = thumbnails(photo, tmp_path / "out")
    assert sizes(images)["LARGE"] == (1920, 960) and sizes(images)["MEDIUM"] == (800, 400)


def test_cmyk_and_greyscale_jpegs_come_out_rgb(tmp_path: Path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (900, 600), (0, 255, 255, 0)).save(cmyk, "JPEG", quality=95)  # red ink
    grey = tmp_path / "grey.jpg"
    photo_pixels(900, 600).convert("L").save(grey, "JPEG")

    red = thumbnails(cmyk, tmp_path / "a")["MEDIUM"]
    r, g, b = mean_colour(red)
    assert r > 200 and g < 60 and b < 60
    medium = thumbnails(grey, tmp_path / "b")["MEDIUM"]
    assert medium.size == (800, 533)
    pixels = np.asarray(medium, dtype=np.int16)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 3  # still grey


def test_display_p3_photo_is_converted_to_srgb_not_just_tagged(tmp_path: Path):
    photo = tmp_path / "p3.jpg"
    Image.new("RGB", (1000, 800), (200, 100, 50)).save(
        photo, "JPEG", quality=98, icc_profile=matrix_profile("Display P3 (test)")
    )

    images = thumbnails(photo, tmp_path / "out")

    for image in images.values():
        assert np.allclose(mean_colour(image), (216, 93, 24), atol=3), mean_colour(image)
        assert "icc_profile" not in image.info  # plain sRGB, as browsers assume


def test_png_alpha_is_flattened_onto_white(tmp_path: Path):
    png = tmp_path / "alpha.png"
    image = Image.new("RGBA", (1000, 500), (255, 0, 0, 0))  # fully transparent red
    ImageDraw.Draw(image).rectangle((0, 0, 499, 499), fill=(0, 0, 255, 255))  # opaque blue
    image.save(png)

    medium = thumbnails(png, tmp_path / "out")["MEDIUM"]

    assert medium.size == (800, 400)
    assert np.allclose(mean_colour(medium, (500, 50, 750, 350)), (255, 255, 255), atol=2)
    assert np.allclose(mean_colour(medium, (50, 50, 350, 350)), (0, 0, 255), atol=4)


def test_palette_and_16_bit_pngs(tmp_path: Path):
    palette = tmp_path / "palette.png"
    photo_pixels(600, 400).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(palette)
    deep = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 65535, 600, dtype=np.uint16), (400, 1))
    Image.fromarray(ramp).save(deep)

    assert sizes(thumbnails(palette, tmp_path / "a"))["LARGE"] == (600, 400)
    large = np.asarray(thumbnails(deep, tmp_path / "b")["LARGE"], dtype=np.float64)[..., 0]
    assert large[:, :20].mean() < 8 and large[:, -20:].mean() > 245  # scaled, not clipped
    assert 110 < large[:, 290:310].mean() < 145


def png_variants(folder: Path) -> dict[str, Path]:
    """A left half of opaque blue (or black) and a right half transparent (or white)."""
    left = np.zeros((400, 600), dtype=bool)
    left[:, :300] = True
    paths = {}

    def save(name: str, image: Image.Image, **options) -> None:
        paths[name] = folder / f"{name}.png"
        image.save(paths[name], **options)

    save("1-bit", Image.fromarray(~left))
    grey_alpha = np.stack([np.zeros_like(left, np.uint8), np.where(left, 255, 0)], -1)
    save("grey+alpha", Image.fromarray(grey_alpha.astype(np.uint8), "LA"))
    palette = Image.fromarray(np.where(left, 1, 0).astype(np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 0, 255])  # index 0 red (transparent), 1 blue
    save("palette+tRNS", palette, transparency=0)
    rgba16 = np.zeros((400, 600, 4), dtype=np.uint16)
    rgba16[left] = (0, 0, 65535, 65535)
    paths["16-bit RGBA"] = folder / "16-bit RGBA.png"  # Pillow cannot write one
    pyvips.Image.new_from_memory(rgba16.tobytes(), 600, 400, 4, "ushort").copy(
        interpretation="rgb16"
    ).pngsave(str(paths["16-bit RGBA"]))
    assert paths["16-bit RGBA"].read_bytes()[24] == 16  # IHDR bit depth
    rgb = np.zeros((400, 600, 3), dtype=np.uint8)
    rgb[left] = (0, 0, 255)
    rgb[~left] = (255, 0, 0)
    save("RGB+tRNS", Image.fromarray(rgb), transparency=(255, 0, 0))
    return paths


def test_every_png_kind_is_flattened_onto_white_and_brought_to_8_bits(tmp_path: Path):
    for name, png in png_variants(tmp_path).items():
        large = thumbnails(png, tmp_path / name)["LARGE"]
        assert large.size == (600, 400), name
        right = mean_colour(large, (320, 20, 580, 380))
        assert np.allclose(right, (255, 255, 255), atol=3), (name, right)
        left = mean_colour(large, (20, 20, 280, 380))
        expected = (0, 0, 0) if name in ("1-bit", "grey+alpha") else (0, 0, 255)
        assert np.allclose(left, expected, atol=6), (name, left)


def test_png_orientation_is_read_before_or_after_the_pixels(tmp_path: Path):
    stored = stored_for_orientation(photo_pixels(600, 400), 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    before = tmp_path / "before.png"
    stored.save(before, exif=exif)  # Pillow writes eXIf ahead of IDAT
    data = before.read_bytes()
    start = data.index(b"eXIf") - 4
    end = start + 12 + int.from_bytes(data[start : start + 4], "big")
    rest = data[:start] + data[end:]
    after = tmp_path / "after.png"
    after.write_bytes(rest[:-12] + data[start:end] + rest[-12:])  # eXIf between IDAT and IEND

    for png in (before, after):
        large = thumbnails(png, tmp_path / png.stem)["LARGE"]
        assert large.size == (600, 400), png.name
        assert is_marker(large.getpixel((3, 3))), png.name


def test_interlaced_png_and_truncated_png(tmp_path: Path):
    png = tmp_path / "photo.png"
    photo_pixels(1000, 800).save(png)
    interlaced = tmp_path / "interlaced.png"
    pyvips.Image.new_from_file(str(png)).pngsave(str(interlaced), interlace=True)  # Adam7
    assert Image.open(interlaced).info.get("interlace") == 1
    images = thumbnails(interlaced, tmp_path / "a")
    reference = thumbnails(png, tmp_path / "b")
    assert sizes(images) == sizes(reference)
    for kind, image in images.items():  # the same pixels, not merely the same colours
        difference = np.abs(np.asarray(image, np.int16) - np.asarray(reference[kind], np.int16))
        assert difference.max() <= 1, kind

    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidMedia, match=r"cut\.png: corrupt PNG data"):
        make_thumbnails(cut, out, MEDIA_ID)
    assert list(out.iterdir()) == []


def test_webp_still_and_animated_gif_and_webp_use_the_first_frame(tmp_path: Path):
    frames = [Image.new("RGB", (400, 300), colour) for colour in ((0, 200, 0), (200, 0, 0))]
    for name in ("anim.gif", "anim.webp"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
    photo_pixels(500, 300).save(tmp_path / "still.webp", quality=90)

    for name in ("anim.gif", "anim.webp"):
        medium = thumbnails(tmp_path / name, tmp_path / name.replace(".", "-"))["MEDIUM"]
        r, g, _ = mean_colour(medium)
        assert g > 150 and r < 50, name
    assert sizes(thumbnails(tmp_path / "still.webp", tmp_path / "w"))["LARGE"] == (500, 300)


def test_heic_from_iphones_and_tiff(tmp_path: Path):
    from pillow_heif import register_heif_opener

    register_heif_opener()
    photo_pixels(1200, 900).save(tmp_path / "iphone.heic", quality=80)
    photo_pixels(900, 1200).save(tmp_path / "scan.tiff", compression="tiff_lzw")

    heic = thumbnails(tmp_path / "iphone.heic", tmp_path / "h")
    assert sizes(heic)["MEDIUM"] == (800, 600) and is_marker(heic["LARGE"].getpixel((3, 3)))
    assert sizes(thumbnails(tmp_path / "scan.tiff", tmp_path / "t"))["MEDIUM"] == (450, 600)


def test_small_images_are_never_enlarged(tmp_path: Path):
    images = thumbnails(make_jpeg(tmp_path / "s.jpg", 120, 80), tmp_path / "out")
    assert sizes(images) == {"THUMBNAIL": (80, 80), "MEDIUM": (120, 80), "LARGE": (120, 80)}
    images = thumbnails(make_jpeg(tmp_path / "m.jpg", 700, 500), tmp_path / "out2")
    assert sizes(images) == {"THUMBNAIL": (150, 150), "MEDIUM": (700, 500), "LARGE": (700, 500)}


def test_square_thumbnail_keeps_the_off_centre_subject(tmp_path: Path):
    canvas = Image.new("RGB", (1200, 400), (90, 140, 200))  # flat sky
    subject = photo_pixels(300, 300, seed=3).resize((300, 300))
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    subject = Image.blend(subject, Image.fromarray(texture, "RGB"), 0.5)
    canvas.paste(subject, (860, 50))  # the subject sits near the right edge
    source = tmp_path / "subject.jpg"
    canvas.save(source, quality=95)

    thumb = thumbnails(source, tmp_path / "out")["THUMBNAIL"]

    pixels = np.asarray(thumb, dtype=np.int16)
    not_sky = np.abs(pixels - (90, 140, 200)).max(axis=-1) > 30
    # The subject is 113 of the 150 scaled pixels on each side: at least half the square.
    assert not_sky.mean() > 0.5, not_sky.mean()  # a centre crop would hold no subject


def test_derivatives_carry_no_exif_or_gps(tmp_path: Path):
    photo = tmp_path / "gps.jpg"
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS IFD
    photo_pixels(1000, 700).save(photo, "JPEG", exif=exif)
    assert Image.open(photo).getexif().get_ifd(0x8825)

    result = make_thumbnails(photo, tmp_path / "out", MEDIA_ID)

    for derivative in result.derivatives:
        data = derivative.path.read_bytes()
        assert b"Exif" not in data and b"PhoneMaker" not in data
        assert not Image.open(derivative.path).getexif()
    assert photo.read_bytes().count(b"PhoneMaker") == 1  # the original is untouched


def png_bomb(path: Path, side: int) -> Path:
    """A valid greyscale PNG of side x side zero pixels: a few KB on disk."""
    raw = zlib.compress(b"\0" * (side + 1) * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jpg", b"", "empty"),
        ("notes.jpg", b"these are meeting notes, not a photo\n" * 50, "cannot identify image"),
        ("random.png", uuid.uuid4().bytes * 1000, "cannot identify image"),
    ],
)
def test_non_images_are_refused_without_output(tmp_path: Path, name, content, message):
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(InvalidMedia, match=message):
        make_thumbnails(source, out, MEDIA_ID)
    assert not out.exists() or not list(out.iterdir())


def test_truncated_jpeg_is_refused_and_leaves_no_partial_files(tmp_path: Path):
    photo = make_jpeg(tmp_path / "whole.jpg", 1600, 1200)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(photo.read_bytes()[: photo.stat().st_size * 2 // 3])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidMedia, match="corrupt JPEG"):
        make_thumbnails(truncated, out, MEDIA_ID)
    assert list(out.iterdir()) == []


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path):
    bomb = png_bomb(tmp_path / "bomb.png", 10000)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(InvalidMedia, match="decompression bomb"):
        make_thumbnails(bomb, tmp_path / "out", MEDIA_ID)
    with pytest.raises(InvalidMedia, match="over the limit of 1 MP"):
        make_thumbnails(
            make_jpeg(tmp_path / "a.jpg", 1200, 1000),
            tmp_path / "o",
            MEDIA_ID,
            max_pixels=1_000_000,
        )


def test_placeholder_is_a_blurhash_of_the_thumbnail(tmp_path: Path):
    import blurhash

    result = make_thumbnails(make_jpeg(tmp_path / "a.jpg", 800, 600), tmp_path / "out", MEDIA_ID)
    assert blurhash.components(result.placeholder) == (4, 3)
    decoded = np.asarray(blurhash.decode(result.placeholder, 8, 8), dtype=np.float64)
    thumb = Image.open(result.derivatives[0].path).resize((8, 8), Image.Resampling.BOX)
    assert np.abs(decoded.mean(axis=(0, 1)) - np.asarray(thumb).mean(axis=(0, 1))).max() < 25
