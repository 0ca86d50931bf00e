"""Kafka transactions: the transaction coordinator (`state` is the pure state machine, `coordinator` its
asyncio shell, `records` the ``__transaction_state`` record formats)."""
