"""FindCoordinator: this single broker is the coordinator of every group and transactional id."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import messages
from protocol.errors import ErrorCode
from tests.compat.conftest import BrokerProcess, KafkaSocket

FIND_COORDINATOR = 10
_REQ = messages.FindCoordinatorRequest


@pytest.mark.parametrize("version", range(4))
def test_single_key_versions_name_this_broker(module_broker: BrokerProcess,
                                              raw_socket: Callable[[BrokerProcess], KafkaSocket],
                                              version: int) -> None:
    """v0-3 answer one group key with this broker's node id, host and port."""
    sock = raw_socket(module_broker)
    resp = sock.request(FIND_COORDINATOR, version, 1, _REQ(key=f"group-v{version}", key_type=0))
    assert (resp.error_code, resp.node_id, resp.host, resp.port) == (
        0, 1, module_broker.host, module_broker.port)


@pytest.mark.parametrize("version", range(4, 7))
def test_batched_keys_answer_each_key(module_broker: BrokerProcess,
                                      raw_socket: Callable[[BrokerProcess], KafkaSocket], version: int) -> None:
    """v4+ (KIP-699) answer every coordinator key; an empty key gets INVALID_REQUEST on its own."""
    sock = raw_socket(module_broker)
    resp = sock.request(FIND_COORDINATOR, version, 2, _REQ(key_type=1, coordinator_keys=["txn-a", "", "txn-b"]))
    got = [(c.key, c.error_code, c.node_id) for c in resp.coordinators]
    assert got == [("txn-a", 0, 1), ("", int(ErrorCode.INVALID_REQUEST), -1), ("txn-b", 0, 1)]
    assert resp.coordinators[1].error_message


def test_unknown_key_type_is_invalid_request(module_broker: BrokerProcess,
                                             raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """A key type other than group (0) or transaction (1) gets INVALID_REQUEST with a message."""
    resp = raw_socket(module_broker).request(FIND_COORDINATOR, 3, 3, _REQ(key="g", key_type=5))
    assert resp.error_code == int(ErrorCode.INVALID_REQUEST) and "key type" in resp.error_message
