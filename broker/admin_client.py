"""A small synchronous Kafka admin client over the project's own codec: create and delete topics, list
and delete groups. The pytest plugin uses it for ``kafka_topic`` and to reset a broker it did not start.

It speaks plain Kafka at versions every broker since 2.8 serves (Moldau or Apache Kafka) and assumes a
single-node cluster, as test brokers are: every request goes to the bootstrap address.
"""

from __future__ import annotations

import itertools
import socket
import struct
from types import TracebackType
from typing import Any, Self

from protocol import codec, messages
from protocol.errors import ErrorCode

METADATA, CREATE_TOPICS, DELETE_TOPICS, LIST_GROUPS, DELETE_GROUPS = 3, 19, 20, 16, 42
# Versions inside what Kafka 2.8 through 4.0 all serve (4.0's KIP-896 floors included).
_VERSIONS = {METADATA: 9, CREATE_TOPICS: 5, DELETE_TOPICS: 4, LIST_GROUPS: 4, DELETE_GROUPS: 2}
_INTERNAL_PREFIX = "__"
CLIENT_ID = "moldau-admin"
_MAX_RESPONSE_BYTES = 64 << 20


def _config_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class AdminError(RuntimeError):
    """The broker refused an admin request; ``code`` is Kafka's error code."""

    def __init__(self, code: int, what: str, message: str | None = None) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"{what}: {name}" + (f" ({message})" if message else ""))
        self.code = code


class AdminClient:
    """One connection to ``bootstrap_servers`` (its first address); a context manager."""

    def __init__(self, bootstrap_servers: str, timeout: float = 10.0) -> None:
        host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
        self.timeout = timeout
        self._sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        self._correlation = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, api_key: int, body: Any) -> Any:
        version = _VERSIONS[api_key]
        corr = next(self._correlation)
        self._sock.sendall(b"".join(bytes(p) for p in codec.encode_request(api_key, version, corr, CLIENT_ID, body)))
        (size,) = struct.unpack(">i", self._recv(4))
        if not 0 <= size <= _MAX_RESPONSE_BYTES:
            raise ConnectionError(f"broker sent a response frame of {size} bytes")
        header, response = codec.decode_response(api_key, version, self._recv(size))
        if header.correlation_id != corr:
            raise ConnectionError(f"response to correlation id {header.correlation_id}, expected {corr}")
        return response

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            buf += chunk
        return bytes(buf)

    # ------------------------------------------------------------ topics

    def list_topics(self, *, internal: bool = False) -> list[str]:
        response = self._call(METADATA, messages.MetadataRequest(topics=None, allow_auto_topic_creation=False))
        return sorted(t.name for t in response.topics
                      if internal or not (t.is_internal or t.name.startswith(_INTERNAL_PREFIX)))

    def create_topic(self, name: str, partitions: int = -1, configs: dict[str, Any] | None = None) -> None:
        """Create ``name`` (``partitions`` -1: the broker's ``num.partitions``); ``configs`` values as text
        or as ints and bools (sent as Kafka's text)."""
        req = messages.CreateTopicsRequest
        topic = req.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=-1,
            configs=[req.CreatableTopicConfig(name=k, value=_config_text(v)) for k, v in (configs or {}).items()])
        result = self._call(CREATE_TOPICS, req(timeout_ms=int(self.timeout * 1000), topics=[topic])).topics[0]
        if result.error_code:
            raise AdminError(result.error_code, f"creating topic {name!r}", result.error_message)

    def delete_topics(self, names: list[str]) -> list[str]:
        """Delete ``names``; returns those deleted (a topic already gone is not an error)."""
        if not names:
            return []
        response = self._call(DELETE_TOPICS, messages.DeleteTopicsRequest(
            topic_names=names, timeout_ms=int(self.timeout * 1000)))
        deleted = []
        for result in response.responses:
            if result.error_code == ErrorCode.NONE:
                deleted.append(result.name)
            elif result.error_code != ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise AdminError(result.error_code, f"deleting topic {result.name!r}")
        return deleted

    # ------------------------------------------------------------ groups

    def list_groups(self) -> list[str]:
        response = self._call(LIST_GROUPS, messages.ListGroupsRequest(states_filter=[]))
        if response.error_code:
            raise AdminError(response.error_code, "listing groups")
        return sorted(g.group_id for g in response.groups)

    def delete_groups(self, group_ids: list[str]) -> tuple[list[str], list[str]]:
        """Delete ``group_ids``: (deleted, kept because members are still in them)."""
        if not group_ids:
            return [], []
        response = self._call(DELETE_GROUPS, messages.DeleteGroupsRequest(groups_names=group_ids))
        deleted, kept = [], []
        for result in response.results:
            if result.error_code == ErrorCode.NONE:
                deleted.append(result.group_id)
            elif result.error_code == ErrorCode.NON_EMPTY_GROUP:
                kept.append(result.group_id)
            elif result.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
                continue  # gone meanwhile
            else:
                raise AdminError(result.error_code, f"deleting group {result.group_id!r}")
        return deleted, kept
