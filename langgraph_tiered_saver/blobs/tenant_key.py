"""A tenant id as one safe path component or key segment of a blob store.

Tenant ids may hold `/`, `.`, `~` and upper case (see ids.py), so `root / tenant` would let
`./victim` share `victim`'s directory, `../x` or `/abs/x` leave the root, and `Acme` share
`acme`'s directory on a case-insensitive filesystem. `tenant_component` is injective and gives
a single component of lowercase letters, digits, `_ - . % +`: never empty, `.` or `..`, never
longer than `MAX_COMPONENT`. Plain lowercase ids (`acme`, `t-1`) map to themselves, so their
existing blob directories and keys stay where they were.
"""

from __future__ import annotations

import hashlib

MAX_COMPONENT = 200  # well under NAME_MAX (255 bytes) and S3's 1024-byte keys
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")
_READABLE_PREFIX = 64


def tenant_component(tenant: str) -> str:
    """Encode `tenant`: kept characters as is, every other byte of its UTF-8 as `%XX`.

    Injective: `%` is always escaped, hex is upper case and letters are lower case (so no two
    results differ only in case), the `.`/`..` guard writes `%2E` (which the escaping never
    produces), and long ids become `<prefix>+<sha256>` (`+` is otherwise always escaped).
    """
    if not isinstance(tenant, str) or not tenant:
        raise ValueError(f"tenant must be a non-empty string, got {tenant!r}")
    encoded = "".join(
        ch if ch in _KEPT else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in tenant
    )
    if encoded in (".", ".."):
        return encoded.replace(".", "%2E")
    if len(encoded) > MAX_COMPONENT:
        digest = hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{encoded[:_READABLE_PREFIX]}+{digest}"
    return encoded
