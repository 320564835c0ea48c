"""images.py
=========
Read and write the pictures of the image task: PNG (8 and 16 bit), JPEG, TIFF (8/16 bit, float, multi-page), BMP,
WebP, GIF and OpenEXR, grey, grey + alpha, RGB or RGBA.

``read_image`` returns the pixels as they are stored (uint8, uint16 or float32, shape (H, W, C)), never a float copy
of a whole large picture: the image task converts only its batches. Frames are the file's own: row 0 is the top row,
column 0 the left column. Bad files get one line that says what is wrong: a truncated or corrupt file, a picture
too small to fit, one too large for this machine's memory, an unsupported sample type. Multi-frame files (animated
GIF, multi-page TIFF) are read at one frame, and the report says which.

Why not imageio alone: Pillow (imageio's PNG plugin) reads and writes 16-bit RGB PNGs as 8-bit, so 16-bit PNGs go
through pypng; OpenEXR has no imageio plugin without a downloaded binary, so EXR goes through the OpenEXR package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fieldstudio.errors import FieldStudioError
from fieldstudio.io import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".exr")
MIN_SIDE = 16  # smaller pictures are refused: SSIM needs 11 x 11 and a field of a few pixels says nothing
# Memory needed per stored sample while fitting and scoring: the stored value, a float32 reconstruction, a float32
# error and SSIM's float64 maps of one channel at a time (measured on 4k RGB: ~20 bytes per value at the peak).
BYTES_PER_VALUE = 24


@dataclass
class Picture:
    """A picture as stored. ``pixels``: (H, W, C) uint8 | uint16 | float32; ``bits``: 8, 16 or 32 (float)."""

    pixels: np.ndarray
    bits: int
    name: str
    frame: int = 0
    frames: int = 1
    notes: list = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def channels(self) -> int:
        return self.pixels.shape[2]

    @property
    def peak(self) -> float:
        """The value that means full intensity: 255, 65535, or 1 for float pictures."""
        return {8: 255.0, 16: 65535.0}.get(self.bits, 1.0)

    def as_float(self, rows: slice = slice(None)) -> np.ndarray:
        """Rows of the picture as float32 in [0, 1] (float pictures as they are)."""
        return self.pixels[rows].astype(np.float32) / np.float32(self.peak)

    def report(self) -> dict:
        return {"kind": "image", "file_name": self.name, "width": self.width, "height": self.height,
                "channels": self.channels, "bits": self.bits, "frame": self.frame, "frames": self.frames,
                "notes": list(self.notes)}


def _free_memory() -> int:
    """Bytes of memory this process could still use (available RAM)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits_memory(name: str, width: int, height: int, channels: int) -> None:
    """Refuse a picture whose fit would not fit in the memory available now (one line, with what to do)."""
    need = width * height * channels * BYTES_PER_VALUE
    free = _free_memory()
    if need > 0.8 * free:
        raise FieldStudioError(
            f"{name} is {width} x {height} pixels ({width * height / 1e6:.0f} Mpx): fitting it needs about "
            f"{need / 2**30:.1f} GB of memory and {free / 2**30:.1f} GB are free; crop or downscale it first "
            f"(about {int((0.8 * free / (BYTES_PER_VALUE * channels)) ** 0.5)} pixels a side fit)")


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) < 25 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise FieldStudioError(f"{path.name} is not a PNG file (its first bytes are not a PNG signature); "
                               "is it another format with a wrong suffix, or truncated?")
    return head[24]


def _corrupt(path: Path, err: BaseException) -> FieldStudioError:
    why = str(err).splitlines()[0] if str(err) else type(err).__name__
    return FieldStudioError(f"cannot read image {path.name}: the file is truncated or corrupt ({why}); "
                            "re-export or re-download it")


def _read_png16(path: Path) -> np.ndarray:
    import png

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        planes = info["planes"]
        check_fits_memory(path.name, width, height, planes)
        out = np.empty((height, width * planes), np.uint16)
        for i, row in enumerate(rows):
            out[i] = row
    except FieldStudioError:
        raise
    except Exception as err:
        raise _corrupt(path, err) from None
    return out.reshape(height, width, planes)


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = exr.channels()
            names = [c for c in ("R", "G", "B", "A") if c in channels] if "R" in channels else []
            if not names:  # grey: Y (and A), else whatever the file names its channels
                names = [c for c in ("Y", "A") if c in channels] or sorted(channels)[:4]
            planes = [np.asarray(channels[c].pixels, dtype=np.float32) for c in names]
    except Exception as err:
        raise _corrupt(path, err) from None
    return np.stack(planes, axis=-1)


