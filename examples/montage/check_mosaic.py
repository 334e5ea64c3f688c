"""Prove the mosaic is real: the injected per-tile background offsets are gone.

For every tile, the median of (image - true sky) over its pixels is its background level.
Before background matching (the projected tiles) those levels spread like the injected
offsets; after it (the corrected tiles that mAdd combined) they must agree to within a small
fraction. The whole mosaic must also follow the true sky up to one global constant.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
from make_sky import PIXEL_DEG, sky


def read_fits(path: Path) -> tuple[dict[str, str], np.ndarray]:
    raw = path.read_bytes()
    header: dict[str, str] = {}
    offset = 0
    while True:
        block = raw[offset:offset + 2880].decode("ascii")
        offset += 2880
        cards = [block[i:i + 80] for i in range(0, 2880, 80)]
        for card in cards:
            key = card[:8].strip()
            if key == "END":
                break
            if card[8:10] == "= ":
                header[key] = card[10:].split("/")[0].strip().strip("'").strip()
        if any(c[:8].strip() == "END" for c in cards):
            break
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    dtype = {"-64": ">f8", "-32": ">f4"}[header["BITPIX"]]
    data = np.frombuffer(raw, dtype=dtype, count=nx * ny, offset=offset).reshape(ny, nx)
    return header, data.astype(float)


def residual(path: Path, stars: np.ndarray) -> np.ndarray:
    """image - true sky, on the image's own pixels (region-aligned TAN, shared CRVAL)."""
    header, data = read_fits(path)
    ny, nx = data.shape
    j, i = np.mgrid[1:ny + 1, 1:nx + 1].astype(float)
    x = float(header["CDELT1"]) * (i - float(header["CRPIX1"]))
    y = float(header["CDELT2"]) * (j - float(header["CRPIX2"]))
    assert abs(abs(float(header["CDELT1"])) - PIXEL_DEG) < 1e-12
    return data - sky(x, y, stars)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    out = parser.parse_args().outdir
    truth = json.loads((out / "truth.json").read_text())
    stars = np.array(truth["stars"])
    png = out / "mosaic.png"
    if not png.exists() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        print(f"check_mosaic: {png} is missing or not a PNG", file=sys.stderr)
        return 1
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    before, after = [], []
    for name in truth["tiles"]:
        before.append(float(np.nanmedian(residual(out / "proj" / f"p_{name}", stars))))
        after.append(float(np.nanmedian(residual(out / "corr" / f"c_{name}", stars))))
    mosaic = residual(out / "mosaic.fits", stars)
    mosaic = mosaic[np.isfinite(mosaic)]
    spread_before, spread_after = np.ptp(before), np.ptp(after)
    seam = float(np.std(mosaic - np.median(mosaic)))
    print(f"mosaic {png} {width}x{height}; tile background spread: injected "
          f"{np.ptp([t['offset'] for t in truth['tiles'].values()]):.2f}, before matching "
          f"{spread_before:.2f}, after {spread_after:.2f}; mosaic - sky std {seam:.2f}")
    if [width, height] != truth["mosaic"]:
        print("check_mosaic: PNG size differs from the region", file=sys.stderr)
        return 1
    if not spread_after < 0.05 * spread_before:
        print("check_mosaic: background offsets were not removed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
