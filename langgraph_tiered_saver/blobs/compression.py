"""Optional zstd compression of offloaded values.

Uses the `zstandard` package when it is importable (`pip install 'langgraph-tiered-saver[zstd]'`).
Without it, `maybe_compress` stores values raw and `decompress` refuses compressed blobs with a
clear error, so a deployment that lacks zstd never silently misreads data written by one that has
it. Checkpoints are mostly JSON/msgpack, which zstd shrinks several-fold at level 3 cheaply.
"""

from __future__ import annotations

from typing import Any

from langgraph_tiered_saver.errors import ConfigError, CorruptDataError

DEFAULT_LEVEL = 3
_zstd: Any
try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - exercised where zstandard is absent
    _zstd = None

ZSTD_AVAILABLE = _zstd is not None


def maybe_compress(data: bytes, threshold: int, level: int = DEFAULT_LEVEL) -> tuple[bytes, bool]:
    """Compress `data` when it is at least `threshold` bytes, zstd is installed and it pays.

    Returns `(bytes_to_store, compressed)`. Incompressible data (already compressed media, random
    bytes) is kept raw, so `compressed` is only True when the frame is smaller.
    """
    if _zstd is None or threshold < 0 or len(data) < threshold:
        return data, False
    frame: bytes = _zstd.ZstdCompressor(level=level, write_content_size=True).compress(data)
    if len(frame) >= len(data):
        return data, False
    return frame, True


def decompress(data: bytes, max_size: int | None = None) -> bytes:
    """Inverse of `maybe_compress` for a compressed blob; `CorruptDataError` on a bad frame.

    `max_size` caps the output (a guard against decompression bombs in foreign data).
    """
    if _zstd is None:
        raise ConfigError(
            "this blob is zstd-compressed but the 'zstandard' package is not installed: "
            "pip install 'langgraph-tiered-saver[zstd]'"
        )
    try:
        declared = _zstd.get_frame_parameters(data).content_size
        if declared == _zstd.CONTENTSIZE_UNKNOWN:
            # Frames we write carry their size; a frame without one needs an explicit cap.
            if max_size is None:
                raise CorruptDataError("zstd frame does not declare its size and no cap was given")
        elif max_size is not None and declared > max_size:
            raise CorruptDataError(
                f"zstd frame declares {declared} bytes, more than the {max_size} allowed"
            )
        out: bytes = _zstd.ZstdDecompressor().decompress(data, max_output_size=max_size or 0)
    except _zstd.ZstdError as exc:
        raise CorruptDataError(f"blob is not a valid zstd frame: {exc}") from exc
    return out
