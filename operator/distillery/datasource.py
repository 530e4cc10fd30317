"""Inputs by location: a path on the job's storage or an object-store URI, in JSONL or Parquet, streamed.

One reader (`iter_records`) serves generation's prompts, evaluation's validation prompts and
the check stage. JSONL is read line by line (the record's number is its 1-based line, blank
lines skipped); Parquet in batches of rows with pyarrow (the number is the 1-based row). Memory
holds one block or one batch, never the file. URIs go through fsspec (`s3fs` for `s3://`),
with the endpoint and region of `storage.objectStore`; the credentials come from the
environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which the pods get from the Secret by
reference), so they never pass through the spec, a log line or a report.

`identity` says what an input is without reading it whole (an object's ETag, size and time; a
local file's sha256): what the stage fingerprints and the report's lineage record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distillery.api import ObjectStoreSpec, is_uri
from distillery.contract.summaries import FailureReason, StageFailed

PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_BATCH_ROWS = 1024
# Reads from the store: blocks of this size (a ranged GET each), not the whole object.
BLOCK_BYTES = 8 << 20
# A store that does not answer fails the check in about a minute, not after botocore's long default.
CONNECT_TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 3
_CHUNK = 1 << 20


class InputError(StageFailed, ValueError):
    """An input that cannot be read or parsed; the message names the field, the location and the line."""

    reason = FailureReason.invalid_input


# ------------------------------------------------------------------ where an input is


def storage_options(store: ObjectStoreSpec | None) -> dict[str, Any]:
    """fsspec/s3fs options from `storage.objectStore` (never credentials: botocore reads those from the env)."""
    client: dict[str, Any] = {}
    if store is not None and store.endpoint_url:
        client["endpoint_url"] = store.endpoint_url
    if store is not None and store.region:
        client["region_name"] = store.region
    config = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "retries": {"max_attempts": MAX_ATTEMPTS}}
    return {"client_kwargs": client, "config_kwargs": config, "use_listings_cache": False}


def resolve(location: str | Path, root: Path | str | None) -> str:
    """A URI as is; a path relative to the storage root made absolute."""
    text = str(location)
    if is_uri(text):
        return text
    path = Path(text)
    return str(path if path.is_absolute() or root is None else Path(root) / path)


def filesystem(location: str, store: ObjectStoreSpec | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path in it) for a resolved location."""
    import fsspec

    if is_uri(location):
        options = storage_options(store) if location.startswith("s3://") else {}
        return fsspec.core.url_to_fs(location, **options)
    return fsspec.filesystem("file"), location


def input_format(location: str, declared: str = "auto") -> str:
    """`jsonl` or `parquet`: as declared (data.format), else by the extension."""
    if declared != "auto":
        return declared
    name = location.lower().removesuffix(".gz").removesuffix(".zst")
    return "parquet" if name.endswith(PARQUET_SUFFIXES) else "jsonl"


def describe(error: BaseException, field: str, location: str) -> InputError:
    """An I/O error as a failure that names the field and the location, with a reason a program can match."""
    where = f"{field} ({location})" if field else location
    if isinstance(error, FileNotFoundError):
        failure = InputError(f"{where}: does not exist", FailureReason.input_not_found)
    elif isinstance(error, PermissionError):
        failure = InputError(
            f"{where}: access denied; check storage.objectStore.credentialsSecret and the bucket's policy",
            FailureReason.access_denied,
        )
    else:
        text = getattr(error, "strerror", None) or str(error) or type(error).__name__
        failure = InputError(f"{where}: cannot read the input: {text}", FailureReason.input_unreadable)
    return failure


# ------------------------------------------------------------------ reading records


