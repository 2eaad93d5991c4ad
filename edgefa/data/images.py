"""Image reading that rejects bad files with one clear reason, and 3DDFA-style cropping."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import cv2
import numpy as np

from edgefa.errors import EdgefaError
from edgefa.fileio import read_regular_bytes

# a 1 MB PNG can claim 60000 x 60000 pixels (a 10 GB decode); faces need far less than this
MAX_IMAGE_PIXELS = 50_000_000
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn segment, walking the marker segments before the scan."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no frame header before it
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header states it (PNG, JPEG, BMP), read before any decoding;
    None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)  # negative height: rows stored top-down
    return None


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise EdgefaError(f"{path}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the "
                          f"cap of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (edgefa.data.images.MAX_IMAGE_PIXELS)")


def read_image(path: str | Path) -> np.ndarray:
    """An 8-bit 3-channel image as BGR uint8 (H, W, 3); anything else is an EdgefaError."""
    path = Path(path)
    return decode_image(read_regular_bytes(path, "image"), path)  # a FIFO named x.jpg would block a plain read


def decode_image(data: bytes, path: str | Path) -> np.ndarray:
    """``read_image`` for bytes already read (``path`` names them in errors, e.g. ``blob.bin[12]``)."""
    if not data:
        raise EdgefaError(f"{path}: empty file")
    # OpenCV decodes a truncated JPEG/PNG into a half-grey image with only a warning; catch it first
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise EdgefaError(f"{path}: truncated JPEG (no end-of-image marker)")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        raise EdgefaError(f"{path}: truncated PNG (no IEND chunk)")
    size = header_size(data)
    if size is not None:  # before decoding: the decode is where the memory goes
        _check_pixels(path, *size)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. over OpenCV's own pixel limit in a format we do not parse
        raise EdgefaError(f"{path}: not a readable image (OpenCV: {str(exc).strip().splitlines()[-1][:120]})") from None
    if image is None:
        raise EdgefaError(f"{path}: not a readable image")
    _check_pixels(path, image.shape[1], image.shape[0])
    if image.dtype != np.uint8:
        bits = image.dtype.itemsize * 8
        raise EdgefaError(f"{path}: {bits}-bit image ({image.dtype}); edgefa expects 8-bit colour images")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        raise EdgefaError(f"{path}: grayscale image (1 channel); edgefa expects 3-channel colour images")
    if channels == 4:
        raise EdgefaError(f"{path}: RGBA image (4 channels, alpha); edgefa expects 3-channel colour images")
    if channels != 3:
        raise EdgefaError(f"{path}: {channels}-channel image; edgefa expects 3-channel colour images")
    return image


def crop_resize(image: np.ndarray, roi_box, size: int) -> np.ndarray:
    """Crop ``roi_box`` (x1 y1 x2 y2, may leave the image: zero padded) and resize to size x size.

    Same as 3DDFA-V2's ``crop_img`` + ``cv2.resize``, so crops match the published protocol.
    """
    h, w = image.shape[:2]
    sx, sy, ex, ey = (int(round(v)) for v in roi_box)
    dh, dw = ey - sy, ex - sx
    if dh <= 0 or dw <= 0:
        raise EdgefaError(f"empty crop box {list(roi_box)}")
    out = np.zeros((dh, dw, 3), dtype=np.uint8)
    dsx, dsy = max(0, -sx), max(0, -sy)
    sx, sy = max(0, sx), max(0, sy)
    dex, dey = dw - max(0, ex - w), dh - max(0, ey - h)
    ex, ey = min(ex, w), min(ey, h)
    if ex > sx and ey > sy:
        out[dsy:dey, dsx:dex] = image[sy:ey, sx:ex]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


def box_from_landmarks(points: np.ndarray) -> np.ndarray:
    """3DDFA-V2's ``parse_roi_box_from_landmark``: a square box around (N, 2+) points."""
    pts = np.asarray(points, dtype=np.float64)
    x1, y1 = np.nanmin(pts[:, 0]), np.nanmin(pts[:, 1])
    x2, y2 = np.nanmax(pts[:, 0]), np.nanmax(pts[:, 1])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    radius = max(x2 - x1, y2 - y1) / 2
    llength = math.sqrt(2 * (2 * radius) ** 2)
    return np.array([cx - llength / 2, cy - llength / 2, cx + llength / 2, cy + llength / 2], dtype=np.float32)
