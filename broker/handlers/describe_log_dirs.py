"""DescribeLogDirs (key 35), versions 0-4: the one log directory of this broker and the partitions in it.

Kafka behaviours implemented (``KafkaApis.handleDescribeLogDirsRequest``, ``ReplicaManager.describeLogDirs``):

- ``topics`` null means every partition; otherwise only the named partitions that exist are listed
  (unknown topics and partitions are left out, not errors), and the log dir is listed even when
  none of them exists;
- each partition: ``partition_size`` in bytes, ``offset_lag`` 0 (this node is the leader, so the log
  end offset is the high watermark), ``is_future_key`` false (no replica moves between dirs);
- the log dir is the data directory's absolute path; with in-memory storage it is the storage URL
  ``memory://``, as nothing is on disk;
- v3+: a top-level ``error_code`` (0); v4+: ``total_bytes`` and ``usable_bytes`` of the file system
  holding the data directory (``shutil.disk_usage``), -1 for in-memory storage.

The partition size is the byte count of the batches a read from the log start offset returns: the
storage interface has no size accessor yet, so this walks the log's batch list (cheap for the memory
engine; a file engine should report its segment sizes instead).
"""

from __future__ import annotations

import shutil
from typing import Any

import structlog

from broker.handlers import RequestContext
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode
from storage.interface import PartitionLog

log = structlog.get_logger()

async def partition_size(plog: PartitionLog) -> int:
    """Bytes held by one partition log."""
    return plog.size_bytes


def _disk_usage(path: Any) -> tuple[int, int]:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        log.warning("describe_log_dirs.disk_usage_failed", path=str(path), reason=str(exc))
        return -1, -1
    return usage.total, usage.free


async def handle_describe_log_dirs(header: Any, body: Any, ctx: RequestContext) -> Any:
    broker = ctx.broker
    cluster = broker.cluster
    response = messages.DescribeLogDirsResponse
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        return response(throttle_time_ms=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED), results=[])
    data_dir = broker.config.data_dir
    if data_dir is None:
        log_dir, (total, usable) = broker.storage_url, (-1, -1)
    else:
        log_dir, (total, usable) = str(data_dir.absolute()), _disk_usage(data_dir)

    wanted: dict[str, set[int]] | None = None
    if body.topics is not None:
        wanted = {}
        for requested in body.topics:
            wanted.setdefault(requested.topic, set()).update(requested.partitions)

    topics = []
    for name in sorted(cluster.names() if wanted is None else wanted):
        topic = cluster.get(name)
        if topic is None:
            continue
        indexes = range(len(topic.partitions)) if wanted is None else sorted(wanted[name])
        partitions = [
            response.DescribeLogDirsPartition(partition_index=i, partition_size=await partition_size(
                topic.partitions[i].log), offset_lag=0, is_future_key=False)
            for i in indexes if 0 <= i < len(topic.partitions)]
        if partitions:
            topics.append(response.DescribeLogDirsTopic(name=name, partitions=partitions))
    return response(throttle_time_ms=0, error_code=0, results=[response.DescribeLogDirsResult(
        error_code=0, log_dir=log_dir, topics=topics, total_bytes=total, usable_bytes=usable)])
