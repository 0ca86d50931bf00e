"""The ACL file: the bindings CreateAcls and DeleteAcls leave behind, kept as one JSON document so they
survive a restart (Kafka keeps them in its metadata log; Moldau keeps them next to its data).

Writes replace the file atomically (tmp file, fsync, rename, fsync of the directory) with mode 0600. A file
that cannot be read or parsed, or that holds a binding Kafka would not create, raises ValueError naming it:
starting with no ACLs would silently change who may do what.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from broker.documents import Document, as_document
from broker.security.acls import AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType

_STORE_VERSION = 1
_FIELDS = ("resource_type", "resource_name", "pattern_type", "principal", "host", "operation",
           "permission_type")


class AclStore:
    """ACL bindings persisted as JSON at `path`, or kept nowhere when `path` is None (memory only: the
    authorizer holds them, ``load`` returns [] and ``save`` does nothing)."""

    def __init__(self, path: Path | Document | None) -> None:
        self.path = as_document(path)
        # Saves may come from worker threads; two at once would share the tmp file.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AclStore(path={self.path!r})"

    def load(self) -> list[AclBinding]:
        """The stored bindings in document order; [] when there is no document."""
        if self.path is None:
            return []
        try:
            data = self.path.read()
            if data is None:
                return []
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"ACL file {self.path} cannot be read: {e.__class__.__name__}") from None
        try:
            return _parse(text)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"ACL file {self.path} is corrupt: {e}") from None

    def save(self, bindings: list[AclBinding]) -> None:
        """Replace the document's contents with `bindings` (duplicates dropped, order kept)."""
        if self.path is None:
            return
        unique = list(dict.fromkeys(bindings))
        document = {"version": _STORE_VERSION, "acls": [_to_json(b) for b in unique]}
        data = json.dumps(document, indent=2).encode("utf-8")
        with self._lock:
            self.path.write(data)


def _to_json(binding: AclBinding) -> dict[str, str]:
    # Enum names rather than codes: the file is meant to be readable when someone audits it.
    return {"resource_type": binding.resource_type.name, "resource_name": binding.resource_name,
            "pattern_type": binding.pattern_type.name, "principal": binding.principal, "host": binding.host,
            "operation": binding.operation.name, "permission_type": binding.permission_type.name}


def _parse(text: str) -> list[AclBinding]:
    document = json.loads(text)
    if (not isinstance(document, dict) or document.get("version") != _STORE_VERSION
            or not isinstance(document.get("acls"), list)):
        raise ValueError(f"expected a JSON object with version {_STORE_VERSION} and an 'acls' list")
    return [_from_json(index, raw) for index, raw in enumerate(document["acls"])]


def _from_json(index: int, raw: Any) -> AclBinding:
    if not isinstance(raw, dict) or set(raw) != set(_FIELDS) or not all(isinstance(raw[f], str) for f in _FIELDS):
        raise ValueError(f"ACL #{index} must be an object with the string fields {', '.join(_FIELDS)}")
    try:
        binding = AclBinding(
            resource_type=ResourceType[raw["resource_type"]], resource_name=raw["resource_name"],
            pattern_type=PatternType[raw["pattern_type"]], principal=raw["principal"], host=raw["host"],
            operation=AclOperation[raw["operation"]], permission_type=AclPermissionType[raw["permission_type"]])
    except KeyError as e:
        raise ValueError(f"ACL #{index} has an unknown enum name {e.args[0]!r}") from None
    problem = binding.validate()
    if problem is not None:
        raise ValueError(f"ACL #{index} is not a valid ACL: {problem[1]}")
    return binding
