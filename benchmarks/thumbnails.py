"""Thumbnail speed, memory and quality: our core against a naive Pillow implementation.

    .venv/bin/python benchmarks/thumbnails.py [--runs 7]

For each generated test photo, times (interleaved, one thread, median of warm runs)
``make_thumbnails`` and a naive version (full decode, upright, three independent LANCZOS
resizes), prints ms per image, the ratio, peak memory of one run in a fresh process, and
the PSNR of each derivative against a slow full-resolution LANCZOS reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.thumbnails import LARGE_BOX, MEDIUM_BOX, THUMBNAIL_SIDE, make_thumbnails

CACHE = Path(__file__).parent / ".cache"
MEDIA_ID = "00000000-0000-4000-8000-000000000000"
BOXES = {"MEDIUM": MEDIUM_BOX, "LARGE": LARGE_BOX}


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth shapes, edges and sensor-like noise: compresses like a real photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    base = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(base, dtype=np.int16)
    noise = rng.normal(0, 5, (height, width, 1)).astype(np.int16)
    pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    detail = Image.effect_mandelbrot((width // 3, height // 3), (-2, -1.2, 1, 1.2), 60)
    image.paste(detail.convert("RGB"), (width // 3, height // 3))
    return image


def sample_photos() -> dict[str, Path]:
    CACHE.mkdir(exist_ok=True)
    specs = {
        "12MP JPEG": ("photo-12mp.jpg", 4000, 3000, None),
        "12MP JPEG orientation 6": ("photo-12mp-o6.jpg", 4000, 3000, 6),
        "48MP JPEG": ("photo-48mp.jpg", 8000, 6000, None),
        "3000x2000 PNG alpha": ("alpha.png", 3000, 2000, None),
        "640x480 JPEG": ("small.jpg", 640, 480, None),
    }
    paths = {}
    for label, (name, width, height, orientation) in specs.items():
        path = CACHE / name
        if not path.exists():
            image = photo_like(width, height, seed=width + (orientation or 0))
            if name.endswith(".png"):
                alpha = Image.linear_gradient("L").resize((width, height))
                image.putalpha(alpha)
                image.save(path, "PNG", compress_level=1)
            else:
                exif = Image.Exif()
                if orientation:
                    exif[0x0112] = orientation
                image.save(path, "JPEG", quality=92, exif=exif)
        paths[label] = path
    return paths


def naive_thumbnails(source: Path, out_dir: Path, media_id: str) -> None:
    """What a first version does: decode everything, three independent LANCZOS resizes."""
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    cover = ImageOps.fit(image, (THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    cover.save(out_dir / f"{media_id}-thumbnail.jpg", quality=82)
    for kind, box in BOXES.items():
        copy = image.copy()
        copy.thumbnail(box, Image.Resampling.LANCZOS)
        copy.save(out_dir / f"{media_id}-{kind.lower()}.jpg", quality=82)


def run_ours(source: Path, out_dir: Path, media_id: str) -> None:
    make_thumbnails(source, out_dir, media_id)


IMPLEMENTATIONS = {"ours": run_ours, "naive": naive_thumbnails}


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    mse = np.mean((x - y) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def reference(source: Path) -> dict[str, Image.Image]:
    with Image.open(source) as opened:
        upright = ImageOps.exif_transpose(opened)
        if upright.mode == "RGBA":
            flat = Image.new("RGB", upright.size, (255, 255, 255))
            flat.paste(upright, mask=upright.getchannel("A"))
            upright = flat
        upright = upright.convert("RGB")
    out = {}
    for kind, box in BOXES.items():
        scale = min(box[0] / upright.width, box[1] / upright.height, 1)
        size = (round(upright.width * scale), round(upright.height * scale))
        out[kind] = upright.resize(size, Image.Resampling.LANCZOS)
    return out


def measure_memory(implementation: str, source: Path) -> float:
    """Peak RSS growth (MiB) of one run, in a fresh process."""
    code = (
        "import sys,tempfile;"
        "sys.path.insert(0, sys.argv[3]);"
        "import benchmarks.thumbnails as b;"
        "from benchmarks.memory import reset_peak, peak_growth_mib;"
        "from pathlib import Path;"
        "before=reset_peak();"
        "b.IMPLEMENTATIONS[sys.argv[1]](Path(sys.argv[2]), Path(tempfile.mkdtemp()), b.MEDIA_ID);"
        "print(peak_growth_mib(before))"
    )
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code, implementation, str(source), root],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = {}
    for label, source in sample_photos().items():
        times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder)
            for name in IMPLEMENTATIONS:
                (out / name).mkdir()
            for run in range(args.runs + 1):  # the first run of each warms caches
                for name, implementation in IMPLEMENTATIONS.items():
                    start = time.perf_counter()
                    implementation(source, out / name, MEDIA_ID)
                    elapsed = (time.perf_counter() - start) * 1000
                    if run:
                        times[name].append(elapsed)
            ref = reference(source)
            quality = {}
            for kind in BOXES:
                ours = Image.open(out / "ours" / f"{MEDIA_ID}-{kind.lower()}.jpg")
                naive = Image.open(out / "naive" / f"{MEDIA_ID}-{kind.lower()}.jpg")
                quality[kind] = (psnr(ours, ref[kind]), psnr(naive, ref[kind]))
        ours_ms = statistics.median(times["ours"])
        naive_ms = statistics.median(times["naive"])
        memory = {name: measure_memory(name, source) for name in IMPLEMENTATIONS}
        results[label] = {
            "ours_ms": round(ours_ms, 1),
            "naive_ms": round(naive_ms, 1),
            "ratio_ours_to_naive": round(ours_ms / naive_ms, 3),
            "peak_mib": {k: round(v, 1) for k, v in memory.items()},
            "psnr_db": {
                kind: {"ours": round(o, 2), "naive": round(n, 2), "delta": round(o - n, 2)}
                for kind, (o, n) in quality.items()
            },
        }
        print(
            f"{label:26s} ours {ours_ms:7.1f} ms  naive {naive_ms:7.1f} ms  "
            f"ratio {ours_ms / naive_ms:5.2f}  peak MiB ours {memory['ours']:6.1f} "
            f"naive {memory['naive']:6.1f}  "
            + "  ".join(
                f"PSNR {kind} {o:.2f}/{n:.2f} dB ({o - n:+.2f})" for kind, (o, n) in quality.items()
            ),
            flush=True,
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
