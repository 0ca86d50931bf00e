"""Partition storage engines behind one interface (file, in-memory and PostgreSQL)."""