def _read_tiff(path: Path, frame: int) -> tuple[np.ndarray, int]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            if frame >= pages:
                raise FieldStudioError(f"{path.name} has {pages} page(s); [image] frame {frame} does not exist "
                                       f"(pages count from 0)")
            page = tif.pages[frame]
            shape = page.shape
            h, w = shape[0], shape[1]
            check_fits_memory(path.name, w, h, shape[2] if len(shape) > 2 else 1)
            return page.asarray(), pages
    except FieldStudioError:
        raise
    except Exception as err:
        raise _corrupt(path, err) from None


def _read_pillow(path: Path, frame: int) -> tuple[np.ndarray, int, list]:
    """8-bit formats through imageio's Pillow plugin; palette pictures become RGB(A), as they look."""
    import imageio.v3 as iio
    from PIL import Image

    notes = []
    Image.MAX_IMAGE_PIXELS = None  # our own memory check replaces Pillow's decompression-bomb guard
    try:
        with Image.open(path) as im:
            w, h, mode = im.width, im.height, im.mode
            frames = int(getattr(im, "n_frames", 1))
    except Exception as err:
        raise _corrupt(path, err) from None
    if frame >= frames:
        raise FieldStudioError(f"{path.name} has {frames} frame(s); [image] frame {frame} does not exist "
                               "(frames count from 0)")
    check_fits_memory(path.name, w, h, 4)
    if mode == "P" or mode == "PA":
        notes.append("palette picture: its colours are fitted as RGB(A)")
    if mode in ("I", "I;16", "I;16B", "F"):
        notes.append(f"Pillow mode {mode}: values read as they are stored")
    try:
        pixels = iio.imread(path, index=frame, plugin="pillow")
    except Exception as err:
        raise _corrupt(path, err) from None
    return np.asarray(pixels), frames, notes


_last: tuple = (None, None)  # (key, Picture): resolving a request and building its task read one picture once


def read_image(path: str | Path, frame: int = 0) -> Picture:
    """Read ``path`` (frame ``frame`` of a multi-frame file) as a :class:`Picture`; FieldStudioError on bad input.
    The last picture read is kept (while its file is unchanged): a run reads its input several times."""
    global _last
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, frame)
    except OSError:
        key = None
    if key is not None and _last[0] == key:
        return _last[1]
    picture = _read_image(path, frame)
    _last = (key, picture)
    return picture


