"""Writes a kill cannot cut in half: every file a stage leaves on the job's storage goes through here.

A whole file (a summary, a report, a fingerprint, the teacher's finished answers) is written
to `<name>.tmp` in the same directory, flushed, fsynced and renamed over the old one, and the
directory is fsynced: a reader sees the old file or the whole new one, even after a power cut.
A directory (a checkpoint, the student) is filled under `<name>.tmp` and renamed the same way.
A file that grows (a shard's `.partial` records) is appended through `appending`; its reader
cuts a torn last line (`generation.files.cut_torn_tail`).

Fault injection, for tests: with DISTILLERY_FAULT_AFTER_BYTES=N in its environment a process
dies (exit 137, as SIGKILL leaves it, with no cleanup) once N bytes have gone through this
module, after writing the part of the write that fits: the torn state a kill leaves on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FAULT_ENV = "DISTILLERY_FAULT_AFTER_BYTES"
KILLED_EXIT_CODE = 137  # what a container's status shows for SIGKILL
TMP = ".tmp"

_written = [0]  # bytes written through this module by this process (the fault budget's meter)


def _budget() -> int | None:
    value = os.environ.get(FAULT_ENV)
    return int(value) if value else None


class _Counted:
    """A file handle whose writes are metered (and cut short when the fault budget runs out)."""

    def __init__(self, handle: IO[Any]):
        self._handle = handle

    def write(self, data: Any) -> int:
        budget = _budget()
        size = len(data.encode() if isinstance(data, str) else data)
        if budget is not None and _written[0] + size > budget:
            keep = max(0, budget - _written[0])
            part = data.encode()[:keep] if isinstance(data, str) else bytes(data)[:keep]
            if "b" not in self._handle.mode:
                self._handle.flush()
                self._handle.buffer.write(part)  # bytes: a cut may fall inside a UTF-8 character
            else:
                self._handle.write(part)
            self._handle.flush()
            os._exit(KILLED_EXIT_CODE)
        _written[0] += size
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:  # flush, tell, seek, fileno... of the real handle
        return getattr(self._handle, name)


def _spend(size: int) -> None:
    """Meter `size` bytes written by a library into a directory being replaced (torch, transformers)."""
    budget = _budget()
    if budget is not None and _written[0] + size > budget:
        os._exit(KILLED_EXIT_CODE)
    _written[0] += size


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (where the platform allows opening a directory)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def temporary(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (same directory, so the rename is atomic)."""
    return path.with_name(path.name + TMP)


@contextlib.contextmanager
def replacing(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A handle on `<path>.tmp`; when the block ends it is fsynced and renamed over `path`.
    If the block raises, the old file stays as it was and the temporary one is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield _Counted(handle)  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as handle:
        handle.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path, binary=True) as handle:
        handle.write(data)


def write_json(path: Path, value: Any, sort_keys: bool = True) -> None:
    """JSON, indented, ending in a newline."""
    write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")


def copy_file(source: Path, target: Path) -> None:
    """`source`'s bytes to `target`, replaced whole."""
    with open(source, "rb") as reading, replacing(target, binary=True) as writing:
        shutil.copyfileobj(reading, writing)


@contextlib.contextmanager
def appending(path: Path) -> Iterator[IO[Any]]:
    """A metered handle appending to `path`; every write is flushed to the OS by the caller, and the
    file is fsynced when the block ends. Its reader must cut a torn last line."""
    with open(path, "a", encoding="utf-8") as handle:
        yield _Counted(handle)  # type: ignore[misc]
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def replacing_directory(path: Path) -> Iterator[Path]:
    """An empty `<path>.tmp` directory to fill; when the block ends its files are fsynced and it is
    renamed to `path` (an old `path` is removed first: a kill in between leaves no `path`, never a mix).
    If the block raises, `path` stays as it was."""
    path = Path(path)
    tmp = temporary(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _spend(file.stat().st_size)
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(path.parent)
