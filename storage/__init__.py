"""Partition storage engines behind one interface (file and in-memory)."""
