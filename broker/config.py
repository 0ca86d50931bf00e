"""Broker configuration: the settings registry (Kafka names, types, defaults, docs), the typed
``BrokerConfig`` built from layered sources, and the data directory's ``meta.properties``.

Sources, lowest precedence first: registry defaults, a Kafka-style ``.properties`` file, environment
variables ``MOLDAU_<NAME>`` (dots as underscores, upper case), and command-line ``--set NAME=VALUE``.
The registry (``SETTINGS``) is derived from the ``BrokerConfig`` fields, so a setting is declared once and
DescribeConfigs can list every setting with its doc, default and where its value came from.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from storage.file.open_files import DEFAULT_MAX_OPEN_SEGMENT_FILES
from storage.interface import MEMORY_MAX_BYTES_SETTING, UNBOUNDED, is_postgres_url

# Kafka's message.max.bytes default (1 MiB plus a batch's log overhead), also max.message.bytes' default.
MESSAGE_MAX_BYTES = 1048588

if TYPE_CHECKING:
    from broker.listeners import ListenerSpec

ENV_PREFIX = "MOLDAU_"
MEMORY_STORAGE_URL = "memory://"
META_PROPERTIES = "meta.properties"

# Where a value came from, named like DescribeConfigs' ConfigSource so that API can report it directly.
SOURCE_DEFAULT = "DEFAULT_CONFIG"
SOURCE_STATIC = "STATIC_BROKER_CONFIG"


class ConfigError(ValueError):
    """A setting the user gave is unknown, malformed or inconsistent; the message says which and why."""


class DataDirError(ConfigError):
    """The data directory cannot be created, read or written, or its meta.properties disagrees."""


@dataclass(frozen=True)
class Setting:
    """One broker setting as the registry describes it."""

    name: str
    type: type
    default: Any
    doc: str
    synonyms: tuple[str, ...] = ()
    minimum: int | None = None
    attr: str = ""

    @property
    def sensitive(self) -> bool:
        """A secret: DescribeConfigs and logs never show its value (Kafka's PASSWORD type)."""
        return "password" in self.name or self.name.endswith("jaas.config")

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.name.replace(".", "_").upper()


def _setting(name: str, default: Any, doc: str, *, synonyms: tuple[str, ...] = (),
             minimum: int | None = None) -> Any:
    return field(default=default, metadata={"setting": (name, doc, synonyms, minimum)})


@dataclass(frozen=True)
class BrokerConfig:
    """Typed broker settings. Attribute names are the Kafka names with dots as underscores."""

    listeners: str = _setting(
        "listeners", "PLAINTEXT://localhost:9092",
        "The listeners, as NAME://HOST:PORT separated by commas (or one bare HOST:PORT, a PLAINTEXT "
        "listener). A name is a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or any name "
        "listener.security.protocol.map maps to one. Port 0 picks a free port; host 0.0.0.0 or empty "
        "listens on every interface.")
    advertised_listeners: str | None = _setting(
        "advertised.listeners", None,
        "The addresses given to clients in Metadata, by listener: NAME://HOST:PORT separated by commas (a "
        "bare HOST:PORT with one listener). A client is told the address of the listener it connected to. "
        "Default, for each listener: its host (the machine's hostname for a wildcard host) and bound port.")
    listener_security_protocol_map: str = _setting(
        "listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "Listener names and their security protocols, as NAME:PROTOCOL pairs separated by commas.")
    node_id: int = _setting("node.id", 1, "This broker's node id.", synonyms=("broker.id",), minimum=0)
    broker_rack: str | None = _setting("broker.rack", None, "The rack of this broker, reported in Metadata.")
    broker_session_timeout_ms: int = _setting(
        "broker.session.timeout.ms", 9000,
        "With PostgreSQL storage: how long a broker stays registered without a heartbeat (its lease); a "
        "broker whose database session ends is dropped at once.", minimum=1000)
    broker_heartbeat_interval_ms: int = _setting(
        "broker.heartbeat.interval.ms", 2000,
        "With PostgreSQL storage: how often a broker renews its lease and re-reads the live brokers.",
        minimum=50)
    log_dirs: str | None = _setting(
        "log.dirs", None,
        "The data directory (one). Default: $XDG_DATA_HOME/moldau, else ~/.local/share/moldau.",
        synonyms=("log.dir",))
    storage_url: str | None = _setting(
        "storage.url", None,
        "Partition storage engine: memory:// (nothing is written to disk), file:///PATH, or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (brokers sharing one database form a cluster; no data "
        "directory). Default: file:// in the data directory.")
    socket_request_max_bytes: int = _setting(
        "socket.request.max.bytes", 104857600,
        "The largest request frame accepted; a larger size prefix closes the connection.", minimum=1)
    queued_max_requests: int = _setting(
        "queued.max.requests", 500,
        "Requests in flight on one connection before the broker stops reading from it.", minimum=1)
    connections_max_idle_ms: int = _setting(
        "connections.max.idle.ms", 600000,
        "Close connections idle for this long. Negative: never.")
    auto_create_topics_enable: bool = _setting(
        "auto.create.topics.enable", True, "Create a topic when Metadata names one that does not exist.")
    num_partitions: int = _setting(
        "num.partitions", 1, "Partition count of auto-created topics.", minimum=1)
    message_max_bytes: int = _setting(
        "message.max.bytes", MESSAGE_MAX_BYTES, "The largest record batch accepted.", minimum=0)
    group_initial_rebalance_delay_ms: int = _setting(
        "group.initial.rebalance.delay.ms", 3000,
        "How long the coordinator waits for more members before the first rebalance of an empty group.",
        minimum=0)
    group_min_session_timeout_ms: int = _setting(
        "group.min.session.timeout.ms", 6000,
        "The smallest session timeout a JoinGroup may ask for; smaller ones get INVALID_SESSION_TIMEOUT.",
        minimum=0)
    group_max_session_timeout_ms: int = _setting(
        "group.max.session.timeout.ms", 1800000,
        "The largest session timeout a JoinGroup may ask for; larger ones get INVALID_SESSION_TIMEOUT.",
        minimum=0)
    group_max_size: int = _setting(
        "group.max.size", 2147483647,
        "The most members a consumer group accepts; further JoinGroups get GROUP_MAX_SIZE_REACHED.", minimum=1)
    offsets_topic_num_partitions: int = _setting(
        "offsets.topic.num.partitions", 50,
        "Partitions of __consumer_offsets when the group coordinator creates it (on its first write).",
        minimum=1)
    offsets_topic_segment_bytes: int = _setting(
        "offsets.topic.segment.bytes", 104857600, "segment.bytes of __consumer_offsets when it is created.",
        minimum=14)
    offsets_retention_minutes: int = _setting(
        "offsets.retention.minutes", 10080,
        "How long committed offsets are kept once their group is Empty (or, for groups that only commit, "
        "after the last commit).", minimum=1)
    offsets_retention_check_interval_ms: int = _setting(
        "offsets.retention.check.interval.ms", 600000, "How often expired committed offsets are removed.",
        minimum=1)
    transaction_state_log_num_partitions: int = _setting(
        "transaction.state.log.num.partitions", 50,
        "Partitions of __transaction_state when the transaction coordinator creates it (on its first write).",
        minimum=1)
    transaction_state_log_segment_bytes: int = _setting(
        "transaction.state.log.segment.bytes", 104857600, "segment.bytes of __transaction_state when it is created.",
        minimum=14)
    transaction_max_timeout_ms: int = _setting(
        "transaction.max.timeout.ms", 900000,
        "The longest transaction.timeout.ms a producer may ask for; longer gets INVALID_TRANSACTION_TIMEOUT.",
        minimum=1)
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = _setting(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms", 10000,
        "How often transactions open longer than their transaction.timeout.ms are aborted.", minimum=1)
    transactional_id_expiration_ms: int = _setting(
        "transactional.id.expiration.ms", 604800000,
        "How long a transactional id with no transaction in progress is kept after its last use.", minimum=1)
    transaction_remove_expired_transaction_cleanup_interval_ms: int = _setting(
        "transaction.remove.expired.transaction.cleanup.interval.ms", 3600000,
        "How often transactional ids past transactional.id.expiration.ms are removed.", minimum=1)
    offset_metadata_max_bytes: int = _setting(
        "offset.metadata.max.bytes", 4096,
        "The longest metadata an OffsetCommit may attach to an offset; longer gets OFFSET_METADATA_TOO_LARGE.",
        minimum=0)

    delete_topic_enable: bool = _setting(
        "delete.topic.enable", True, "Allow DeleteTopics; when false it answers TOPIC_DELETION_DISABLED.")
    default_replication_factor: int = _setting(
        "default.replication.factor", 1, "Replication factor of auto-created topics (single node: 1).",
        minimum=1)
    fetch_max_bytes: int = _setting(
        "fetch.max.bytes", 57671680, "The most record bytes one Fetch response returns (at least one batch).",
        minimum=0)
    max_incremental_fetch_session_cache_slots: int = _setting(
        "max.incremental.fetch.session.cache.slots", 1000,
        "How many incremental fetch sessions (KIP-227) the broker keeps; 0 disables them.", minimum=0)
    min_incremental_fetch_session_eviction_ms: int = _setting(
        "min.incremental.fetch.session.eviction.ms", 120000,
        "How long a fetch session is protected from eviction after its last use.", minimum=0)
    log_retention_check_interval_ms: int = _setting(
        "log.retention.check.interval.ms", 300000,
        "How often each log deletes segments that retention.ms / retention.bytes no longer keep.", minimum=1)
    log_retention_hours: int | None = _setting(
        "log.retention.hours", None, "Default retention.ms in hours (log.retention.ms wins when both are set).")
    log_roll_hours: int | None = _setting(
        "log.roll.hours", None, "Default segment.ms in hours (log.roll.ms wins when both are set).")

    # Broker defaults of topic configs (see broker/topic_config.py): None means Kafka's default. Kept as
    # text here and parsed by the topic config definitions, so both places share one validator.
    log_cleanup_policy: str | None = _setting("log.cleanup.policy", None, "Default cleanup.policy.")
    compression_type: str | None = _setting("compression.type", None, "Default compression.type.")
    log_cleaner_delete_retention_ms: str | None = _setting(
        "log.cleaner.delete.retention.ms", None, "Default delete.retention.ms.")
    log_segment_delete_delay_ms: str | None = _setting(
        "log.segment.delete.delay.ms", None, "Default file.delete.delay.ms.")
    log_flush_interval_messages: str | None = _setting(
        "log.flush.interval.messages", None, "Default flush.messages.")
    log_flush_interval_ms: str | None = _setting("log.flush.interval.ms", None, "Default flush.ms.")
    log_index_interval_bytes: str | None = _setting(
        "log.index.interval.bytes", None, "Default index.interval.bytes.")
    log_cleaner_max_compaction_lag_ms: str | None = _setting(
        "log.cleaner.max.compaction.lag.ms", None, "Default max.compaction.lag.ms.")
    log_message_timestamp_after_max_ms: str | None = _setting(
        "log.message.timestamp.after.max.ms", None, "Default message.timestamp.after.max.ms.")
    log_message_timestamp_before_max_ms: str | None = _setting(
        "log.message.timestamp.before.max.ms", None, "Default message.timestamp.before.max.ms.")
    log_message_timestamp_type: str | None = _setting(
        "log.message.timestamp.type", None, "Default message.timestamp.type.")
    log_cleaner_min_cleanable_ratio: str | None = _setting(
        "log.cleaner.min.cleanable.ratio", None, "Default min.cleanable.dirty.ratio.")
    log_cleaner_min_compaction_lag_ms: str | None = _setting(
        "log.cleaner.min.compaction.lag.ms", None, "Default min.compaction.lag.ms.")
    min_insync_replicas: str | None = _setting("min.insync.replicas", None, "Default min.insync.replicas.")
    log_preallocate: str | None = _setting("log.preallocate", None, "Default preallocate.")
    log_retention_bytes: str | None = _setting("log.retention.bytes", None, "Default retention.bytes.")
    log_retention_ms: str | None = _setting("log.retention.ms", None, "Default retention.ms.")
    log_segment_bytes: str | None = _setting("log.segment.bytes", None, "Default segment.bytes.")
    log_index_size_max_bytes: str | None = _setting(
        "log.index.size.max.bytes", None, "Default segment.index.bytes.")
    log_roll_jitter_ms: str | None = _setting("log.roll.jitter.ms", None, "Default segment.jitter.ms.")
    log_roll_ms: str | None = _setting("log.roll.ms", None, "Default segment.ms.")
    unclean_leader_election_enable: str | None = _setting(
        "unclean.leader.election.enable", None, "Default unclean.leader.election.enable.")

    # connection limits, request memory and log throttling (broker/connection_limits.py, broker/log_throttle.py)
    max_connections: int = _setting(
        "max.connections", 2147483647,
        "The most client connections open at once; a connection over it is closed when accepted.", minimum=0)
    max_connections_per_ip: int = _setting(
        "max.connections.per.ip", 2147483647,
        "The most connections open at once from one IP address; a connection over it is closed when "
        "accepted.", minimum=0)
    max_connections_per_ip_overrides: str = _setting(
        "max.connections.per.ip.overrides", "",
        "Per-IP (or host name) exceptions to max.connections.per.ip, as host:count[,host:count], "
        "e.g. 127.0.0.1:200,clients.example:50.")
    max_connection_creation_rate: int = _setting(
        "max.connection.creation.rate", 2147483647,
        "New connections accepted per second; faster ones are throttled (served only when their turn "
        "comes), not refused.", minimum=1)
    queued_max_request_bytes: int = _setting(
        "queued.max.request.bytes", 268435456,
        "Request bytes received and not yet answered, over all connections (a frame being received counts "
        "by its announced size); while reached, the broker stops reading requests. Kafka's default -1 "
        "(unbounded) lets clients exhaust memory, so Moldau bounds it to 256 MiB: room for two requests "
        "of the default socket.request.max.bytes and many ordinary ones. -1: unbounded.", minimum=-1)
    queued_max_request_bytes_per_connection: int = _setting(
        "queued.max.request.bytes.per.connection", 16777216,
        "Request bytes one connection may have received and not yet answered before the broker stops "
        "reading from it (one frame larger than this is still read, alone).", minimum=1)
    log_throttle_window_ms: int = _setting(
        "log.throttle.window.ms", 60000,
        "Repeated bad-input warnings of one kind from one host are logged once per this window, then "
        "summarised with a count (log.suppressed).", minimum=0)
    log_throttle_max_keys: int = _setting(
        "log.throttle.max.keys", 1024,
        "How many (warning, host) pairs the log throttle tracks; the oldest is summarised and dropped "
        "when more arrive.", minimum=1)

    # test tooling (issue 14): version profiles and the control endpoint
    kafka_version: str | None = _setting(
        "kafka.version", None,
        "Behave like this Apache Kafka release: advertise the API keys and versions it offered (within "
        "those Moldau serves) and apply its client-visible behaviours, e.g. 4.0's removal of old request "
        "versions (KIP-896). One of 2.8, 3.0, 3.9, 4.0. Default: everything Moldau serves. Moldau's own "
        "setting (`moldau serve --kafka-version`).")
    control_endpoint_enable: bool = _setting(
        "control.endpoint.enable", False,
        "Serve Moldau's control endpoint (fault injection, see `moldau fault`): HTTP requests on the "
        "broker's own port, told apart from Kafka frames by their first bytes. Anyone who reaches the port "
        "can then make the broker fail on purpose, so it is meant for test brokers; the ci profile turns "
        "it on. Moldau's own setting.")

    # memory engine
    memory_max_bytes: int = _setting(
        MEMORY_MAX_BYTES_SETTING, UNBOUNDED,
        "With memory:// storage, the most record-batch bytes all partitions together may hold (retention "
        "and DeleteRecords free them); an append past it is refused with KAFKA_STORAGE_ERROR, which clients "
        "retry. -1: unbounded.", minimum=UNBOUNDED)

    # topic creation limits
    controller_max_records_per_batch: int = _setting(
        "controller.max.records.per.batch", 10000,
        "The most partitions one CreateTopics or CreatePartitions request (or one automatic creation) may "
        "create; more is refused with POLICY_VIOLATION, as Kafka's controller refuses an operation of more "
        "records than one batch holds.", minimum=1)

    # file storage: open descriptors
    log_max_open_segment_files: int = _setting(
        "log.max.open.segment.files", DEFAULT_MAX_OPEN_SEGMENT_FILES,
        "File storage: the most descriptors of segment (.log) files kept open, active segments "
        "included; the least recently used idle one is closed beyond it and reopened on its next use, "
        "so the broker needs about this + connections descriptors (ulimit -n) however many partitions "
        "it has. Kafka keeps every segment open instead.", minimum=1)

    # produce limits (issue 12)
    message_max_decompressed_bytes: int = _setting(
        "message.max.decompressed.bytes", 67108864,
        "The most bytes one compressed Produce batch may decompress to while the broker checks its records "
        "(Kafka decompresses every compressed batch to validate it). A larger batch gets MESSAGE_TOO_LARGE, "
        "which makes the Java producer split it; decompression stops at this bound, so a small batch cannot "
        "make the broker allocate gigabytes. Moldau's own setting (Kafka streams and has no bound).",
        minimum=1)
    producer_state_max_entries: int = _setting(
        "producer.state.max.entries", 50000,
        "The most idempotent-producer entries (one per producer and partition) the broker keeps, over all "
        "partitions. Kafka accepts batches from producer ids it never handed out and keeps their state for "
        "producer.id.expiration.ms, so a client could grow it without limit; past this bound the least "
        "recently used entry is dropped, and that producer is then treated as Kafka treats an expired one "
        "(its next batch is accepted at any sequence; a retry of an older batch is no longer deduplicated). "
        "An entry with its last five batches takes about 1.4 KB (the default: about 70 MB). Moldau's own "
        "setting.", minimum=1)

    # TLS (issue 15): Kafka's names; each may also be set for one listener as listener.name.<name>.<setting>
    ssl_keystore_type: str = _setting(
        "ssl.keystore.type", "PEM",
        "The key store format. PEM only: one file holding the private key and its certificate chain (Kafka's "
        "default, JKS, is Java's own format; convert it with keytool -importkeystore to PKCS12 and then with "
        "openssl pkcs12 -nodes to PEM).")
    ssl_keystore_location: str | None = _setting(
        "ssl.keystore.location", None,
        "PEM file with the listener's private key and certificate chain (SSL and SASL_SSL listeners). "
        "Re-read when the file changes: new connections get the new certificate, no restart.")
    ssl_keystore_password: str | None = _setting(
        "ssl.keystore.password", None, "Password of an encrypted private key in the key store file (with "
        "PEM, the same as ssl.key.password, which wins when both are set).")
    ssl_key_password: str | None = _setting(
        "ssl.key.password", None, "Password of an encrypted private key in the key store file.")
    ssl_truststore_type: str = _setting(
        "ssl.truststore.type", "PEM", "The trust store format. PEM only.")
    ssl_truststore_location: str | None = _setting(
        "ssl.truststore.location", None,
        "PEM file of the CA certificates that client certificates are checked against "
        "(ssl.client.auth=requested or required). Re-read when it changes.")
    ssl_truststore_certificates: str | None = _setting(
        "ssl.truststore.certificates", None, "The trust store's CA certificates as PEM text, instead of a file.")
    ssl_truststore_password: str | None = _setting(
        "ssl.truststore.password", None, "Not used by PEM trust stores; accepted so Kafka configs carry over.")
    ssl_client_auth: str = _setting(
        "ssl.client.auth", "none",
        "Client certificates (mutual TLS): none, requested (checked when sent) or required. A client's "
        "principal is its certificate's subject (see ssl.principal.mapping.rules).")
    ssl_enabled_protocols: str = _setting(
        "ssl.enabled.protocols", "TLSv1.2,TLSv1.3", "TLS versions accepted: TLSv1.2 and/or TLSv1.3.")
    ssl_cipher_suites: str | None = _setting(
        "ssl.cipher.suites", None, "TLS 1.2 cipher suites in OpenSSL's notation, separated by commas or "
        "colons. Default: OpenSSL's.")
    ssl_principal_mapping_rules: str = _setting(
        "ssl.principal.mapping.rules", "DEFAULT",
        "Rules from a client certificate's distinguished name to a user name: RULE:pattern/replacement/[LU] "
        "entries and DEFAULT (the whole name), separated by commas; the first rule that matches wins.")

    # SASL (issue 15)
    sasl_enabled_mechanisms: str = _setting(
        "sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "SASL mechanisms SASL listeners accept: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER. (Kafka's "
        "default, GSSAPI, is Kerberos, which Moldau does not offer.) PLAIN users come from "
        "listener.name.<name>.plain.sasl.jaas.config or sasl.plain.users.file; SCRAM users from "
        "`moldau serve --add-scram`, `moldau scram` or AlterUserScramCredentials.")
    sasl_plain_users_file: str | None = _setting(
        "sasl.plain.users.file", None,
        "A .properties file of PLAIN users (name=password), re-read when it changes. Moldau's own setting; "
        "adds to the users of the listener's plain.sasl.jaas.config.")
    connections_max_reauth_ms: int = _setting(
        "connections.max.reauth.ms", 0,
        "The longest a SASL authentication lasts before the client must authenticate again (KIP-368); a "
        "connection that goes on past it without doing so is closed. 0: no limit (except an OAUTHBEARER "
        "token's own expiry).", minimum=0)
    connection_failed_authentication_delay_ms: int = _setting(
        "connection.failed.authentication.delay.ms", 100,
        "How long the answer to a failed authentication is held back before the connection closes, which "
        "slows down password guessing.", minimum=0)
    sasl_oauthbearer_jwks_endpoint_url: str | None = _setting(
        "sasl.oauthbearer.jwks.endpoint.url", None,
        "OAUTHBEARER: a file:// URL (or path) of a JWKS file; tokens must then be signed by one of its keys. "
        "Unset: unsecured tokens (alg none) are accepted, as Kafka's default handler does (development only).")
    sasl_oauthbearer_expected_audience: str | None = _setting(
        "sasl.oauthbearer.expected.audience", None,
        "OAUTHBEARER with a JWKS: audiences (comma-separated), one of which a token's aud must name.")
    sasl_oauthbearer_expected_issuer: str | None = _setting(
        "sasl.oauthbearer.expected.issuer", None, "OAUTHBEARER with a JWKS: the iss a token must have.")
    sasl_oauthbearer_sub_claim_name: str = _setting(
        "sasl.oauthbearer.sub.claim.name", "sub", "OAUTHBEARER: the claim naming the principal.")
    sasl_oauthbearer_scope_claim_name: str = _setting(
        "sasl.oauthbearer.scope.claim.name", "scope", "OAUTHBEARER: the claim holding the token's scopes.")
    sasl_oauthbearer_clock_skew_seconds: int = _setting(
        "sasl.oauthbearer.clock.skew.seconds", 30,
        "OAUTHBEARER: how far the token's times (exp, nbf, iat) may be off the broker's clock.", minimum=0)

    # Authorization (issue 15)
    authorizer_class_name: str | None = _setting(
        "authorizer.class.name", None,
        "Turns on authorization with ACLs: org.apache.kafka.metadata.authorizer.StandardAuthorizer (Kafka's; "
        "kafka.security.authorizer.AclAuthorizer is taken as the same). Unset: every request is allowed and "
        "the ACL APIs answer SECURITY_DISABLED. ACLs are kept in acls.json in the data directory.")
    super_users: str | None = _setting(
        "super.users", None,
        "Principals allowed everything whatever the ACLs say, separated by semicolons: "
        "User:admin;User:CN=ops,O=Example.")
    allow_everyone_if_no_acl_found: bool = _setting(
        "allow.everyone.if.no.acl.found", False,
        "With an authorizer: allow every request on a resource that no ACL applies to (else only super users).")

    # Client quotas (issue 15)
    quota_window_num: int = _setting(
        "quota.window.num", 11,
        "Client quotas: how many samples the byte and request rates are measured over. A client may burst "
        "about (samples - 1) x window size x its quota before it is throttled.", minimum=2)
    quota_window_size_seconds: int = _setting(
        "quota.window.size.seconds", 1, "Client quotas: the length of one rate sample, in seconds.", minimum=1)

    # Not a setting: `moldau serve --add-scram` values (kafka-storage format's syntax), stored at start.
    add_scram: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # Not settings: settings given for one listener (listener.name.<name>.<setting>), by their full name.
    listener_overrides: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Not settings: where each setting's value came from (for DescribeConfigs' ConfigSource).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Validates listeners and storage.url up front so a bad value fails at load, not at start().
        specs = self.listener_specs
        if self.advertised_listeners is not None:
            from broker.listeners import parse_advertised

            parse_advertised(self.advertised_listeners, specs)
        _check_security(self, specs)
        if self.storage_url is not None:
            storage_path = _storage_path(self.storage_url)
            if is_postgres_url(self.storage_url) and self.log_dirs:
                raise ConfigError(f"setting 'log.dirs' ({self.log_dirs}) names a data directory, but storage.url "
                                  f"is a PostgreSQL database, which keeps everything; drop log.dirs")
            if storage_path is not None and self.log_dirs and Path(self.log_dirs).expanduser() != storage_path:
                raise ConfigError(f"settings 'log.dirs' ({self.log_dirs}) and 'storage.url' ({self.storage_url}) "
                                  f"name different directories; give one of them")
        if self.kafka_version is not None:
            from broker.version_profiles import KAFKA_VERSIONS

            if self.kafka_version not in KAFKA_VERSIONS:
                raise ConfigError(f"setting 'kafka.version' must be one of {', '.join(KAFKA_VERSIONS)}, "
                                  f"got {self.kafka_version!r}")
        if "," in (self.log_dirs or ""):
            raise ConfigError(f"setting 'log.dirs' takes one directory, got {self.log_dirs!r}")

    # ------------------------------------------------------------ derived values

    @property
    def listener_specs(self) -> list[ListenerSpec]:
        """The configured listeners, in order (``broker/listeners.py``)."""
        from broker.listeners import parse_listeners, parse_protocol_map

        return parse_listeners(self.listeners, parse_protocol_map(self.listener_security_protocol_map))

    @property
    def listen_host(self) -> str:
        """The first listener's host."""
        return self.listener_specs[0].host

    @property
    def listen_port(self) -> int:
        """The first listener's port."""
        return self.listener_specs[0].port

    def listener_setting(self, listener: str, name: str) -> Any:
        """A setting as one listener sees it: ``listener.name.<listener>.<name>`` when given, else the
        broker-wide value (None for settings that exist only per listener, like a mechanism's
        ``plain.sasl.jaas.config``)."""
        key = f"{LISTENER_PREFIX}{listener.lower()}.{name}"
        if key in self.listener_overrides:
            return self.listener_overrides[key]
        s = _BY_NAME.get(name)
        return getattr(self, s.attr) if s is not None else None

    @property
    def in_memory(self) -> bool:
        return self.storage_url == MEMORY_STORAGE_URL

    @property
    def shared_storage(self) -> bool:
        """Whether storage is a database other brokers may share (PostgreSQL): no data directory."""
        return self.storage_url is not None and is_postgres_url(self.storage_url)

    @property
    def data_dir(self) -> Path | None:
        """The directory holding meta.properties and file storage; None for in-memory and PostgreSQL storage."""
        if self.in_memory or self.shared_storage:
            return None
        if self.log_dirs:
            return Path(self.log_dirs).expanduser()
        if self.storage_url is not None:
            return _storage_path(self.storage_url)
        return default_data_dir()

    @property
    def effective_storage_url(self) -> str:
        if self.storage_url is not None:
            return self.storage_url
        data_dir = self.data_dir
        assert data_dir is not None
        return data_dir.absolute().as_uri()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, /, **kwargs: Any) -> BrokerConfig:
        """Build from Kafka names (``{"num.partitions": 3}``) and/or attribute names (``num_partitions=3``),
        with the same checks as every other source."""
        merged: dict[str, Any] = dict(settings or {})
        merged.update({_BY_ATTR[k].name if k in _BY_ATTR else k: v for k, v in kwargs.items()})
        return build_config([("code", merged)])

    def get(self, name: str) -> Any:
        """The value of a setting by its Kafka name (or a synonym)."""
        return getattr(self, _lookup(name, "get()").attr)

    def describe(self) -> list[tuple[Setting, Any, str]]:
        """(setting, value, source) for every setting, in registry order."""
        return [(s, getattr(self, s.attr), self.sources.get(s.name, SOURCE_DEFAULT)) for s in SETTINGS]


def _check_security(config: BrokerConfig, specs: list[ListenerSpec]) -> None:
    """Settings of TLS and SASL listeners, checked at load (files are read at start)."""
    if any(spec.uses_tls or spec.uses_sasl for spec in specs):
        from broker.security.listener_settings import check_listener_settings

        for spec in specs:
            check_listener_settings(config, spec)


def _build_registry() -> tuple[Setting, ...]:
    settings = []
    for f in dataclasses.fields(BrokerConfig):
        if "setting" not in f.metadata:
            continue
        name, doc, synonyms, minimum = f.metadata["setting"]
        # Annotations are strings (postponed evaluation); the registry needs the runtime type.
        base = {"int": int, "bool": bool}.get(str(f.type).split(" ")[0], str)
        settings.append(Setting(name, base, f.default, doc, synonyms, minimum, f.name))
    return tuple(settings)


SETTINGS: tuple[Setting, ...] = _build_registry()
_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
_BY_NAME.update({syn: s for s in SETTINGS for syn in s.synonyms})
_BY_ATTR: dict[str, Setting] = {s.attr: s for s in SETTINGS}
_BY_ENV: dict[str, Setting] = {s.env_name: s for s in SETTINGS}
_BY_ENV.update({ENV_PREFIX + syn.replace(".", "_").upper(): s for s in SETTINGS for syn in s.synonyms})


LISTENER_PREFIX = "listener.name."
JAAS_CONFIG = "sasl.jaas.config"
# Settings that listener.name.<listener>. may override.
LISTENER_SETTING_PREFIXES = ("ssl.", "sasl.", "connections.max.reauth.ms")
_JAAS_SETTING = Setting(JAAS_CONFIG, str, None, "A JAAS login module configuration.")


def setting(name: str) -> Setting:
    """The registry entry of a setting by its Kafka name or synonym; ConfigError if unknown."""
    return _lookup(name, "lookup")


def _lookup(name: str, source: str) -> Setting:
    s = _BY_NAME.get(name)
    if s is None:
        raise ConfigError(f"unknown setting {name!r} (from {source})" + _suggest(name, _BY_NAME))
    return s


def _suggest(name: str, candidates: Iterable[str]) -> str:
    import difflib  # only for a misspelt name: not every start pays for it

    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


# ---------------------------------------------------------------- value parsing

_TRUE = {"true"}
_FALSE = {"false"}


def _convert(s: Setting, value: Any, source: str) -> Any:
    """Type-check one value; strings (files, env, command line) are parsed like Kafka does."""
    where = f"setting {s.name!r} (from {source})"
    if value is None:
        if s.default is None:
            return None
        raise ConfigError(f"{where} cannot be empty")
    if s.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where} expects true or false, got {value!r}")
    if s.type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, str):
            try:
                result = int(value.strip(), 10)
            except ValueError:
                raise ConfigError(f"{where} expects an integer, got {value!r}") from None
        else:
            raise ConfigError(f"{where} expects an integer, got {value!r}")
        if s.minimum is not None and result < s.minimum:
            raise ConfigError(f"{where} must be at least {s.minimum}, got {result}")
        return result
    if not isinstance(value, str):
        raise ConfigError(f"{where} expects a string, got {value!r}")
    value = value.strip()
    if not value and s.default is None:
        return None
    return value


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _storage_path(url: str) -> Path | None:
    if url == MEMORY_STORAGE_URL or is_postgres_url(url):
        return None
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc in ("", "localhost") and parts.path.startswith("/"):
            return Path(unquote(parts.path))
    raise ConfigError(f"setting 'storage.url' expects memory://, file:///ABSOLUTE/PATH or "
                      f"postgresql://USER:PASSWORD@HOST:PORT/DATABASE, got {url!r}")


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "moldau"


