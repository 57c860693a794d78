"""Blob tier: one behavioural suite run against every store, plus the pure helpers.

The S3 store runs against a real S3 HTTP endpoint on loopback: moto's server mode in a child
process (no in-process patching of boto3), with a fresh bucket per test. The Postgres store runs
on the test database (a schema per test), its operations driven by a real `SyncDriver`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import free_port
from langgraph_tiered_saver._sansio.io import SyncDriver
from langgraph_tiered_saver.blobs import (
    BlobMissingError,
    BlobPointer,
    BlobStore,
    FilesystemBlobStore,
    InMemoryBlobStore,
    PgBlobStore,
    as_ops,
    digest_of,
    is_pointer,
    load_op,
    make_pointer,
    maybe_compress,
    offload_op,
    parse_pointer,
)
from langgraph_tiered_saver.blobs import compression as compression_module
from langgraph_tiered_saver.errors import (
    ConfigError,
    CorruptDataError,
    InvalidIdError,
    TierUnavailableError,
)
from tests.fixtures import DUMMY_CREDENTIALS, DrivenStore, run_sql

# --------------------------------------------------------------------------- store harness


@dataclass
class Harness:
    """A store plus backdoors the behavioural tests need (counting, tampering)."""

    store: Any
    object_count: Callable[[], int]
    tamper: Callable[[str, bytes], None] | None


def _filesystem_harness(root: Path) -> Harness:
    store = FilesystemBlobStore(root)

    def count() -> int:
        return sum(1 for p in root.rglob("*") if p.is_file())

    def tamper(digest: str, data: bytes) -> None:
        store.path_for(digest).write_bytes(data)

    return Harness(store, count, tamper)


def _s3_harness(endpoint: str, client: Any, bucket: str) -> Harness:
    from langgraph_tiered_saver.blobs import S3BlobStore

    store = S3BlobStore(bucket, endpoint_url=endpoint, **DUMMY_CREDENTIALS)

    def count() -> int:
        return int(client.list_objects_v2(Bucket=bucket).get("KeyCount", 0))

    def tamper(digest: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=store.key_for(digest), Body=data)

    return Harness(store, count, tamper)


def _memory_harness() -> Harness:
    store = InMemoryBlobStore()
    return Harness(store, lambda: sum(1 for _ in store.list_digests()), None)


def _postgres_harness(driver: SyncDriver, schema: str) -> Harness:
    store = DrivenStore(driver, PgBlobStore(schema, "t-blobs"))
    table = f'"{schema}".blob_chunks'

    def count() -> int:
        return int(run_sql(driver, f"SELECT count(*) FROM {table} WHERE chunk = 0", fetch=True)[0][0])

    def tamper(digest: str, data: bytes) -> None:
        run_sql(driver, f"DELETE FROM {table} WHERE digest = %s", (digest,))
        run_sql(driver, f"INSERT INTO {table} VALUES ('t-blobs', %s, 0, %s)", (digest, data))

    return Harness(store, count, tamper)


@pytest.fixture(params=["memory", "filesystem", "s3", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "memory":
        return _memory_harness()
    if request.param == "filesystem":
        return _filesystem_harness(tmp_path / "blobs")
    if request.param == "postgres":
        return _postgres_harness(*request.getfixturevalue("pg_blob_schema"))
    return _s3_harness(
        request.getfixturevalue("moto_endpoint"),
        request.getfixturevalue("s3_client"),
        request.getfixturevalue("s3_bucket"),
    )


# --------------------------------------------------------------------------- behaviour


def test_satisfies_protocol(harness: Harness) -> None:
    assert isinstance(harness.store, BlobStore)


def test_round_trip_5mb(harness: Harness) -> None:
    data = os.urandom(5 * 1024 * 1024)
    digest = digest_of(data)
    harness.store.put(digest, data)
    assert harness.store.get(digest) == data


def test_empty_blob(harness: Harness) -> None:
    digest = digest_of(b"")
    harness.store.put(digest, b"")
    assert harness.store.get(digest) == b""


def test_put_is_idempotent_and_deduplicates(harness: Harness) -> None:
    data = b"the same channel value" * 100
    digest = digest_of(data)
    harness.store.put(digest, data)
    harness.store.put(digest, data)
    harness.store.put(digest, bytes(data))
    assert harness.store.get(digest) == data
    assert harness.object_count() == 1
    assert list(harness.store.list_digests()) == [digest]


def test_put_rejects_data_that_does_not_match_the_digest(harness: Harness) -> None:
    with pytest.raises(CorruptDataError):
        harness.store.put(digest_of(b"one"), b"two")
    assert harness.object_count() == 0


def test_exists_and_delete(harness: Harness) -> None:
    data = b"x" * 1000
    digest = digest_of(data)
    assert not harness.store.exists(digest)
    harness.store.put(digest, data)
    assert harness.store.exists(digest)
    harness.store.delete(digest)
    assert not harness.store.exists(digest)
    with pytest.raises(BlobMissingError):
        harness.store.get(digest)
    harness.store.delete(digest)  # absent: no error
    harness.store.put(digest, data)  # and it can come back
    assert harness.store.get(digest) == data


def test_missing_blob(harness: Harness) -> None:
    with pytest.raises(BlobMissingError) as info:
        harness.store.get(digest_of(b"never stored"))
    assert isinstance(info.value, CorruptDataError)


def test_list_digests(harness: Harness) -> None:
    assert list(harness.store.list_digests()) == []
    blobs = [f"blob {i}".encode() * (i + 1) for i in range(25)]
    for blob in blobs:
        harness.store.put(digest_of(blob), blob)
    assert sorted(harness.store.list_digests()) == sorted(digest_of(b) for b in blobs)


BAD_DIGESTS = [
    "",
    "abc",
    "A" * 64,
    "g" * 64,
    "a" * 63,
    "a" * 65,
    "../" + "a" * 61,
    "a" * 62 + "/x",
    None,
    b"a" * 64,
]


@pytest.mark.parametrize("bad", BAD_DIGESTS, ids=repr)
def test_bad_digest_is_rejected(harness: Harness, bad: Any) -> None:
    store = harness.store
    for call in (
        lambda: store.put(bad, b"data"),
        lambda: store.get(bad),
        lambda: store.delete(bad),
        lambda: store.exists(bad),
    ):
        with pytest.raises(InvalidIdError):
            call()
    assert harness.object_count() == 0


@pytest.mark.parametrize("damage", ["replaced", "truncated", "emptied"])
def test_tampered_content_is_detected(harness: Harness, damage: str) -> None:
    if harness.tamper is None:
        pytest.skip("the in-memory store has no storage to tamper with")
    data = os.urandom(4096)
    digest = digest_of(data)
    harness.store.put(digest, data)
    damaged = {"replaced": os.urandom(4096), "truncated": data[:100], "emptied": b""}[damage]
    harness.tamper(digest, damaged)
    with pytest.raises(CorruptDataError) as info:
        harness.store.get(digest)
    assert not isinstance(info.value, BlobMissingError)
    assert digest in str(info.value)


def test_concurrent_puts(harness: Harness) -> None:
    data = os.urandom(256 * 1024)
    digest = digest_of(data)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            harness.store.put(digest, data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert harness.store.get(digest) == data
    assert harness.object_count() == 1  # no temporary files left behind either


def offload_blob(store: BlobStore, value: bytes, *, compress_threshold: int) -> bytes:
    """The saver's offload op on a blocking store, run by a driver without clients."""
    return SyncDriver(None, None).run(offload_op(as_ops(store), value, compress_threshold=compress_threshold))


