"""The kept DeltaChannel walks (delta_walks.py): how a kept walk continues a newer part, which
id orders may be kept, and the bounds."""

from __future__ import annotations

from langgraph_tiered_saver._core.delta_walks import KeptWalk, KeptWalks, strictly_decreasing
from langgraph_tiered_saver.records.codec import WriteRecord


def write(channel: str, value: str) -> WriteRecord:
    return WriteRecord("task", 0, channel, ("str", value.encode()), "")


def test_a_newer_part_seeding_a_channel_takes_nothing_of_it_from_the_kept_walk() -> None:
    kept = KeptWalk("c5", "c1", 7, "1.1", ([write("a", "a4"), write("b", "b4")], [write("a", "a2")]), {"a": ("str", b"A"), "b": ("str", b"B")})
    steps, seeds = kept.after([[write("b", "b7")]], {"b": ("str", b"B6")})
    assert [[w.value[1] for w in step] for step in steps] == [[b"b7"], [b"a4"], [b"a2"]]
    assert seeds == {"a": ("str", b"A"), "b": ("str", b"B6")}
    steps, seeds = kept.after([], {})
    assert [[w.value[1] for w in step] for step in steps] == [[b"a4", b"b4"], [b"a2"]] and seeds == kept.seeds


def test_only_strictly_decreasing_ids_make_a_keepable_walk() -> None:
    assert strictly_decreasing(["c9", "c7", "c3"], None)
    assert strictly_decreasing(["c9", "c7"], "c3") and strictly_decreasing([], "c3")
    assert not strictly_decreasing(["c9", "c3", "c7"], None)
    assert not strictly_decreasing(["c9", "c7"], "c8")  # the kept walk began above the new part's end
    assert not strictly_decreasing(["c9", "c9"], None)


def test_bounded_by_walks_and_records_and_forgotten_with_the_tenant() -> None:
    walks = KeptWalks(limit=2, max_records=3)
    walk = KeptWalk("c2", "c1", 1, "1.1", ([write("a", "x")],), {})
    for thread in ("t1", "t2", "t3"):
        walks.keep(("acme", thread, "", ("a",)), walk)
    assert len(walks) == 2 and walks.get(("acme", "t1", "", ("a",))) is None  # least recently used out
    walks.keep(("acme", "t2", "", ("a",)), KeptWalk("c2", "c1", 4, "1.1", ([write("a", "x")] * 4,), {}))
    assert walks.get(("acme", "t2", "", ("a",))) is None  # too many records: not kept, the older one gone
    walks.keep(("other", "t1", "", ("a",)), walk)
    walks.keep(("other", "t2", "", ("a",)), walk)
    walks.forget_tenant("acme")
    walks.forget_thread("other", "t2")
    assert len(walks) == 1 and walks.get(("other", "t1", "", ("a",))) is walk