# ---------------------------------------------------------------- sources

def parse_properties(text: str, source: str = "properties") -> dict[str, str]:
    """Parse Java .properties text: ``name=value`` or ``name: value``, ``#``/``!`` comments,
    backslash line continuations, whitespace trimmed. Errors name the source and line."""
    result: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#!":
            continue
        # An odd number of trailing backslashes continues the logical line on the next one.
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1 and i < len(lines):
            line = line[:-1] + lines[i].strip()
            i += 1
        cut = [p for p in (line.find("="), line.find(":")) if p >= 0]
        if not cut:
            raise ConfigError(f"{source} line {lineno}: expected name=value, got {line!r}")
        pos = min(cut)
        name, value = line[:pos].strip(), line[pos + 1:].strip()
        if not name:
            raise ConfigError(f"{source} line {lineno}: missing setting name in {line!r}")
        result[name] = value
    return result


def read_properties_file(path: str | os.PathLike[str]) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8: {exc}") from None
    return parse_properties(text, f"config file {str(path)!r}")


def settings_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``MOLDAU_*`` variables as setting names; an unknown ``MOLDAU_*`` name is an error."""
    result: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        s = _BY_ENV.get(key)
        if s is None:
            raise ConfigError(f"unknown setting in environment variable {key!r}" + _suggest(key, _BY_ENV))
        result[s.name if key == s.env_name else _env_synonym(key, s)] = value
    return result


def _env_synonym(key: str, s: Setting) -> str:
    return next(syn for syn in s.synonyms if ENV_PREFIX + syn.replace(".", "_").upper() == key)


def parse_assignments(items: Iterable[str], source: str = "--set") -> dict[str, str]:
    """``NAME=VALUE`` strings (as given to ``--set``) into a dict, in order; the last one wins."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{source} expects NAME=VALUE, got {item!r}")
        result[name.strip()] = value.strip()
    return result