def load_blob(store: BlobStore, pointer: bytes | BlobPointer) -> bytes:
    return SyncDriver(None, None).run(load_op(as_ops(store), pointer))


def test_offload_and_load(harness: Harness) -> None:
    value = b'{"messages": ["' + b"hello " * 50_000 + b'"]}'
    pointer = offload_blob(harness.store, value, compress_threshold=1024)
    assert is_pointer(pointer) and len(pointer) < 100
    assert load_blob(harness.store, pointer) == value
    assert load_blob(harness.store, parse_pointer(pointer)) == value
    # the same value again is the same pointer and the same single object
    assert offload_blob(harness.store, value, compress_threshold=1024) == pointer
    assert harness.object_count() == 1


def test_load_rejects_a_pointer_whose_size_disagrees(harness: Harness) -> None:
    pointer = parse_pointer(offload_blob(harness.store, b"v" * 500, compress_threshold=10**9))
    lying = BlobPointer(pointer.digest, pointer.size + 1, pointer.compressed)
    with pytest.raises(CorruptDataError):
        load_blob(harness.store, lying)


# --------------------------------------------------------------------------- store specifics


def test_filesystem_layout_and_strays(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    data = b"layout"
    digest = digest_of(data)
    store.put(digest, data)
    assert store.path_for(digest) == tmp_path / digest[:2] / digest[2:4] / digest
    assert store.path_for(digest).read_bytes() == data
    # a crashed writer's temp file, a misplaced digest and foreign files are not blobs
    (store.path_for(digest).parent / ".tmp-abandoned").write_bytes(b"partial")
    (tmp_path / "ff" / "ff").mkdir(parents=True)
    (tmp_path / "ff" / "ff" / digest).write_bytes(data)
    (tmp_path / "README").write_text("not a blob")
    assert list(store.list_digests()) == [digest]


def test_filesystem_store_on_missing_root(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "does" / "not" / "exist")
    assert list(store.list_digests()) == []
    assert not store.exists(digest_of(b"x"))
    store.put(digest_of(b"x"), b"x")
    assert store.get(digest_of(b"x")) == b"x"


def test_s3_put_skips_upload_when_present(
    moto_endpoint: str, s3_client: Any, s3_bucket: str
) -> None:
    from langgraph_tiered_saver.blobs import S3BlobStore

    store = S3BlobStore(s3_bucket, prefix="p/", endpoint_url=moto_endpoint, **DUMMY_CREDENTIALS)
    uploads: list[str] = []
    store.client.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: uploads.append(params["Key"])
    )
    data = os.urandom(1024)
    digest = digest_of(data)
    store.put(digest, data)
    store.put(digest, data)
    store.put(digest, data)
    assert uploads == [f"p/{digest}"]


