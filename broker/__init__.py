"""The Moldau broker: asyncio server, request dispatch, cluster state, coordinators, config and CLI."""

__version__ = "0.1.0"
