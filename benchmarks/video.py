"""Video jobs must cost the same on a 1-minute and a 30-minute video.

    .venv/bin/python benchmarks/video.py [--runs 3]

Generates once (cached) a 1-minute 1080p H.264/AAC video with 1-second GOPs (as phones
write them), and a 30-minute one made of
30 copies joined by stream copy (encoding 30 minutes here would take minutes and
gigabytes); then times the preview and the thumbnail on both, interleaved, and prints
the medians and the 30-minute / 1-minute ratio (target: under 1.2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.video_preview import make_preview
from tasks.video_thumbnail import make_video_thumbnail
from tests.support.media import ffmpeg

CACHE = Path(__file__).parent / ".cache"


def videos() -> dict[str, Path]:
    """Video is encoded once and joined by stream copy; sound is added after joining, so
    that AAC's priming delay does not push each copy's keyframes off whole seconds."""
    CACHE.mkdir(exist_ok=True)
    picture = CACHE / "video-1min-picture.mp4"
    if not picture.exists():
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=30:duration=60",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            str(picture),
        )
    out = {}
    for label, copies in (("1 min", 1), ("30 min", 30)):
        target = CACHE / f"video-{copies}min.mp4"
        if not target.exists():
            listing = CACHE / "concat.txt"
            listing.write_text(f"file '{picture.name}'\n" * copies)
            ffmpeg(
                "-f",
                "concat",
                "-safe",
                "0",
                "-i",
                str(listing),
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency=440:duration={60 * copies}",
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-shortest",
                str(target),
            )
            listing.unlink()
        out[label] = target
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    jobs = {"preview": make_preview, "thumbnail": make_video_thumbnail}
    sources = videos()
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.runs):
            for label, source in sources.items():
                for job, make in jobs.items():
                    start = time.perf_counter()
                    make(source, Path(folder), uuid.uuid4())
                    times.setdefault((job, label), []).append(time.perf_counter() - start)
    report = {}
    for job in jobs:
        short = statistics.median(times[(job, "1 min")])
        long = statistics.median(times[(job, "30 min")])
        report[job] = {
            "1_min_s": round(short, 3),
            "30_min_s": round(long, 3),
            "ratio": round(long / short, 3),
        }
        print(f"{job:9s}  1 min {short:6.2f} s   30 min {long:6.2f} s   ratio {long / short:4.2f}")
    short = sum(statistics.median(times[(job, "1 min")]) for job in jobs)
    long = sum(statistics.median(times[(job, "30 min")]) for job in jobs)
    report["both"] = {
        "1_min_s": round(short, 3),
        "30_min_s": round(long, 3),
        "ratio": round(long / short, 3),
    }
    print(f"both       1 min {short:6.2f} s   30 min {long:6.2f} s   ratio {long / short:4.2f}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
