"""Waveform speed and memory: our streaming peaks against a naive decode-everything version.

    .venv/bin/python benchmarks/waveform.py [--runs 3]

Generates (once, cached) a 10-minute 44.1 kHz mono WAV and its MP3, then times in one
run, interleaved, ``compute_peaks`` (-z 256 -b 8) and a naive implementation (decode the
whole signal into memory, then numpy min/max), each in a fresh process so that peak
memory is its own. audiowaveform 1.10.3 took 0.29 s (WAV) and 1.4 s (MP3) here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path(__file__).parent / ".cache"
AUDIOWAVEFORM_SECONDS = {"wav": 0.29, "mp3": 1.4}

PROBE = """
import sys, time, json
sys.path.insert(0, sys.argv[3])
from benchmarks.memory import reset_peak, peak_growth_mib
import numpy as np
from pathlib import Path
from media_pipeline.audio import pcm16_blocks
from tasks.waveform import compute_peaks, _trunc_div
def naive(path):
    signal = np.concatenate(list(pcm16_blocks(Path(path)))).astype(np.int32)
    mono = _trunc_div(signal.sum(axis=1), signal.shape[1])
    pad = (-len(mono)) % 256
    blocks = np.concatenate([mono, np.repeat(mono[-1:], pad)]).reshape(-1, 256)
    return _trunc_div(np.stack([blocks.min(1), blocks.max(1)], -1), 256)
before = reset_peak()
start = time.perf_counter()
result = compute_peaks(Path(sys.argv[2])).data if sys.argv[1] == "ours" else naive(sys.argv[2])
elapsed = time.perf_counter() - start
peak = peak_growth_mib(before)
print(json.dumps({"seconds": elapsed, "peak_mib": peak, "pixels": int(result.shape[0])}))
"""


def samples() -> dict[str, Path]:
    from tests.support.media import ffmpeg

    CACHE.mkdir(exist_ok=True)
    wav, mp3 = CACHE / "speech-10min.wav", CACHE / "speech-10min.mp3"
    if not wav.exists():
        expression = "0.4*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*0.7*t))+0.05*(random(0)-0.5)"
        ffmpeg("-f", "lavfi", "-i", f"aevalsrc={expression}:s=44100:d=600", "-ac", "1", str(wav))
    if not mp3.exists():
        ffmpeg("-i", str(wav), "-c:a", "libmp3lame", "-b:a", "128k", str(mp3))
    return {"wav": wav, "mp3": mp3}


def measure(implementation: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, implementation, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report = {}
    for kind, path in samples().items():
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "naive": []}
        for _ in range(args.runs):
            for implementation in runs:
                runs[implementation].append(measure(implementation, path))
        ours = statistics.median(r["seconds"] for r in runs["ours"])
        naive = statistics.median(r["seconds"] for r in runs["naive"])
        memory = {k: max(r["peak_mib"] for r in v) for k, v in runs.items()}
        reference = AUDIOWAVEFORM_SECONDS[kind]
        report[kind] = {
            "ours_s": round(ours, 3),
            "naive_s": round(naive, 3),
            "ours_vs_naive": round(ours / naive, 2),
            "ours_vs_audiowaveform": round(ours / reference, 2),
            "peak_mib": {k: round(v, 1) for k, v in memory.items()},
        }
        print(
            f"10 min {kind.upper()}: ours {ours * 1000:6.0f} ms (peak +{memory['ours']:5.1f} MiB)"
            f"  naive {naive * 1000:6.0f} ms (peak +{memory['naive']:5.1f} MiB)"
            f"  ours/naive {ours / naive:4.2f}  ours/audiowaveform {ours / reference:4.2f}",
            flush=True,
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