def iter_records(
    location: str | Path,
    *,
    root: Path | str | None = None,
    field: str = "",
    declared_format: str = "auto",
    store: ObjectStoreSpec | None = None,
    select: Callable[[int], bool] | None = None,
    limit: int | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(number, record) for each record, streamed; raises InputError naming the field, location and line/row.

    `select(position)` (0-based, blank lines not counted) picks records before they are parsed,
    so a shard does not decode the lines of the others; `limit` stops after that many positions.
    """
    resolved = resolve(location, root)
    kind = input_format(resolved, declared_format)
    try:
        fs, path = filesystem(resolved, store)
        handle = fs.open(
            path,
            "rb",
            **({"block_size": BLOCK_BYTES} if is_uri(resolved) else {}),
            **({"compression": "infer"} if kind == "jsonl" else {}),
        )
    except Exception as error:
        raise describe(error, field, resolved) from None
    where = f"{field} ({resolved})" if field else resolved
    with handle:
        try:
            reader = (_parquet if kind == "parquet" else _jsonl)(handle, where, select or _all)
            for position, (number, record) in enumerate(reader):
                if limit is not None and position >= limit:
                    return
                if record is not None:
                    yield number, record
        except InputError:
            raise
        except (OSError, ValueError) as error:
            raise describe(error, field, resolved) from None


def _all(position: int) -> bool:
    return True


def _jsonl(handle: Any, where: str, select: Callable[[int], bool]) -> Iterator[tuple[int, dict | None]]:
    """(line number, record) per record; None for a record `select` leaves out (not parsed)."""
    position = -1
    for number, raw in enumerate(handle, 1):
        if not raw.strip():
            continue
        position += 1
        if not select(position):
            yield number, None
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            detail = (
                f"{error.msg} at column {error.colno}" if isinstance(error, json.JSONDecodeError) else error
            )
            raise InputError(f"{where}: line {number}: not valid JSON: {detail}") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: line {number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _parquet(handle: Any, where: str, select: Callable[[int], bool]) -> Iterator[tuple[int, dict | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(handle)
    except pa.ArrowInvalid as error:
        raise InputError(f"{where}: not a Parquet file: {error}") from None
    number = 0
    for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for record in batch.to_pylist():
            number += 1
            yield number, (record if select(number - 1) else None)


# ------------------------------------------------------------------ identity and the check


def identity(
    location: str | Path,
    *,
    root: Path | str | None = None,
    store: ObjectStoreSpec | None = None,
    field: str = "",
) -> dict[str, Any]:
    """What an input is, without reading an object whole: its ETag, size and modification time in a store;
    a local file's sha256 and size. Raises InputError when it cannot be looked at."""
    resolved = resolve(location, root)
    try:
        if not is_uri(resolved):
            path = Path(resolved)
            return {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        fs, path = filesystem(resolved, store)
        info = fs.info(path)
    except Exception as error:
        raise describe(error, field, resolved) from None
    if info.get("type") == "directory":
        raise InputError(f"{field} ({resolved}): is a prefix, not an object", FailureReason.input_not_found)
    modified = info.get("LastModified") or info.get("mtime")
    return {
        "etag": str(info.get("ETag") or info.get("etag") or "").strip('"') or None,
        "bytes": info.get("size"),
        "modified": str(modified) if modified is not None else None,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def check_input(
    location: str,
    *,
    root: Path | str | None,
    field: str,
    declared_format: str = "auto",
    store: ObjectStoreSpec | None = None,
    records: int = 3,
    validate: Any = None,
) -> dict[str, Any]:
    """Open an input, parse its first `records` records (and `validate(record)` each), and return its identity.

    Raises InputError with the reason (InputNotFound, AccessDenied, InputUnreadable, InvalidInput).
    """
    found = identity(location, root=root, store=store, field=field)
    seen = 0
    for number, record in iter_records(
        location, root=root, field=field, declared_format=declared_format, store=store
    ):
        if validate is not None:
            try:
                validate(record)
            except ValueError as error:
                unit = "row" if input_format(str(location), declared_format) == "parquet" else "line"
                raise InputError(f"{field} ({resolve(location, root)}): {unit} {number}: {error}") from None
        seen += 1
        if seen >= records:
            break
    if seen == 0:
        raise InputError(f"{field} ({resolve(location, root)}): has no records", FailureReason.invalid_input)
    return {**found, "format": input_format(str(location), declared_format), "checked": seen}
