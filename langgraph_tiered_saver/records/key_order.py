"""The key order of a JSON value's dicts, kept beside its JSONB copy.

JSONB stores an object's keys in its own order (shorter keys first, then bytewise) and gives
them back in that order; a value read back from JSONB alone would have its dicts reordered. A
row that keeps a value as its JSONB alone (durable tier, `records.audit.exact_json`) keeps the
order of the dicts that JSONB reorders beside it: for each such dict, its place in a walk of
the value in JSONB's order (depth first, keys in JSONB's order), then the JSONB positions of its
keys in their own order. A value whose dicts are all in JSONB's order needs none.
"""

from __future__ import annotations

from typing import Any


def jsonb_key(key: str) -> tuple[int, bytes]:
    """A key's place in JSONB's order."""
    raw = key.encode()
    return len(raw), raw


def jsonb_keys(d: dict[str, Any], place: int, out: list[list[int]]) -> list[str]:
    """The keys of dict number `place` of a walk in JSONB's order; when that is not its own,
    its entry of the order to keep goes to `out`."""
    keys = list(d)
    ordered = sorted(keys, key=jsonb_key)
    if keys != ordered:
        position = {k: i for i, k in enumerate(ordered)}
        out.append([place, *(position[k] for k in keys)])
    return ordered


def key_order(value: Any) -> list[list[int]]:
    """The order to keep for `value` (plain JSON data): [] when JSONB keeps every dict's."""
    out: list[list[int]] = []
    seen = 0

    def walk(v: Any) -> None:
        nonlocal seen
        if type(v) is dict:
            place = seen
            seen += 1
            for k in jsonb_keys(v, place, out):
                walk(v[k])
        elif type(v) is list:
            for x in v:
                walk(x)

    walk(value)
    return out


def with_key_order(value: Any, order: list[list[int]]) -> Any:
    """`value` as read from JSONB (dicts in JSONB's order) with the order `key_order` kept."""
    wanted = {entry[0]: entry[1:] for entry in order}
    seen = 0

    def walk(v: Any) -> Any:
        nonlocal seen
        if type(v) is dict:
            place = seen
            seen += 1
            items = [(k, walk(x)) for k, x in v.items()]
            positions = wanted.get(place)
            if positions is not None:
                if sorted(positions) != list(range(len(items))):
                    raise ValueError(f"key order {positions!r} does not fit a dict of {len(items)} keys")
                items = [items[i] for i in positions]
            return dict(items)
        if type(v) is list:
            return [walk(x) for x in v]
        return v

    return walk(value)