def test_s3_prefix_isolates_and_skips_foreign_keys(
    moto_endpoint: str, s3_client: Any, s3_bucket: str
) -> None:
    from langgraph_tiered_saver.blobs import S3BlobStore

    a = S3BlobStore(s3_bucket, prefix="a/", client=s3_client)
    b = S3BlobStore(s3_bucket, prefix="b/", client=s3_client)
    digest = digest_of(b"in a")
    a.put(digest, b"in a")
    s3_client.put_object(Bucket=s3_bucket, Key="a/not-a-digest", Body=b"x")
    assert list(a.list_digests()) == [digest]
    assert list(b.list_digests()) == []
    assert not b.exists(digest)


def test_s3_list_digests_paginates(moto_endpoint: str, s3_client: Any, s3_bucket: str) -> None:
    from langgraph_tiered_saver.blobs import S3BlobStore

    store = S3BlobStore(s3_bucket, client=s3_client)
    pages: list[int] = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["MaxKeys"] = 3  # S3 pages hold 1000 keys; force several pages cheaply
        pages.append(1)

    s3_client.meta.events.register("provide-client-params.s3.ListObjectsV2", small_pages)
    blobs = [str(i).encode() for i in range(10)]
    for blob in blobs:
        store.put(digest_of(blob), blob)
    assert sorted(store.list_digests()) == sorted(digest_of(b) for b in blobs)
    assert len(pages) == 4


def test_s3_unreachable_is_a_tier_error() -> None:
    pytest.importorskip("boto3")
    from botocore.config import Config

    from langgraph_tiered_saver.blobs import S3BlobStore

    store = S3BlobStore(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}),
        **DUMMY_CREDENTIALS,
    )
    with pytest.raises(TierUnavailableError) as info:
        store.exists(digest_of(b"x"))
    assert info.value.tier == "s3"


def test_s3_without_boto3_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from langgraph_tiered_saver.blobs import S3BlobStore

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"\[s3\]"):
        S3BlobStore("bucket")


# --------------------------------------------------------------------------- pointer codec

DIGEST = digest_of(b"pointer")


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024, 2**40])
def test_pointer_round_trip(compressed: bool, size: int) -> None:
    raw = make_pointer(DIGEST, size, compressed)
    assert is_pointer(raw)
    assert len(raw) < 100
    assert parse_pointer(raw) == BlobPointer(DIGEST, size, compressed)


def test_pointer_format_is_stable() -> None:
    assert make_pointer(DIGEST, 42, True) == f"lts-blob:v1:{DIGEST}:42:z".encode()
    assert make_pointer(DIGEST, 42, False) == f"lts-blob:v1:{DIGEST}:42:r".encode()


