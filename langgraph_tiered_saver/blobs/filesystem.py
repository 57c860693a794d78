"""Blobs as files on a local (or network-mounted) filesystem: the default blob store.

Layout: `root/ab/cd/<digest>` (two fan-out levels keep directories small). Writes go to a
temporary file in the target directory, are fsynced, then `os.replace`d into place, so a reader
never sees a partial blob and concurrent writers of the same digest (same bytes by definition)
simply replace each other. Reads re-hash the bytes, so tampering or truncation is reported
as `CorruptDataError` instead of being fed to the deserializer.

Fan-out directories are never removed by `delete`: removing them would race with a concurrent
`put` into the same directory, and there are at most 65,536 of them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from langgraph_tiered_saver.blobs.base import (
    BlobMissingError,
    check_content,
    is_digest,
    validate_digest,
)

_TMP_PREFIX = ".tmp-"


class FilesystemBlobStore:
    """Content-addressed files under `root` (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FilesystemBlobStore({str(self.root)!r})"

    def path_for(self, digest: str) -> Path:
        """Where the blob with `digest` lives (whether or not it exists)."""
        validate_digest(digest)
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, digest: str, data: bytes) -> None:
        path = self.path_for(digest)
        check_content(digest, data, "the data given to put()")
        if path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    def get(self, digest: str) -> bytes:
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobMissingError(f"blob {digest} is missing from {self.root}") from None
        return check_content(digest, data, str(path))

    def delete(self, digest: str) -> None:
        self.path_for(digest).unlink(missing_ok=True)

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def list_digests(self) -> Iterator[str]:
        """Digests of the files in the layout; temporary files and strays are skipped."""
        for first in _subdirs(self.root):
            for second in _subdirs(Path(first.path)):
                with os.scandir(second.path) as entries:
                    for entry in entries:
                        name = entry.name
                        if (
                            is_digest(name)
                            and name[:2] == first.name
                            and name[2:4] == second.name
                            and entry.is_file(follow_symlinks=False)
                        ):
                            yield name


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _fsync_dir(path: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
