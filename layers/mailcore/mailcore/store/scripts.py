"""Loading the Lua scripts, with the domain's transition tables compiled in.

Scripts that change a status start with a preamble generated from
``mailcore.domain.states``: one table in Python, enforced the same way inside
Redis, so no script can make a move the domain forbids.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from string import Template

from mailcore.domain.states import ATTEMPT_TRANSITIONS, DELIVERY_TRANSITIONS


def load_lua(name: str) -> str:
    return resources.files("mailcore.store").joinpath("lua", name).read_text(encoding="utf-8")


def lua_table[S: StrEnum](moves: Mapping[S, frozenset[S]]) -> str:
    rows = []
    for current in sorted(moves):
        allowed = ", ".join(f"['{target}']=true" for target in sorted(moves[current]))
        rows.append(f"['{current}']={{{allowed}}}")
    return "{" + ", ".join(rows) + "}"


def rules_preamble() -> str:
    return Template(load_lua("rules.lua.tmpl")).substitute(
        delivery_moves=lua_table(DELIVERY_TRANSITIONS),
        attempt_moves=lua_table(ATTEMPT_TRANSITIONS),
    )


def load_lua_with_rules(name: str) -> str:
    return rules_preamble() + "\n" + load_lua(name)
