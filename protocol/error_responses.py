"""The error answer to any request: the API's own response, carrying one error code. Sans-io.

When a request cannot be served (a broker bug, say), Kafka answers it with its API's response shape
and the error in every place the client looks (``AbstractRequest.getErrorResponse``), and keeps the
connection. ``error_response`` builds that answer from the schema tables, for any API and version:

- a top-level ``error_code`` is set when the response has one (and any ``*_error_code``);
- each response array that carries error codes mirrors the request array it answers, entry for
  entry, with its identifying fields copied (names, ids, resource types, partition numbers) and its
  ``error_code`` set, and its int64 fields (offsets, watermarks, timestamps) at -1, Kafka's
  "unknown"; everything else keeps the spec's defaults (epochs -1, empty lists, ...).
  Arrays are paired by name, or through ``_MIRRORS`` where Kafka's specs name the two sides
  differently (``topic_data`` -> ``responses``). A response array with no request counterpart stays
  empty, as Kafka leaves it (DescribeLogDirs' ``results``).
- an acks=0 Produce has no response: ``None`` (Kafka closes the connection instead).

This runs only when a request fails, never on the hot path.
"""

from __future__ import annotations

from typing import Any

from protocol import codec, messages

PRODUCE = 0
UNKNOWN_OFFSET = -1

# Per API: response field name -> request field name(s) it answers (an array it mirrors, or a key it
# copies), where the specs name the two sides differently. Candidates are tried in order; the first
# one present at the version is used.
_MIRRORS: dict[int, dict[str, tuple[str, ...]]] = {
    0: {"responses": ("topic_data",), "partition_responses": ("partition_data",)},
    1: {"responses": ("topics",), "partition_index": ("partition",)},
    9: {"partitions": ("partition_indexes",)},
    10: {"coordinators": ("coordinator_keys",)},
    20: {"responses": ("topics", "topic_names")},
    30: {"results": ("creations",)},
    31: {"filter_results": ("filters",)},
    32: {"results": ("resources",)},
    33: {"responses": ("resources",)},
    37: {"results": ("topics",)},
    42: {"results": ("groups_names",)},
    24: {"results_by_topic_v3_and_below": ("v3_and_below_topics",), "results_by_partition": ("partitions",)},
    44: {"responses": ("resources",)},
    51: {"results": ("upsertions", "deletions"), "user": ("name",)},
    61: {"partitions": ("partition_indexes",)},
    65: {"transaction_states": ("transactional_ids",)},
}

# Per API: top-level fields whose error value is not the spec's default (Kafka's NO_PRODUCER_EPOCH).
_TOP_LEVEL: dict[int, dict[str, Any]] = {
    22: {"producer_epoch": -1},
}

# Scalar types that can identify an entry: names, ids and resource types. int32 fields identify one
# only under these names (partition numbers); other numbers (epochs, offsets, counts) are request data
# the response must not echo, so they keep the response's defaults.
_KEY_TYPES = frozenset({"string", "uuid", "int8"})
_KEY_INT32_NAMES = frozenset({"partition", "partition_index", "index"})


def error_response(api_key: int, api_version: int, request: Any, error_code: int) -> Any | None:
    """The response to ``request`` (a decoded body of ``api_key`` at ``api_version``) that reports
    ``error_code`` everywhere the client looks; ``None`` when the request has no response at all."""
    if api_key == PRODUCE and getattr(request, "acks", 1) == 0:
        return None
    builder = _Builder(codec.request_table(api_key), codec.response_table(api_key), api_version,
                       _MIRRORS.get(api_key, {}), error_code)
    response = builder.build(request)
    for name, value in _TOP_LEVEL.get(api_key, {}).items():
        setattr(response, name, value)
    return response


def _in(vrange: tuple[int, int] | None, version: int) -> bool:
    return vrange is not None and vrange[0] <= version <= vrange[1]