def _read_image(path: Path, frame: int) -> Picture:
    if not path.exists():
        raise FieldStudioError(f"input file not found: {path}")
    if path.is_dir():
        raise FieldStudioError(f"{path} is a folder; give a picture file ({' '.join(IMAGE_SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise FieldStudioError(f"{path.name}: unsupported picture format {suffix!r}; use one of "
                               f"{' '.join(IMAGE_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise FieldStudioError(f"{path.name} is empty (0 bytes); re-export or re-download it")
    notes, frames = [], 1
    if suffix == ".png" and _png_bit_depth(path) == 16:
        pixels = _read_png16(path)
    elif suffix == ".exr":
        pixels = _read_exr(path)
    elif suffix in (".tif", ".tiff"):
        pixels, frames = _read_tiff(path, frame)
    else:
        pixels, frames, notes = _read_pillow(path, frame)
    if frames > 1:
        kind = "pages" if suffix in (".tif", ".tiff") else "frames"
        notes.append(f"{path.name} has {frames} {kind}: {kind[:-1]} {frame} is fitted (choose another with "
                     "[image] frame in a --config file)")
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4:
        raise FieldStudioError(f"{path.name} has pixels of shape {pixels.shape[2:]} (a volume or more than 4 "
                               "channels); give a grey, grey + alpha, RGB or RGBA picture")
    h, w = pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise FieldStudioError(f"{path.name} is {w} x {h} pixels; a picture needs at least {MIN_SIDE} x "
                               f"{MIN_SIDE} pixels to be fitted")
    bits = _bits(path, pixels)
    if bits == 32:
        pixels = pixels.astype(np.float32, copy=False)
        if not np.isfinite(pixels).all():
            raise FieldStudioError(f"{path.name} has NaN or infinite pixel values; fix them before fitting")
    elif bits == 16:
        pixels = pixels.astype(np.uint16, copy=False)
    return Picture(np.ascontiguousarray(pixels), bits, path.name, frame, frames, notes)


def _bits(path: Path, pixels: np.ndarray) -> int:
    if pixels.dtype == np.uint8 or pixels.dtype == np.bool_:
        return 8
    if pixels.dtype in (np.uint16, np.int16) and pixels.min() >= 0:
        return 16
    if pixels.dtype.kind == "f":
        return 32
    raise FieldStudioError(f"{path.name} stores {pixels.dtype} samples; give 8- or 16-bit unsigned or float "
                           "pixels")


# ------------------------------------------------------------------------------------------------ writing

def to_stored(values: np.ndarray, bits: int) -> np.ndarray:
    """Float pixels in [0, 1] (float pictures: as they are) -> the stored type of ``bits``, rounded and clipped."""
    if bits == 32:
        return values.astype(np.float32, copy=False)
    peak = 255.0 if bits == 8 else 65535.0
    out = np.clip(values, 0.0, 1.0) * peak + 0.5
    return out.astype(np.uint8 if bits == 8 else np.uint16)


def write_image(path: str | Path, pixels: np.ndarray) -> Path:
    """Write (H, W, C) uint8 | uint16 | float32 pixels atomically; the format follows the suffix.

    16-bit pixels need .png or .tif(f), float ones .exr or .tif(f) (other suffixes: FieldStudioError)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES or suffix == ".gif":
        raise FieldStudioError(f"cannot write {path.name}: give a .png, .jpg, .tif, .bmp, .webp or .exr file name")
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    kind = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}[pixels.dtype]
    if kind != 32 and suffix == ".exr":
        pixels = pixels.astype(np.float32) / (255.0 if kind == 8 else 65535.0)
        kind = 32
    if kind == 16 and suffix not in (".png", ".tif", ".tiff"):
        raise FieldStudioError(f"cannot write 16-bit pixels to {path.name}: use .png or .tif (or --bits 8)")
    if kind == 32 and suffix not in (".exr", ".tif", ".tiff"):
        raise FieldStudioError(f"cannot write float pixels to {path.name}: use .exr or .tif (or --bits 8/16)")
    if suffix in (".jpg", ".jpeg", ".bmp") and pixels.shape[2] in (2, 4):
        raise FieldStudioError(f"{suffix[1:].upper()} keeps no alpha channel: write {path.stem}.png instead")

    def writer(tmp: Path) -> None:
        if suffix in (".tif", ".tiff"):
            import tifffile

            c = pixels.shape[2]
            tifffile.imwrite(tmp, pixels[:, :, 0] if c == 1 else pixels, planarconfig="contig",
                             photometric="rgb" if c >= 3 else "minisblack",
                             extrasamples=("unassalpha",) if c in (2, 4) else None)
        elif suffix == ".exr":
            import OpenEXR

            names = {1: "Y", 2: "YA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
            names = ["Y", "A"] if names == "YA" else list(names)
            channels = {n: np.ascontiguousarray(pixels[:, :, i]) for i, n in enumerate(names)}
            with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                              channels) as exr:
                exr.write(str(tmp))
        elif suffix == ".png" and kind == 16:
            import png

            h, w, c = pixels.shape
            with open(tmp, "wb") as f:
                png.Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16).write(f, pixels.reshape(h, w * c))
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, plugin="pillow",
                        extension=suffix)
    return atomic_write(path, writer)


def error_heatmap(error: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """(H, W) absolute errors -> an (H, W, 3) uint8 heat map (black = 0, through red and yellow to white at
    ``scale``, default the 99th percentile) and the scale used."""
    if scale is None:
        scale = float(np.percentile(error, 99)) or 1e-6
    t = np.clip(error / scale, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8), scale
