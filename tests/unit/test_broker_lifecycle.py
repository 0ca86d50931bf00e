"""Broker lifecycle: a start that fails after storage is open releases everything it took (engine and
its data-directory lock, group coordinator, listener), so the same directory can be used again."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from broker.config import BrokerConfig
from broker.server import Broker


def test_a_start_that_cannot_bind_releases_the_data_directory(tmp_path: Path) -> None:
    """Port taken: start() raises OSError, and a second broker on the same data directory starts."""

    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            first = Broker(BrokerConfig.from_settings({"log.dirs": str(tmp_path),
                                                       "listeners": f"127.0.0.1:{port}"}))
            before = set(asyncio.all_tasks())
            with pytest.raises(OSError):
                await first.start()
            assert not first.running
            assert [t for t in asyncio.all_tasks() - before if not t.done()] == [], "tasks left running"
        second = Broker(BrokerConfig.from_settings({"log.dirs": str(tmp_path), "listeners": "127.0.0.1:0"}))
        await second.start()
        try:
            assert second.running
        finally:
            await second.stop()
        # The failed broker's stop() is a harmless no-op.
        await first.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))