class _Builder:
    """Walks a request table and a response table side by side at one version."""

    def __init__(self, req_table: dict, resp_table: dict, version: int, mirrors: dict[str, tuple[str, ...]],
                 error_code: int) -> None:
        self.req_table = req_table
        self.resp_table = resp_table
        self.version = version
        self.mirrors = mirrors
        self.error_code = error_code
        self.resp_cls = messages.class_for_table(resp_table)
        self.req_flexible = _in(req_table["flexible"], version)
        self.resp_flexible = _in(resp_table["flexible"], version)

    def build(self, request: Any) -> Any:
        response = self.resp_cls()
        self._fill(response, self.resp_table["fields"], request, self._present(self.req_table["fields"], True),
                   top=True)
        return response

    # -- schema walking -----------------------------------------------------------------------------

    def _present(self, fields: list[dict], request: bool) -> dict[str, dict]:
        flexible = self.req_flexible if request else self.resp_flexible
        present = {}
        for f in fields:
            if "tag" in f:
                if flexible and _in(f["tagged"], self.version):
                    present[f["name"]] = f
            elif _in(f["versions"], self.version):
                present[f["name"]] = f
        return present

    def _resp_struct(self, type_name: str) -> tuple[list[dict], type]:
        return self.resp_table["structs"][type_name], self.resp_cls._structs[type_name]

    def _req_struct_fields(self, type_name: str) -> list[dict]:
        return self.req_table["structs"][type_name]

    def _carries_error(self, type_name: str, seen: frozenset[str] = frozenset()) -> bool:
        """Whether a response struct (or one nested in it) has an error_code at this version."""
        if type_name in seen or type_name not in self.resp_table["structs"]:
            return False
        for f in self._present(self.resp_table["structs"][type_name], False).values():
            if _is_error_code(f):
                return True
            if f["type"].startswith("[]") and self._carries_error(f["type"][2:], seen | {type_name}):
                return True
        return False

    # -- filling ------------------------------------------------------------------------------------

    def _fill(self, obj: Any, resp_fields: list[dict], request: Any, req_fields: dict[str, dict], *,
              top: bool) -> None:
        for name, f in self._present(resp_fields, False).items():
            ftype = f["type"]
            if _is_error_code(f):
                setattr(obj, name, self.error_code)
            elif ftype.startswith("[]") and self._carries_error(ftype[2:]):
                req_field = self._mirror_of(name, req_fields)
                if req_field is not None and req_field["type"].startswith("[]"):
                    entries = getattr(request, req_field["name"], None) or []
                    setattr(obj, name, [self._entry(ftype[2:], req_field, e) for e in entries])
            elif top:
                continue
            elif ftype == "int64":
                setattr(obj, name, UNKNOWN_OFFSET)
            elif _is_key(f):
                req_field = self._mirror_of(name, req_fields)
                if req_field is not None and req_field["type"] == ftype:
                    setattr(obj, name, getattr(request, req_field["name"]))

    def _mirror_of(self, resp_name: str, req_fields: dict[str, dict]) -> dict | None:
        for candidate in self.mirrors.get(resp_name, (resp_name,)):
            f = req_fields.get(candidate)
            if f is not None:
                return f
        return None

    def _entry(self, resp_type: str, req_field: dict, req_entry: Any) -> Any:
        fields, cls = self._resp_struct(resp_type)
        obj = cls()
        req_type = req_field["type"][2:]
        if req_type in self.req_table["structs"]:
            self._fill(obj, fields, req_entry, self._present(self._req_struct_fields(req_type), True), top=False)
            return obj
        # An array of plain values (topic names, partition numbers): the value is the entry's key.
        for f in self._present(fields, False).values():
            if f["type"] == req_type and _is_key(f):
                setattr(obj, f["name"], req_entry)
                break
        self._fill(obj, fields, None, {}, top=False)
        return obj


def _is_error_code(f: dict) -> bool:
    # AddPartitionsToTxn names its per-partition code ``partition_error_code``.
    return f["type"] == "int16" and (f["name"] == "error_code" or f["name"].endswith("_error_code"))


def _is_key(f: dict) -> bool:
    return f["type"] in _KEY_TYPES or (f["type"] == "int32" and f["name"] in _KEY_INT32_NAMES)
