"""Synthesise a small sky of overlapping FITS tiles with injected background offsets.

Montage ships no sample data, so the demo makes its own: one field of stars and a smooth
gradient is defined on a global tangent plane, and every tile samples it through its own TAN
projection (so overlapping tiles agree pixel for pixel, as real survey plates do). Each tile
then gets a constant background offset of its own — the instrumental difference that Montage's
mDiffFit/mBgModel/mBackground chain exists to remove. The offsets are written to truth.json so
check_mosaic.py can prove the mosaic is real.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

CENTER_RA, CENTER_DEC = 180.0, 2.0
PIXEL_DEG = 1.0 / 3600.0  # 1 arcsec pixels
STARS_PER_TILE = 40
OFFSET_RANGE = 60.0  # injected per-tile background offsets are uniform in +-this
NOISE = 1.0  # Gaussian pixel noise (sigma)


def tan_forward(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sky (deg) -> gnomonic plane (deg) about (ra0, dec0); x grows to the east (with RA)."""
    ra, dec, ra0, dec0 = (np.radians(v) for v in (ra, dec, ra0, dec0))
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    x = np.cos(dec) * np.sin(ra - ra0) / cos_c
    y = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cos_c
    return np.degrees(x), np.degrees(y)


def tan_inverse(x: np.ndarray, y: np.ndarray, ra0: float, dec0: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic plane (deg) about (ra0, dec0) -> sky (deg)."""
    x, y = np.radians(x), np.radians(y)
    ra0r, dec0r = math.radians(ra0), math.radians(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(np.cos(c) * math.sin(dec0r) +
                        np.where(rho > 0, y * np.sin(c) * math.cos(dec0r) / rho, 0.0))
        ra = ra0r + np.arctan2(x * np.sin(c),
                               rho * math.cos(dec0r) * np.cos(c) - y * math.sin(dec0r) * np.sin(c))
    return np.degrees(ra), np.degrees(dec)


def header_cards(cards: list[tuple[str, object]]) -> bytes:
    """A FITS header: 80-character cards, END, blank-padded to a 2880-byte block."""
    lines = []
    for key, value in cards:
        if isinstance(value, bool):
            text = "T" if value else "F"
            lines.append(f"{key:<8}= {text:>20}")
        elif isinstance(value, str):
            lines.append(f"{key:<8}= '{value:<8}'")
        else:
            lines.append(f"{key:<8}= {value!r:>20}")
    lines.append("END")
    raw = "".join(line.ljust(80) for line in lines).encode("ascii")
    return raw + b" " * (-len(raw) % 2880)


def wcs_cards(nx: int, ny: int, ra: float, dec: float) -> list[tuple[str, object]]:
    """A north-up TAN WCS centred on (ra, dec) with 1-arcsec pixels."""
    return [("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("EQUINOX", 2000.0),
            ("CRVAL1", ra), ("CRVAL2", dec), ("CRPIX1", (nx + 1) / 2), ("CRPIX2", (ny + 1) / 2),
            ("CDELT1", -PIXEL_DEG), ("CDELT2", PIXEL_DEG)]


def write_fits(path: Path, data: np.ndarray, wcs: list[tuple[str, object]]) -> None:
    """A single-HDU float32 (BITPIX=-32) FITS image; Montage needs nothing more."""
    ny, nx = data.shape
    cards = [("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", nx),
             ("NAXIS2", ny), *wcs]
    body = data.astype(">f4").tobytes()
    path.write_bytes(header_cards(cards) + body + b"\0" * (-len(body) % 2880))


def write_template(path: Path, nx: int, ny: int) -> None:
    """Montage's region template (what mMakeHdr would write): FITS cards as text lines."""
    cards = [("SIMPLE", True), ("BITPIX", -64), ("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny),
             *wcs_cards(nx, ny, CENTER_RA, CENTER_DEC)]

    def render(value: object) -> str:
        if isinstance(value, bool):
            return "T" if value else "F"
        return f"'{value}'" if isinstance(value, str) else repr(value)

    path.write_text("".join(f"{key:<8}= {render(value)}\n" for key, value in cards) + "END\n")


def sky(x: np.ndarray, y: np.ndarray, stars: np.ndarray) -> np.ndarray:
    """The true sky on the global tangent plane: gradient + Gaussian stars (x, y in deg)."""
    value = 100.0 + 2000.0 * x + 1000.0 * y
    sigma = 2.0 * PIXEL_DEG
    for sx, sy, flux in stars:
        value = value + flux * np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * sigma**2))
    return value


