"""A minimal ICC v2 matrix/TRC display profile, built in memory (no profile files ship here)."""

from __future__ import annotations

import struct

# Display P3 colorants adapted to the D50 profile connection space (as Apple's profile).
DISPLAY_P3 = ((0.5151, 0.2412, -0.0011), (0.2919, 0.6922, 0.0419), (0.1572, 0.0666, 0.7841))
D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67
    )


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def matrix_profile(
    description: str = "Display P3 (test)",
    colorants: tuple[tuple[float, float, float], ...] = DISPLAY_P3,
    gamma: float = 2.2,
) -> bytes:
    """ICC bytes of an RGB display profile with the given colorants and a gamma curve."""
    tags = [
        (b"desc", _desc(description)),
        (b"wtpt", _xyz(D50)),
        (b"rXYZ", _xyz(colorants[0])),
        (b"gXYZ", _xyz(colorants[1])),
        (b"bXYZ", _xyz(colorants[2])),
        (b"rTRC", _curve(gamma)),
        (b"gTRC", _curve(gamma)),
        (b"bTRC", _curve(gamma)),
        (b"cprt", b"text\0\0\0\0no copyright, test data\0"),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, body = [], b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        entries.append(signature + struct.pack(">II", offset + len(body), len(data)))
        body += data
    size = 128 + table_size + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"APPL"
        + b"\0" * 4  # flags
        + b"\0" * 8  # manufacturer, model
        + b"\0" * 8  # attributes
        + struct.pack(">I", 0)  # rendering intent
        + b"".join(_s15(v) for v in D50)
        + b"lcms"
        + b"\0" * 16
        + b"\0" * 28
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + body
