"""Kafka wire protocol, sans-io: bytes in, message objects out, and back. No sockets, no asyncio."""