Layer = tuple[str, Mapping[str, Any]]


def build_config(layers: Iterable[Layer]) -> BrokerConfig:
    """Merge ``(source label, {name: value})`` layers, lowest precedence first, into a BrokerConfig.

    Every name is checked against the registry (synonyms map to their setting) and every value is
    type-checked, with errors naming the setting and the source it came from.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    per_listener: dict[str, Any] = {}
    for label, mapping in layers:
        seen: dict[str, str] = {}
        for name, raw in mapping.items():
            if name.startswith(LISTENER_PREFIX):
                per_listener[name] = _convert_listener_setting(name, raw, label)
                continue
            s = _lookup(name, label)
            if s.name in seen and seen[s.name] != name:
                raise ConfigError(
                    f"{label} sets both {seen[s.name]!r} and its synonym {name!r}; give only one")
            seen[s.name] = name
            values[s.attr] = _convert(s, raw, label)
            sources[s.name] = SOURCE_STATIC
    return BrokerConfig(**values, sources=sources, listener_overrides=per_listener)


def _convert_listener_setting(name: str, raw: Any, source: str) -> Any:
    """Check one ``listener.name.<listener>.<setting>`` entry: the setting must be one a listener may
    override, or a SASL mechanism's ``sasl.jaas.config``."""
    listener, _, rest = name[len(LISTENER_PREFIX):].partition(".")
    if not listener or not rest:
        raise ConfigError(f"setting {name!r} (from {source}) expects listener.name.<listener>.<setting>")
    mechanism, _, jaas = rest.partition(".")
    if jaas == JAAS_CONFIG:
        from broker.security.sasl_mechanisms import SUPPORTED_MECHANISMS

        if mechanism.upper() not in SUPPORTED_MECHANISMS:
            raise ConfigError(f"setting {name!r} (from {source}): unknown SASL mechanism {mechanism!r}; "
                              f"choose one of {', '.join(m.lower() for m in SUPPORTED_MECHANISMS)}")
        return _convert(_JAAS_SETTING, raw, source)
    s = _BY_NAME.get(rest)
    if s is None or not rest.startswith(LISTENER_SETTING_PREFIXES):
        raise ConfigError(f"setting {name!r} (from {source}): {rest!r} cannot be set per listener; settings "
                          f"starting with {', '.join(LISTENER_SETTING_PREFIXES)} can")
    return _convert(s, raw, source)


