"""CRC-32C (Castagnoli): the checksum of record batches (and of the file engine's producer snapshots).

It comes from the ``crc32c`` package's C extension. The package's ``__init__`` looks its own version up
through ``importlib.metadata``, which costs a fresh process about 25 ms, a third of the broker's whole
start-up; so the extension is loaded from the installed package directly, and the package is imported
the ordinary way only if that fails (another layout, a zip install).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from collections.abc import Callable
from typing import Any

_PACKAGE = "crc32c"
_EXTENSION = "_crc32c"


def _load() -> Callable[[Any], int]:
    spec = importlib.util.find_spec(_PACKAGE)  # locates the package without running its __init__
    for directory in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(directory, _EXTENSION + suffix)
            if not os.path.isfile(path):
                continue
            name = f"{_PACKAGE}.{_EXTENSION}"
            loader = importlib.machinery.ExtensionFileLoader(name, path)
            module_spec = importlib.util.spec_from_file_location(name, path, loader=loader)
            if module_spec is None:
                continue
            module = importlib.util.module_from_spec(module_spec)
            loader.exec_module(module)
            return module.crc32c  # type: ignore[no-any-return]
    import crc32c

    return crc32c.crc32c


crc32c: Callable[[Any], int] = _load()
