"""The broker's authorizer: ACLs in memory (``broker/security/acls.py``) kept in step with their file
(``broker/security/acl_store.py``), and the settings that turn it on.

As in Kafka, authorization is off until ``authorizer.class.name`` names an authorizer: Kafka's
``org.apache.kafka.metadata.authorizer.StandardAuthorizer`` (or the older ``kafka.security.authorizer.
AclAuthorizer``, taken as the same). Then every request is checked against the ACLs, ``super.users`` are
allowed everything, and a resource without any ACL is open only with ``allow.everyone.if.no.acl.found``.
ACLs live in ``acls.json`` in the data directory (in memory with memory storage); a change is written
before CreateAcls or DeleteAcls answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from broker.config import ConfigError
from broker.documents import Document, FileDocument
from broker.security.acl_store import AclStore
from broker.security.acls import AclBinding, AclBindingFilter, Authorizer, authorizer_from_settings

if TYPE_CHECKING:
    from broker.config import BrokerConfig

STANDARD_AUTHORIZERS = ("org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                        "kafka.security.authorizer.AclAuthorizer")
ACLS_FILE = "acls.json"


class AclService:
    """The authorizer and its persistence; one per broker."""

    def __init__(self, authorizer: Authorizer, store: AclStore) -> None:
        self.authorizer = authorizer
        self._store = store
        # CreateAcls and DeleteAcls apply and save one at a time, so the file always holds a state the
        # broker had.
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: BrokerConfig, document: Document | None = None) -> AclService | None:
        """The service the settings ask for, its ACLs loaded; None when authorization is off. ACLs are kept
        in ``document`` when given (a cluster's shared one), else in ``acls.json`` in the data directory."""
        name = (config.authorizer_class_name or "").strip()
        if not name:
            return None
        if name not in STANDARD_AUTHORIZERS:
            raise ConfigError(f"setting 'authorizer.class.name': Moldau offers Kafka's StandardAuthorizer "
                              f"({STANDARD_AUTHORIZERS[0]}), got {name!r}")
        authorizer = authorizer_from_settings(config.super_users, config.allow_everyone_if_no_acl_found)
        data_dir = config.data_dir
        if document is None and data_dir is not None:
            document = FileDocument(Path(data_dir) / ACLS_FILE)
        store = AclStore(document)
        try:
            bindings = store.load()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for binding in bindings:
            authorizer.add(binding)
        return cls(authorizer, store)

    async def create(self, bindings: Iterable[AclBinding]) -> None:
        """Add valid bindings (the caller validated them) and save."""
        async with self._lock:
            for binding in bindings:
                self.authorizer.add(binding)
            await self._save()

    async def delete(self, filters: Iterable[AclBindingFilter]) -> list[list[AclBinding]]:
        """Remove what each filter matches (in order) and save; the removed bindings per filter."""
        async with self._lock:
            removed = [self.authorizer.remove_matching(f) for f in filters]
            if any(removed):
                await self._save()
            return removed

    async def reload(self) -> None:
        """Take the stored ACLs again: another broker sharing them changed them."""
        async with self._lock:
            bindings = self._store.load()
            fresh = Authorizer(super_users=self.authorizer.super_users,
                               allow_everyone_if_no_acl_found=self.authorizer.allow_everyone_if_no_acl_found)
            for binding in bindings:
                fresh.add(binding)
            self.authorizer = fresh

    async def _save(self) -> None:
        await asyncio.to_thread(self._store.save, self.authorizer.bindings())