def load_config(*, config_file: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None,
                profile: tuple[str, Mapping[str, Any]] | None = None) -> BrokerConfig:
    """Defaults < ``profile`` (its name and settings) < ``config_file`` < ``MOLDAU_*`` environment <
    ``overrides`` (command line)."""
    layers: list[Layer] = []
    if config_file is not None:
        layers.append((f"config file {str(config_file)!r}", read_properties_file(config_file)))
    layers.append(("environment", settings_from_env(os.environ if environ is None else environ)))
    if overrides:
        layers.append(("command line", overrides))
    if profile is not None:
        name, settings = profile
        if settings.get("storage.url") == MEMORY_STORAGE_URL and any("log.dirs" in s for _, s in layers):
            # A data directory chosen in any layer above means files: the profile's in-memory storage
            # yields to it instead of clashing with it.
            settings = {k: v for k, v in settings.items() if k != "storage.url"}
        layers.insert(0, (f"profile {name!r}", settings))
    return build_config(layers)


# ---------------------------------------------------------------- data dir and meta.properties

@dataclass(frozen=True)
class MetaProperties:
    """What Kafka keeps in each log dir's meta.properties: the cluster id and this node's id."""

    cluster_id: str
    node_id: int


def generate_cluster_id() -> str:
    """A random cluster id in Kafka's format: a UUID as unpadded URL-safe base64 (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def prepare_data_dir(path: Path, node_id: int) -> MetaProperties:
    """Create the data directory if needed, check it is writable, and read or create meta.properties.

    The cluster id is generated once and persisted, so a restarted broker keeps its identity.
    """
    where = str(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create data directory {where!r}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise DataDirError(f"data directory {where!r} is not a directory")
    try:
        # os.access is no help when running as root or on read-only mounts; a real write is.
        import tempfile  # with random and shutil, ~1 MB that a broker in memory never needs

        fd, probe = tempfile.mkstemp(prefix=".moldau-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirError(f"data directory {where!r} is not writable: {exc.strerror or exc}") from None

    meta_path = path / META_PROPERTIES
    if meta_path.exists():
        try:
            props = parse_properties(meta_path.read_text(encoding="utf-8"), f"{str(meta_path)!r}")
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            raise DataDirError(f"cannot read {str(meta_path)!r}: {exc}") from None
        cluster_id = props.get("cluster.id", "")
        stored_node = props.get("node.id", props.get("broker.id", ""))
        if not cluster_id or not stored_node.lstrip("-").isdigit():
            raise DataDirError(f"{str(meta_path)!r} lacks a valid cluster.id and node.id")
        if int(stored_node) != node_id:
            raise DataDirError(
                f"{str(meta_path)!r} belongs to node.id {stored_node}, but this broker has node.id "
                f"{node_id}; use that node.id or another data directory")
        return MetaProperties(cluster_id, node_id)

    meta = MetaProperties(generate_cluster_id(), node_id)
    text = (f"#Written by Moldau\nversion=1\ncluster.id={meta.cluster_id}\nnode.id={meta.node_id}\n")
    tmp = meta_path.with_name(META_PROPERTIES + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, meta_path)
        _fsync_dir(path)
    except OSError as exc:
        raise DataDirError(f"cannot write {str(meta_path)!r}: {exc.strerror or exc}") from None
    return meta


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def advertised_host_for(listen_host: str) -> str:
    """The host to advertise when none is configured: the listen host, or the hostname for a wildcard."""
    if listen_host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return listen_host
