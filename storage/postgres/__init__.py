"""The PostgreSQL storage engine: partition logs and cluster metadata in a database several brokers share."""

from storage.postgres.engine import DatabaseUnavailable, PostgresEngine, PostgresLog

__all__ = ["DatabaseUnavailable", "PostgresEngine", "PostgresLog"]
