"""Hypothesis strategies for every message, built from the same generated schema tables as the codec."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from protocol import codec, messages

_INTS = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def _in(vr: Any, v: int) -> bool:
    return vr is not None and vr[0] <= v <= vr[1]


def _scalar(ftype: str) -> st.SearchStrategy:
    if ftype in _INTS:
        lo, hi = _INTS[ftype]
        return st.integers(lo, hi)
    if ftype == "bool":
        return st.booleans()
    if ftype == "float64":
        return st.floats(allow_nan=False)
    if ftype == "string":
        return st.text(max_size=12)
    if ftype in ("bytes", "records"):
        return st.binary(max_size=24)
    if ftype == "uuid":
        return st.uuids()
    raise AssertionError(ftype)


def message_strategy(table: dict, version: int, unknown_tags: bool = True) -> st.SearchStrategy:
    """Objects valid at `version`: fields of other versions keep their defaults."""
    cls = messages.class_for_table(table)
    flexible = _in(table["flexible"], version)

    def value(f: dict, depth: int) -> st.SearchStrategy:
        ftype = f["type"]
        nullable = _in(f.get("nullable"), version)
        if ftype.startswith("[]"):
            elem = ftype[2:]
            inner = struct(elem, depth + 1) if elem in table["structs"] else _scalar(elem)
            s: st.SearchStrategy = st.lists(inner, max_size=3 if depth < 3 else 1)
        elif ftype in table["structs"]:
            s = struct(ftype, depth + 1)
        else:
            s = _scalar(ftype)
        return st.one_of(st.none(), s) if nullable else s

    def struct(name: str, depth: int) -> st.SearchStrategy:
        fields = table["fields"] if name == table["name"] else table["structs"][name]
        target = cls if name == table["name"] else cls._structs[name]
        known_tags = {f["tag"] for f in fields if "tag" in f}
        kwargs: dict[str, st.SearchStrategy] = {}
        for f in fields:
            if "tag" in f:
                present = flexible and _in(f["tagged"], version)
            else:
                present = _in(f["versions"], version)
            if present:
                kwargs[f["name"]] = value(f, depth)
        base = st.builds(target, **kwargs)
        if not (flexible and unknown_tags):
            return base
        free_tags = st.integers(0, 40).filter(lambda t: t not in known_tags)
        extra = st.lists(st.tuples(free_tags, st.binary(max_size=6)), max_size=2,
                         unique_by=lambda e: e[0])

        def attach(obj: Any, tags: list) -> Any:
            obj._unknown_tags = sorted(tags) or None
            return obj

        return st.builds(attach, base, extra)

    return struct(table["name"], 0)


def all_cases() -> list[tuple[int, int, str]]:
    """(api key, version, 'request'|'response') for every version of every API in the specs."""
    cases = []
    for api_key in sorted(codec.APIS):
        for direction, table in (("request", codec.request_table(api_key)),
                                 ("response", codec.response_table(api_key))):
            lo, hi = table["valid"]
            cases += [(api_key, v, direction) for v in range(lo, hi + 1)]
    return cases