def make_sky(out: Path, cols: int, rows: int, size: int, seed: int) -> dict[str, Any]:
    """Write raw/tile_R_C.fits (cols x rows tiles overlapping by a quarter), region.hdr and
    truth.json into ``out``; returns the truth (offsets, stars, mosaic size)."""
    rng = np.random.default_rng(seed)
    step = int(size * 0.75)
    width, height = step * (cols - 1) + size, step * (rows - 1) + size
    half_w, half_h = width * PIXEL_DEG / 2, height * PIXEL_DEG / 2
    count = STARS_PER_TILE * cols * rows
    stars = np.column_stack([rng.uniform(-half_w, half_w, count),
                             rng.uniform(-half_h, half_h, count),
                             rng.uniform(200, 3000, count)])
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    truth: dict[str, Any] = {"tiles": {}, "mosaic": [width, height], "cols": cols,
                             "rows": rows, "size": size, "seed": seed, "stars": stars.tolist()}
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    px = -(xx - (size - 1) / 2) * PIXEL_DEG  # the tile's own plane; RA increases to the left
    py = (yy - (size - 1) / 2) * PIXEL_DEG
    for r in range(rows):
        for c in range(cols):
            # tile centre on the global plane, then to the sky
            cx = -half_w + (c * step + size / 2) * PIXEL_DEG
            cy = -half_h + (r * step + size / 2) * PIXEL_DEG
            ra_c, dec_c = tan_inverse(np.array(cx), np.array(cy), CENTER_RA, CENTER_DEC)
            ra_c, dec_c = float(ra_c), float(dec_c)
            # each pixel: tile plane -> sky -> global plane -> sky value
            ra, dec = tan_inverse(px, py, ra_c, dec_c)
            gx, gy = tan_forward(ra, dec, CENTER_RA, CENTER_DEC)
            offset = float(rng.uniform(-OFFSET_RANGE, OFFSET_RANGE))
            image = sky(gx, gy, stars) + offset + rng.normal(0, NOISE, (size, size))
            name = f"tile_{r}_{c}.fits"
            write_fits(raw / name, image, wcs_cards(size, size, ra_c, dec_c))
            truth["tiles"][name] = {"offset": offset, "row": r, "col": c,
                                    "ra": ra_c, "dec": dec_c}
    write_template(out / "region.hdr", width, height)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def grid(text: str) -> tuple[int, int]:
    """``--tiles``: "COLSxROWS" (e.g. 3x2) or a count N laid out as a near-square grid."""
    if "x" in text:
        cols, rows = (int(v) for v in text.lower().split("x"))
    else:
        count = int(text)
        cols = math.ceil(math.sqrt(count))
        rows = math.ceil(count / cols)
        if cols * rows != count:
            raise argparse.ArgumentTypeError(f"{count} tiles make no full grid; say COLSxROWS")
    if cols < 1 or rows < 1 or cols * rows < 2:
        raise argparse.ArgumentTypeError("a mosaic needs at least 2 tiles")
    return cols, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--tiles", type=grid, default=(3, 3), metavar="N|COLSxROWS",
                        help="tile grid (default 3x3; 2x2 or 3x2 for quick runs)")
    parser.add_argument("--size", type=int, default=160, help="tile side in pixels (>= 40)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.size < 40:
        parser.error("--size must be at least 40 pixels")
    cols, rows = args.tiles
    truth = make_sky(args.outdir, cols, rows, args.size, args.seed)
    offsets = [t["offset"] for t in truth["tiles"].values()]
    print(f"{len(offsets)} tiles ({cols}x{rows}, {args.size} px) in {args.outdir / 'raw'}, "
          f"region {truth['mosaic'][0]}x{truth['mosaic'][1]} px; injected offsets "
          f"{min(offsets):+.1f}..{max(offsets):+.1f}")


if __name__ == "__main__":
    main()
