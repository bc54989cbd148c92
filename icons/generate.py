#!/usr/bin/env python3
"""Draws ConvoConnect's icon (one source, `icon.png` at 1024 px) and the sizes Tauri bundles.

Pure Python (zlib + struct), so it runs anywhere: `python3 icons/generate.py`.
The picture: a rounded square in deep teal with a white camera body and lens.
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def inside_round_rect(x, y, x0, y0, x1, y1, r):
    if x < x0 or x > x1 or y < y0 or y > y1:
        return False
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def pixel(u, v):
    """Colour (RGBA) at normalised coordinates u, v in [0, 1)."""
    if not inside_round_rect(u, v, 0.02, 0.02, 0.98, 0.98, 0.2):
        return (0, 0, 0, 0)
    teal = (12, 110, 120, 255)
    white = (250, 250, 250, 255)
    # Camera body and the viewfinder triangle.
    if inside_round_rect(u, v, 0.18, 0.32, 0.66, 0.68, 0.08):
        # The lens: a teal ring inside the body.
        d = ((u - 0.42) ** 2 + (v - 0.5) ** 2) ** 0.5
        if 0.07 < d < 0.11:
            return teal
        return white
    if 0.70 <= u <= 0.84 and abs(v - 0.5) <= (u - 0.70) * 1.1 + 0.04:
        return white
    return teal


def png(size):
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row.extend(pixel((x + 0.5) / size, (y + 0.5) / size))
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 9)

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


if __name__ == "__main__":
    for name, size in [("icon.png", 512), ("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256)]:
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(png(size))
        print(name, size)
