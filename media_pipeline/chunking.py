"""Planning where to cut long audio: at the quietest moment near each boundary.

The loudness profile (RMS per 100 ms window) is computed while streaming the decoded
signal, so planning a 3-hour file holds about 100k floats, not the audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media_pipeline.audio import audio_info, pcm16_blocks

WINDOW_SECONDS = 0.1


@dataclass(frozen=True)
class Span:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def loudness_profile(source: Path) -> tuple[np.ndarray, float]:
    """RMS of the mono mix per 100 ms window, and the exact duration in seconds."""
    rate = audio_info(source).sample_rate
    window = max(1, int(rate * WINDOW_SECONDS))
    values: list[np.ndarray] = []
    carry = np.empty(0, dtype=np.float32)
    frames = 0
    for block in pcm16_blocks(source):
        frames += len(block)
        mono = block.astype(np.float32).mean(axis=1)
        if len(carry):
            mono = np.concatenate([carry, mono])
        whole = len(mono) // window * window
        if whole:
            values.append(np.sqrt((mono[:whole].reshape(-1, window) ** 2).mean(axis=1)))
        carry = mono[whole:]
    if len(carry):
        values.append(np.sqrt(np.array([(carry**2).mean()], dtype=np.float32)))
    profile = np.concatenate(values) if values else np.empty(0, dtype=np.float32)
    return profile, frames / rate


def plan_spans(
    profile: np.ndarray, duration: float, max_seconds: float, search_seconds: float = 30.0
) -> list[Span]:
    """Consecutive spans of at most ``max_seconds`` covering ``duration``, cut at silences.

    Each cut is the quietest 100 ms window in the last ``search_seconds`` (at most a fifth
    of a span) before the hard limit.
    """
    if duration <= max_seconds:
        return [Span(0.0, duration)]
    search = min(search_seconds, max_seconds / 5)
    spans = []
    start = 0.0
    while duration - start > max_seconds:
        limit = start + max_seconds
        first = int((limit - search) / WINDOW_SECONDS)
        last = max(first + 1, int(limit / WINDOW_SECONDS))
        window = profile[first:last]
        # Among equally quiet windows, the latest keeps spans long.
        quietest = first + len(window) - 1 - int(np.argmin(window[::-1])) if len(window) else last
        cut = min(limit, (quietest + 0.5) * WINDOW_SECONDS)
        spans.append(Span(start, cut))
        start = cut
    spans.append(Span(start, duration))
    return spans
