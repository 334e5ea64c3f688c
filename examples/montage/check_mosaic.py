"""Prove the mosaic is real: right size, a valid PNG, and the injected offsets are gone.

make_sky.py added a different constant to every tile; Montage's mDiffFit/mBgModel/mBackground
chain must remove those differences (up to one global constant, which no mosaic can know).
Measured, each against what a naive mosaic (no background matching) would have:

* tile levels: the median of (image - true sky) per tile, for the projected tiles (naive)
  and the corrected ones; their spread must shrink to a small fraction;
* corrections: projected - corrected level per tile must equal the injected offset (minus the
  common constant);
* overlaps (model-free): the median difference of two tiles on their shared pixels;
* the mosaic itself: the median of (mosaic - true sky) over every tile's footprint, for
  mAdd's mosaic and for a naive mean of the projected tiles.

Exit 0 iff every check passes; otherwise a line says which one failed and by how much.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from make_sky import PIXEL_DEG, sky

FRACTION = 0.05  # what may remain of the injected spread, for every measure


def read_fits(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """Primary header (values as text) and image of a single-HDU FITS file."""
    raw = path.read_bytes()
    header: dict[str, str] = {}
    offset, ended = 0, False
    while not ended:
        block = raw[offset:offset + 2880].decode("ascii")
        offset += 2880
        for card in (block[i:i + 80] for i in range(0, 2880, 80)):
            key = card[:8].strip()
            if key == "END":
                ended = True
                break
            if card[8:10] == "= ":
                header[key] = card[10:].split("/")[0].strip().strip("'").strip()
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    dtype = {"-64": ">f8", "-32": ">f4"}[header["BITPIX"]]
    data = np.frombuffer(raw, dtype=dtype, count=nx * ny, offset=offset).reshape(ny, nx)
    return header, data.astype(float)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG whose chunks all have valid CRCs and that ends in IEND."""
    raw = path.read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("no PNG signature")
    pos, kinds = 8, []
    while pos < len(raw):
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        kinds.append(kind)
        pos += 12 + length
    if kinds[0] != b"IHDR" or kinds[-1] != b"IEND" or b"IDAT" not in kinds:
        raise ValueError(f"chunks {kinds} are not IHDR..IDAT..IEND")
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


class Region:
    """The mosaic's pixel grid (region.hdr): places region-aligned images and the true sky."""

    def __init__(self, header: dict[str, str], stars: np.ndarray) -> None:
        self.nx, self.ny = int(header["NAXIS1"]), int(header["NAXIS2"])
        self.crpix = float(header["CRPIX1"]), float(header["CRPIX2"])
        j, i = np.mgrid[1:self.ny + 1, 1:self.nx + 1].astype(float)
        self.sky = sky(-PIXEL_DEG * (i - self.crpix[0]), PIXEL_DEG * (j - self.crpix[1]), stars)

    def place(self, path: Path) -> np.ndarray:
        """A projected/corrected tile on the full region grid (NaN outside it).

        mProjectPP keeps the region's CRVAL and CDELT and shifts CRPIX by whole pixels.
        """
        header, data = read_fits(path)
        assert abs(abs(float(header["CDELT1"])) - PIXEL_DEG) < 1e-12
        di = round(self.crpix[0] - float(header["CRPIX1"]))
        dj = round(self.crpix[1] - float(header["CRPIX2"]))
        full = np.full((self.ny, self.nx), np.nan)
        ny, nx = data.shape
        j0, i0 = max(dj, 0), max(di, 0)
        j1, i1 = min(dj + ny, self.ny), min(di + nx, self.nx)
        full[j0:j1, i0:i1] = data[j0 - dj:j1 - dj, i0 - di:i1 - di]
        return full


