"""Blob stores keyed by an encoded tenant: adversarial tenant ids (`./victim`, `../x`, `/abs/x`,
upper case, unicode, very long) get their own space in every store and cannot read, overwrite
or delete another tenant's blobs, nor write outside the store's root or prefix."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from langgraph_tiered_saver._sansio.io import SyncDriver
from langgraph_tiered_saver.blobs import BlobMissingError, PgBlobStore, digest_of, tenant_component
from langgraph_tiered_saver.blobs.offloader import filesystem_blobs, s3_blobs
from langgraph_tiered_saver.blobs.tenant_key import MAX_COMPONENT
from tests.fixtures import DUMMY_CREDENTIALS, DrivenStore, run_sql

VICTIM = "victim"
ADVERSARIAL = [
    "./victim", "victim/.", "victim/", "/victim", "../victim", "./../victim", "x/../victim",
    ".", "..", "...", "~", "~victim", "Victim", "VICTIM", "/abs/x", "a/b", "a%2Fb", "a+b",
    "%2E", "%2E%2E", "victim%00", "vïctim", "v" * 128, "v" * 127 + "w", "/" * 128, "." * 128,
]  # fmt: skip


def test_components_are_distinct_single_safe_names() -> None:
    names = {t: tenant_component(t) for t in [VICTIM, *ADVERSARIAL]}
    assert len(set(names.values())) == len(names)
    assert len({n.lower() for n in names.values()}) == len(names)  # case-insensitive filesystems
    for tenant, name in names.items():
        assert name not in ("", ".", "..") and "/" not in name and "\\" not in name, tenant
        assert len(name.encode()) <= MAX_COMPONENT and name.isascii(), tenant
    assert tenant_component("acme") == "acme" and tenant_component("t-1_x.y") == "t-1_x.y"
    with pytest.raises(ValueError):
        tenant_component("")


def _isolation(factory: Callable[[str], Any]) -> None:
    """The victim's blob is invisible to every other tenant, which cannot delete it either; a
    blob an adversary writes is only in its own space."""
    secret = os.urandom(2048)
    digest = digest_of(secret)
    factory(VICTIM).put(digest, secret)
    for tenant in ADVERSARIAL:
        store = factory(tenant)
        assert not store.exists(digest), tenant
        with pytest.raises(BlobMissingError):
            store.get(digest)
        store.delete(digest)
        assert list(store.list_digests()) == [], tenant
        own = f"{tenant} was here".encode()
        store.put(digest_of(own), own)
        assert store.get(digest_of(own)) == own
    victim = factory(VICTIM)
    assert victim.get(digest) == secret
    assert list(victim.list_digests()) == [digest]


def test_filesystem_tenants_stay_under_their_own_directory(tmp_path: Path) -> None:
    root = tmp_path / "root" / "blobs"
    _isolation(filesystem_blobs(root))
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]
    assert outside == []
    top = sorted(p.name for p in root.iterdir())
    assert top == sorted(tenant_component(t) for t in [VICTIM, *ADVERSARIAL])


def test_s3_tenants_stay_under_their_own_prefix(
    moto_endpoint: str, s3_client: Any, s3_bucket: str
) -> None:
    _isolation(s3_blobs(s3_bucket, prefix="p/", endpoint_url=moto_endpoint, **DUMMY_CREDENTIALS))
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert all(k.startswith("p/") and k.count("/") == 2 for k in keys)
    assert len({k.split("/")[1] for k in keys}) == 1 + len(ADVERSARIAL)


def test_postgres_tenants_stay_in_their_own_rows(
    pg_blob_schema: tuple[SyncDriver, str],
) -> None:
    driver, schema = pg_blob_schema
    _isolation(lambda tenant: DrivenStore(driver, PgBlobStore(schema, tenant)))
    rows = run_sql(driver, f'SELECT DISTINCT tenant_id FROM "{schema}".blob_chunks', fetch=True)
    assert sorted(t for (t,) in rows) == sorted([VICTIM, *ADVERSARIAL])
