"""DescribeUserScramCredentials (key 50) v0 and AlterUserScramCredentials (key 51) v0 (KIP-554): SCRAM
users managed over the Kafka protocol, kept in the broker's ``ScramCredentialStore``.

Kafka behaviours implemented (``KafkaApis.handleDescribeUserScramCredentialsRequest`` with
``ScramImage.describe``; ``ControllerApis.handleAlterUserScramCredentials`` with
``ScramControlManager.alterCredentials``):

- Describe needs DESCRIBE on the cluster, else a top-level CLUSTER_AUTHORIZATION_FAILED and no results.
  ``users`` null or empty describes every user with a credential (here by name); a named user without
  one gets RESOURCE_NOT_FOUND "Attempt to describe a user credential that does not exist: <name>"; a
  name given more than once gets one result, DUPLICATE_RESOURCE "Cannot describe SCRAM credentials for
  the same user twice in a single request: <name>". A credential is described by its mechanism code
  (1 SCRAM-SHA-256, 2 SCRAM-SHA-512) and iteration count only.
- Alter needs ALTER on the cluster, else every user named gets CLUSTER_AUTHORIZATION_FAILED (one result
  per distinct user, sorted, as ``AlterUserScramCredentialsRequest.getErrorResponse`` builds it).
- Alter answers one result per user. Deletions are looked at first, then upsertions, and a user's first
  refusal stands (later entries for that user are not looked at). A user named by a second deletion or
  upsertion, whatever the mechanisms, gets DUPLICATE_RESOURCE "A user credential cannot be altered twice
  in the same request" and none of its changes apply. Then, in Kafka's order: an empty name is
  UNACCEPTABLE_CREDENTIAL "Username must not be empty"; a mechanism code other than 1 or 2 is
  UNSUPPORTED_SASL_MECHANISM "Unknown SCRAM mechanism"; an upsertion's iterations below 4096 or above
  16384 are UNACCEPTABLE_CREDENTIAL "Too few iterations" / "Too many iterations"; deleting a credential
  that does not exist is RESOURCE_NOT_FOUND "Attempt to delete a user credential that does not exist".
  The accepted changes are applied; a refused user does not stop the others.
- An upsertion carries the salt and Hi(password, salt, iterations); the broker keeps only StoredKey and
  ServerKey derived from them (``ScramCredential.from_salted_password``).

Moldau's own choices: an upsertion with an empty salt, or a salted password that is not the mechanism's
digest size (32 bytes for SHA-256, 64 for SHA-512), is UNACCEPTABLE_CREDENTIAL; Kafka would store it,
and no client could ever log in with it. Results come in the order users first appear in the request
(Kafka's follow its hash maps). The denial message is Kafka's "Cluster authorization failed." (Kafka's
Alter denial names its internal request object instead). Kafka's metadata-version gate (UNSUPPORTED_VERSION
before SCRAM-capable metadata) does not apply: this broker always supports SCRAM.

Accepted changes are audit-logged with the user, mechanism and principal; salts, salted passwords and
keys never are. The store writes its file with fsync, so changes run in a worker thread; when it cannot be
written, the changes not made are answered UNKNOWN_SERVER_ERROR (Kafka's answer to a controller failure).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from broker.handlers import RequestContext
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from broker.security.scram_credentials import ScramCredential, ScramCredentialStore, iterations_problem
from protocol import messages
from protocol.errors import ErrorCode, KafkaError

log = structlog.get_logger()

# Kafka's ScramMechanism type codes (org.apache.kafka.clients.admin.ScramMechanism); 0 is UNKNOWN.
SCRAM_MECHANISM_CODES: dict[str, int] = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISM_BY_CODE: dict[int, str] = {code: name for name, code in SCRAM_MECHANISM_CODES.items()}

_CLUSTER_DENIED = "Cluster authorization failed."
_ALTERED_TWICE = "A user credential cannot be altered twice in the same request"
_DESCRIBED_TWICE = "Cannot describe SCRAM credentials for the same user twice in a single request: "
_DESCRIBE_MISSING = "Attempt to describe a user credential that does not exist: "
_DELETE_MISSING = "Attempt to delete a user credential that does not exist"
_NOT_WRITTEN = "The SCRAM credential store could not be written"


# ---------------------------------------------------------------- DescribeUserScramCredentials

def handle_describe_user_scram_credentials(header: Any, body: Any, ctx: RequestContext) -> Any:
    response = messages.DescribeUserScramCredentialsResponse
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        return response(throttle_time_ms=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                        error_message=_CLUSTER_DENIED, results=[])
    store = ctx.broker.scram_credentials
    if not body.users:  # null or empty: every user
        requested: dict[str, bool] = dict.fromkeys(store.users(), False)
    else:
        # name -> named more than once; a dict keeps the request's order.
        requested = {}
        for user in body.users:
            requested[user.name] = user.name in requested
    described = store.describe(name for name, twice in requested.items() if not twice)
    result = response.DescribeUserScramCredentialsResult
    results = []
    for name, twice in requested.items():
        if twice:
            results.append(result(user=name, error_code=int(ErrorCode.DUPLICATE_RESOURCE),
                                  error_message=_DESCRIBED_TWICE + name, credential_infos=[]))
        elif name not in described:
            results.append(result(user=name, error_code=int(ErrorCode.RESOURCE_NOT_FOUND),
                                  error_message=_DESCRIBE_MISSING + name, credential_infos=[]))
        else:
            infos = [response.CredentialInfo(mechanism=SCRAM_MECHANISM_CODES[mechanism], iterations=iterations)
                     for mechanism, iterations in described[name] if mechanism in SCRAM_MECHANISM_CODES]
            results.append(result(user=name, error_code=0, error_message=None, credential_infos=infos))
    return response(throttle_time_ms=0, error_code=0, error_message=None, results=results)


# ---------------------------------------------------------------- AlterUserScramCredentials

@dataclass(frozen=True)
class _Deletion:
    user: str
    mechanism: str


@dataclass(frozen=True)
class _Upsertion:
    user: str
    credential: ScramCredential


def _mechanism(user: str, code: int) -> str:
    """The mechanism name of a valid (user, mechanism code) pair; KafkaError where Kafka's
    ``validateScramUsernameAndMechanism`` refuses."""
    if not user:
        raise KafkaError(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")
    mechanism = MECHANISM_BY_CODE.get(code)
    if mechanism is None:
        raise KafkaError(ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")
    return mechanism


def _deletion(store: ScramCredentialStore, entry: Any) -> _Deletion:
    mechanism = _mechanism(entry.name, entry.mechanism)
    if store.get(mechanism, entry.name) is None:
        raise KafkaError(ErrorCode.RESOURCE_NOT_FOUND, _DELETE_MISSING)
    return _Deletion(entry.name, mechanism)


def _upsertion(entry: Any) -> _Upsertion:
    mechanism = _mechanism(entry.name, entry.mechanism)
    problem = iterations_problem(entry.iterations)
    if problem is not None:
        raise KafkaError(ErrorCode.UNACCEPTABLE_CREDENTIAL, problem)
    salt, salted = bytes(entry.salt), bytes(entry.salted_password)
    if not salt:
        raise KafkaError(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt must not be empty")
    try:
        credential = ScramCredential.from_salted_password(mechanism, salted, salt, entry.iterations)
    except ValueError as exc:  # the salted password's length; the message names sizes, never bytes
        raise KafkaError(ErrorCode.UNACCEPTABLE_CREDENTIAL, str(exc)) from None
    return _Upsertion(entry.name, credential)


def _apply(store: ScramCredentialStore, changes: list[_Deletion | _Upsertion]) -> dict[str, KafkaError]:
    """Apply the accepted changes in order (in a worker thread: each one fsyncs the store's file); returns
    the users whose change did not happen: a credential deleted by someone else meanwhile, or, once the file
    cannot be written, that change and every later one (the store changes memory only after the file)."""
    failed: dict[str, KafkaError] = {}
    for i, change in enumerate(changes):
        try:
            if isinstance(change, _Upsertion):
                store.upsert(change.user, change.credential)
            elif not store.delete(change.mechanism, change.user):
                failed[change.user] = KafkaError(ErrorCode.RESOURCE_NOT_FOUND, _DELETE_MISSING)
        except OSError as exc:
            # Logged here without the traceback: its frames hold the request's salted passwords.
            log.warning("scram.store_write_failed", path=str(store.path), reason=exc.strerror or type(exc).__name__)
            for rest in changes[i:]:
                failed[rest.user] = KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, _NOT_WRITTEN)
            break
    return failed


async def handle_alter_user_scram_credentials(header: Any, body: Any, ctx: RequestContext) -> Any:
    response = messages.AlterUserScramCredentialsResponse
    result = response.AlterUserScramCredentialsResult
    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        users = sorted({e.name for e in body.deletions} | {e.name for e in body.upsertions})
        return response(throttle_time_ms=0, results=[
            result(user=user, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED), error_message=_CLUSTER_DENIED)
            for user in users])
    store = ctx.broker.scram_credentials
    accepted: dict[str, _Deletion | _Upsertion] = {}
    refused: dict[str, KafkaError] = {}
    order: dict[str, None] = {}  # users in order of first appearance
    for entry, is_deletion in [*((d, True) for d in body.deletions), *((u, False) for u in body.upsertions)]:
        user = entry.name
        order.setdefault(user, None)
        if user in refused:
            continue
        if accepted.pop(user, None) is not None:
            refused[user] = KafkaError(ErrorCode.DUPLICATE_RESOURCE, _ALTERED_TWICE)
            continue
        try:
            accepted[user] = _deletion(store, entry) if is_deletion else _upsertion(entry)
        except KafkaError as exc:
            refused[user] = exc
    failed = await asyncio.to_thread(_apply, store, list(accepted.values())) if accepted else {}
    for user, refusal in failed.items():
        del accepted[user]
        refused[user] = refusal
    results = []
    for user in order:
        refusal = refused.get(user)
        if refusal is not None:
            ctx.log_rejected("scram.alter_refused", user=user, error=refusal.code.name, reason=refusal.message)
            results.append(result(user=user, error_code=int(refusal.code), error_message=refusal.message))
            continue
        change = accepted[user]
        if isinstance(change, _Upsertion):
            ctx.log_audit("scram.credential_upserted", user=user, mechanism=change.credential.mechanism,
                          iterations=change.credential.iterations)
        else:
            ctx.log_audit("scram.credential_deleted", user=user, mechanism=change.mechanism)
        results.append(result(user=user, error_code=0, error_message=None))
    return response(throttle_time_ms=0, results=results)