MALFORMED_POINTERS = [
    b"",
    b"lts-blob:",
    b"hello world",
    f"lts-blob:v2:{DIGEST}:42:z".encode(),
    f"lts-blob:v1:{DIGEST}:42".encode(),
    f"lts-blob:v1:{DIGEST}:42:z:extra".encode(),
    f"lts-blob:v1:{DIGEST}:42:x".encode(),
    f"lts-blob:v1:{DIGEST}:-1:z".encode(),
    f"lts-blob:v1:{DIGEST}:042:z".encode(),
    f"lts-blob:v1:{DIGEST}::z".encode(),
    f"lts-blob:v1:{DIGEST}:4 2:z".encode(),
    f"lts-blob:v1:{DIGEST.upper()}:42:z".encode(),
    f"lts-blob:v1:{DIGEST[:-1]}:42:z".encode(),
    b"lts-blob:v1:" + b"\xff" * 64 + b":42:z",
    f"lts-blob:v1:{DIGEST}:{'9' * 200}:z".encode(),
    f"LTS-BLOB:v1:{DIGEST}:42:z".encode(),
]


@pytest.mark.parametrize("raw", MALFORMED_POINTERS, ids=lambda r: repr(r[:40]))
def test_malformed_pointer_is_rejected(raw: bytes) -> None:
    with pytest.raises(CorruptDataError):
        parse_pointer(raw)


def test_pointer_rejects_non_bytes() -> None:
    with pytest.raises(CorruptDataError):
        parse_pointer(f"lts-blob:v1:{DIGEST}:42:z")  # type: ignore[arg-type]


def test_make_pointer_validates() -> None:
    with pytest.raises(InvalidIdError):
        make_pointer("nope", 1, False)
    for bad_size in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError):
            make_pointer(DIGEST, bad_size, False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- compression


def test_without_zstd_values_stay_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compression_module, "_zstd", None)
    data = b"a" * 100_000
    assert maybe_compress(data, 0) == (data, False)
    with pytest.raises(ConfigError, match=r"\[zstd\]"):
        compression_module.decompress(b"anything")


def test_zstd_compression() -> None:
    pytest.importorskip("zstandard")
    from langgraph_tiered_saver.blobs import decompress

    data = b'{"role": "assistant", "content": "refund approved"}' * 5000
    frame, compressed = maybe_compress(data, 1024)
    assert compressed and len(frame) < len(data) // 10
    assert decompress(frame) == data
    assert decompress(frame, max_size=len(data)) == data
    with pytest.raises(CorruptDataError):
        decompress(frame, max_size=len(data) - 1)  # decompression-bomb guard

    assert maybe_compress(data[:100], 1024) == (data[:100], False)  # below threshold
    noise = os.urandom(100_000)
    assert maybe_compress(noise, 1024) == (noise, False)  # does not pay
    for bad in (b"", b"garbage", frame[: len(frame) // 2]):
        with pytest.raises(CorruptDataError):
            decompress(bad)


def test_zstd_frame_without_declared_size_needs_a_cap() -> None:
    zstandard = pytest.importorskip("zstandard")
    from langgraph_tiered_saver.blobs import decompress

    data = b"z" * 10_000
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    with pytest.raises(CorruptDataError):
        decompress(frame)
    assert decompress(frame, max_size=len(data)) == data


def test_postgres_blob_is_chunked_and_a_lost_chunk_is_corruption(
    pg_blob_schema: tuple[SyncDriver, str],
) -> None:
    from langgraph_tiered_saver.blobs.postgres import CHUNK_SIZE

    driver, schema = pg_blob_schema
    store = DrivenStore(driver, PgBlobStore(schema, "t-chunks"))
    data = os.urandom(CHUNK_SIZE * 2 + CHUNK_SIZE // 2)
    digest = digest_of(data)
    store.put(digest, data)
    sizes = run_sql(
        driver, f'SELECT chunk, length(data) FROM "{schema}".blob_chunks ORDER BY chunk', fetch=True
    )
    assert sizes == [(0, CHUNK_SIZE), (1, CHUNK_SIZE), (2, CHUNK_SIZE // 2)]
    assert store.get(digest) == data
    run_sql(driver, f'DELETE FROM "{schema}".blob_chunks WHERE chunk = 1')
    with pytest.raises(CorruptDataError) as info:
        store.get(digest)
    assert not isinstance(info.value, BlobMissingError)
    store.delete(digest)
    assert run_sql(driver, f'SELECT count(*) FROM "{schema}".blob_chunks', fetch=True) == [(0,)]
