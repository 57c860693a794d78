"""The Lua scripts' named slots: every KEY.x / ARG.x a script uses is declared in `scripts`,
and a call with other names than the declared ones is refused before it reaches Redis."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from langgraph_tiered_saver.hot import scripts

ALL = [v for v in vars(scripts).values() if isinstance(v, scripts.LuaScript)]


@pytest.mark.parametrize("script", ALL, ids=lambda s: s.name)
def test_every_slot_a_script_uses_is_declared(script: scripts.LuaScript) -> None:
    body = (resources.files("langgraph_tiered_saver.hot") / "lua" / f"{script.name}.lua").read_text()
    assert not re.search(r"\bKEYS\[|\bARGV\[\d", body), "positional slots: use KEY.<name> / ARG.<name>"
    assert set(re.findall(r"\bKEY\.(\w+)", body)) <= set(script.key_names)
    assert set(re.findall(r"\bARG\.(\w+)", body)) <= set(script.argv)


def test_common_functions_use_declared_slots_only() -> None:
    common = (resources.files("langgraph_tiered_saver.hot") / "lua" / "_common.lua").read_text()
    declared = set().union(*(s.key_names for s in ALL)), set().union(*(s.argv for s in ALL))
    assert set(re.findall(r"\bKEY\.(\w+)", common)) <= declared[0]
    assert set(re.findall(r"\bARG\.(\w+)", common)) <= declared[1]
    assert "KEYS[" not in common


def test_a_call_must_name_exactly_the_declared_slots() -> None:
    with pytest.raises(TypeError, match=r"lock_renew\.lua takes"):
        scripts.LOCK_RENEW.call({"lock": "k"}, {"ttl_ms": 1, "token": "t"})  # order matters too
    assert scripts.LOCK_RENEW.call({"lock": "k"}, {"token": "t", "ttl_ms": 1}) == (
        "EVALSHA", scripts.LOCK_RENEW.sha, 1, "k", "t", 1,
    )


def test_a_script_with_derived_keys_names_the_thread_keys_and_lock_as_keys_does() -> None:
    from langgraph_tiered_saver.hot import keys as K

    assert scripts.GET.derived and scripts.GET.keys == ("thread", "vgen")
    base = K.thread_prefix("p", "acme", "user 42")
    derived = {name: f"{base}:{name}" for name in K.THREAD_KEY_NAMES} | {"lock": f"{base}:{K.LOCK_SUFFIX}"}
    assert derived == scripts.thread_keys("p", "acme", "user 42")
    assert 'KEY[name] = KEYS[1] .. ":" .. name' in scripts.GET.source and f'":{K.LOCK_SUFFIX}"' in scripts.GET.source


def test_a_script_carries_the_common_functions_it_calls_and_no_others() -> None:
    common = "\n".join([
        "local NUL = \"\\0\"",
        "-- a helper no script calls",
        "local function unused()", "  return 1", "end",
        "local function leaf(x)", "  return x .. NUL", "end",
        "-- calls leaf",
        "local function middle(x)", "  return leaf(x)", "end",
    ])  # fmt: skip
    kept = scripts.used_common(common, "-- unused() is only named here\nreturn middle(ARGV[1])")
    assert "local NUL" in kept and "local function middle" in kept and "local function leaf" in kept
    assert "unused" not in kept and "-- calls leaf" in kept
    assert kept.index("local function leaf") < kept.index("local function middle")  # defined before use
    assert "local function" not in scripts.VERIFY.source and "local OUTBOX" not in scripts.GET.source
    with pytest.raises(ValueError, match="no `end`"):
        scripts.used_common("local function broken()\n  return 1\n  end", "broken()")