def measure(out: Path) -> dict[str, Any]:
    """All numbers of the checks; raises ValueError when an output is missing or malformed."""
    truth = json.loads((out / "truth.json").read_text())
    names = list(truth["tiles"])
    offsets = np.array([truth["tiles"][n]["offset"] for n in names])
    for path in (out / "mosaic.fits", out / "mosaic.png"):
        if not path.exists():
            raise ValueError(f"{path} is missing")
    header, mosaic = read_fits(out / "mosaic.fits")
    png = png_size(out / "mosaic.png")
    region = Region(header, np.array(truth["stars"]))
    proj = [region.place(out / "proj" / f"p_{n}") for n in names]
    corr = [region.place(out / "corr" / f"c_{n}") for n in names]
    before = np.array([np.nanmedian(p - region.sky) for p in proj])
    after = np.array([np.nanmedian(c - region.sky) for c in corr])
    corrections = before - after
    recovered = corrections - offsets
    naive_pairs, matched_pairs = [], []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            shared = np.isfinite(proj[a]) & np.isfinite(proj[b])
            if shared.sum() >= 100:
                naive_pairs.append(np.median(proj[a][shared] - proj[b][shared]))
                shared = np.isfinite(corr[a]) & np.isfinite(corr[b])
                matched_pairs.append(np.median(corr[a][shared] - corr[b][shared]))
    stack = np.stack(proj)  # a naive mosaic: what mAdd would give without matching
    count = np.isfinite(stack).sum(axis=0)
    naive = np.where(count > 0, np.nansum(stack, axis=0) / np.maximum(count, 1), np.nan)
    footprints = [np.isfinite(p) & np.isfinite(mosaic) for p in proj]
    return {
        "tiles": len(names), "injected": np.ptp(offsets),
        "fits_size": [region.nx, region.ny], "png_size": list(png), "expected": truth["mosaic"],
        "before": np.ptp(before), "after": np.ptp(after),
        "correction_error": np.ptp(recovered),  # the common constant is free
        "pairs": len(naive_pairs), "overlap_naive": np.max(np.abs(naive_pairs)),
        "overlap_matched": np.max(np.abs(matched_pairs)),
        "mosaic_naive": np.ptp([np.median((naive - region.sky)[f]) for f in footprints]),
        "mosaic_matched": np.ptp([np.median((mosaic - region.sky)[f]) for f in footprints]),
        "coverage": float(np.isfinite(mosaic).mean()),
    }


def failures(m: dict[str, Any]) -> list[str]:
    """The checks that did not pass, each with its numbers."""
    bad = []
    if m["fits_size"] != m["expected"] or m["png_size"] != m["expected"]:
        bad.append(f"mosaic.fits {m['fits_size']} / mosaic.png {m['png_size']} differ from the "
                   f"region {m['expected']}")
    if m["coverage"] < 0.99:
        bad.append(f"only {m['coverage']:.1%} of the mosaic has data")
    limit = FRACTION * m["injected"]
    for key, what in (("after", "tile level spread after mBackground"),
                      ("correction_error", "spread of (correction - injected offset)"),
                      ("overlap_matched", "largest overlap difference after matching"),
                      ("mosaic_matched", "spread of mosaic level over tile footprints")):
        if not m[key] < limit:
            bad.append(f"{what} is {m[key]:.2f}, not below {limit:.2f} "
                       f"({FRACTION:.0%} of the injected spread {m['injected']:.2f})")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    out = parser.parse_args().outdir
    try:
        m = measure(out)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        print(f"check_mosaic: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"mosaic {out / 'mosaic.png'} {m['png_size'][0]}x{m['png_size'][1]}, "
          f"{m['tiles']} tiles, {m['pairs']} overlaps, coverage {m['coverage']:.1%}; "
          f"tile background spread: injected {m['injected']:.2f}, before matching "
          f"{m['before']:.2f}, after {m['after']:.2f}; correction vs injected spread "
          f"{m['correction_error']:.2f}")
    print(f"  overlap max |A-B|: naive {m['overlap_naive']:.2f}, matched "
          f"{m['overlap_matched']:.2f}; mosaic level spread over tiles: naive "
          f"{m['mosaic_naive']:.2f}, mAdd {m['mosaic_matched']:.2f}")
    bad = failures(m)
    for line in bad:
        print(f"check_mosaic: FAILED: {line}", file=sys.stderr)
    if not bad:
        print("check_mosaic: OK: the injected background offsets were removed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
