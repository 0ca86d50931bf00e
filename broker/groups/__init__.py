"""The classic group coordinator (JoinGroup/SyncGroup/Heartbeat/LeaveGroup and committed offsets).

- `state`: the pure state machine (`GroupMetadataManager`, `ClassicGroup`): events in, decisions out,
  time passed in by the caller;
- `offsets`: committed offsets (`OffsetAndMetadata`) and the rules that expire them;
- `persistence`: Kafka's own record formats in ``__consumer_offsets`` and the group-to-partition hash;
- `coordinator`: the asyncio shell (`GroupCoordinator`) owning timers, parked requests, appends to
  ``__consumer_offsets`` and the start-up load.
"""
