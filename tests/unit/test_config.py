"""Broker configuration: the settings registry, .properties parsing, source precedence, checks on
names and values, and the data directory's meta.properties."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import config as cfg
from broker.config import BrokerConfig, ConfigError, DataDirError


def test_registry_has_kafka_names_defaults_and_docs() -> None:
    expected = {
        "node.id": 1,
        "socket.request.max.bytes": 104857600,
        "queued.max.requests": 500,
        "connections.max.idle.ms": 600000,
        "auto.create.topics.enable": True,
        "num.partitions": 1,
        "message.max.bytes": 1048588,
        "group.initial.rebalance.delay.ms": 3000,
    }
    registry = {s.name: s for s in cfg.SETTINGS}
    for name, default in expected.items():
        assert registry[name].default == default, name
        assert registry[name].doc, name
    assert registry["auto.create.topics.enable"].type is bool
    assert registry["num.partitions"].type is int
    assert cfg.setting("broker.id").name == "node.id"
    assert cfg.setting("log.dir").name == "log.dirs"
    assert registry["num.partitions"].env_name == "MOLDAU_NUM_PARTITIONS"


def test_defaults_and_describe_report_default_source() -> None:
    config = cfg.load_config(environ={})
    assert config.num_partitions == 1
    assert (config.listen_host, config.listen_port) == ("localhost", 9092)
    described = {s.name: (value, source) for s, value, source in config.describe()}
    assert described["num.partitions"] == (1, cfg.SOURCE_DEFAULT)


def test_properties_parsing_comments_whitespace_separators_and_continuations() -> None:
    text = (
        "# a comment\n"
        "! another comment\n"
        "\n"
        "  num.partitions = 3  \n"
        "node.id:7\n"
        "listeners=PLAINTEXT://0.0.0.0:\\\n"
        "    9093\n"
        "broker.rack=\n"
    )
    assert cfg.parse_properties(text) == {
        "num.partitions": "3", "node.id": "7", "listeners": "PLAINTEXT://0.0.0.0:9093", "broker.rack": ""}


def test_properties_line_without_separator_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.properties"
    path.write_text("num.partitions=2\njust-a-word\n")
    with pytest.raises(ConfigError, match=r"broken\.properties.* line 2"):
        cfg.load_config(config_file=path, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        cfg.load_config(config_file=tmp_path / "nope.properties", environ={})


def test_precedence_defaults_file_env_command_line(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text("num.partitions=2\nqueued.max.requests=10\nmessage.max.bytes=1000\n")
    env = {"MOLDAU_QUEUED_MAX_REQUESTS": "20", "MOLDAU_MESSAGE_MAX_BYTES": "2000", "PATH": "/bin"}
    config = cfg.load_config(config_file=path, environ=env, overrides={"message.max.bytes": "3000"})
    assert config.num_partitions == 2  # file over default
    assert config.queued_max_requests == 20  # env over file
    assert config.message_max_bytes == 3000  # command line over env
    assert config.connections_max_idle_ms == 600000  # default
    assert config.sources["num.partitions"] == cfg.SOURCE_STATIC
    assert "connections.max.idle.ms" not in config.sources


def test_unknown_name_suggests_close_matches_in_every_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'num.partition' \(from command line\).*"
                                          r"'num.partitions'"):
        cfg.load_config(environ={}, overrides={"num.partition": "2"})
    with pytest.raises(ConfigError, match=r"MOLDAU_NUM_PARTITION'.*'MOLDAU_NUM_PARTITIONS'"):
        cfg.load_config(environ={"MOLDAU_NUM_PARTITION": "2"})
    path = tmp_path / "typo.properties"
    path.write_text("auto.create.topic.enable=false\n")
    with pytest.raises(ConfigError, match=r"typo\.properties.*'auto.create.topics.enable'"):
        cfg.load_config(config_file=path, environ={})


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        cfg.load_config(environ={}, overrides={"zzzz": "1"})
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("num.partitions", "three", r"'num.partitions' \(from command line\) expects an integer, got 'three'"),
    ("num.partitions", "0", r"'num.partitions' .* must be at least 1, got 0"),
    ("auto.create.topics.enable", "yes", r"'auto.create.topics.enable' .* expects true or false"),
    ("listeners", "localhost", r"'listeners' expects HOST:PORT"),
    ("listeners", "SSL://localhost:9093", r"listener SSL \(SSL\) needs a certificate: set ssl.keystore.location"),
    ("listeners", "FOO://localhost:9093", r"listener FOO has no security protocol"),
    ("listeners", "localhost:70000", r"port must be 0-65535"),
    ("advertised.listeners", "myhost:0", r"'advertised.listeners' needs a host and a non-zero port"),
    ("storage.url", "s3://bucket", r"'storage.url' expects memory://, file:///ABSOLUTE/PATH or postgresql://"),
])
def test_values_are_type_checked_with_the_setting_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg.load_config(environ={}, overrides={name: value})


def test_env_values_are_type_checked_naming_the_source() -> None:
    with pytest.raises(ConfigError, match=r"'queued.max.requests' \(from environment\) expects an integer"):
        cfg.load_config(environ={"MOLDAU_QUEUED_MAX_REQUESTS": "lots"})


def test_booleans_are_case_insensitive_true_false() -> None:
    assert cfg.load_config(environ={}, overrides={"auto.create.topics.enable": "FALSE"}).auto_create_topics_enable \
        is False


def test_synonyms_map_to_the_kafka_setting_and_conflicts_are_rejected() -> None:
    assert cfg.load_config(environ={}, overrides={"broker.id": "4"}).node_id == 4
    assert cfg.load_config(environ={"MOLDAU_BROKER_ID": "5"}).node_id == 5
    assert cfg.load_config(environ={}, overrides={"log.dir": "/srv/moldau"}).data_dir == Path("/srv/moldau")
    with pytest.raises(ConfigError, match="synonym"):
        cfg.load_config(environ={}, overrides={"broker.id": "4", "node.id": "5"})


def test_set_assignments_parse_and_reject_missing_equals() -> None:
    assert cfg.parse_assignments(["a=1", "b = x=y", "a=2"]) == {"a": "2", "b": "x=y"}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        cfg.parse_assignments(["novalue"])


def test_from_settings_accepts_kafka_and_attribute_names_with_checks() -> None:
    config = BrokerConfig.from_settings({"num.partitions": 3}, storage_url="memory://")
    assert (config.num_partitions, config.in_memory, config.data_dir) == (3, True, None)
    assert config.get("num.partitions") == 3 and config.get("broker.id") == 1
    with pytest.raises(ConfigError, match="expects an integer"):
        BrokerConfig.from_settings({"num.partitions": True})


def test_listener_parsing_forms() -> None:
    def first(text: str) -> tuple[str, int]:
        spec = BrokerConfig.from_settings({"listeners": text}).listener_specs[0]
        return spec.host, spec.port

    assert first("PLAINTEXT://127.0.0.1:0") == ("127.0.0.1", 0)
    assert first("[::1]:9092") == ("::1", 9092)
    assert first(":9092") == ("", 9092)
    assert cfg.format_address("::1", 9092) == "[::1]:9092"


def test_data_dir_defaults_to_xdg_then_home() -> None:
    assert cfg.default_data_dir({"XDG_DATA_HOME": "/x/data"}) == Path("/x/data/moldau")
    assert cfg.default_data_dir({}).parts[-3:] == (".local", "share", "moldau")


def test_storage_url_and_data_dir_resolution(tmp_path: Path) -> None:
    config = cfg.load_config(environ={}, overrides={"log.dirs": str(tmp_path / "d")})
    assert config.data_dir == tmp_path / "d"
    assert config.effective_storage_url == (tmp_path / "d").as_uri()
    config = cfg.load_config(environ={}, overrides={"storage.url": f"file://{tmp_path}/s"})
    assert config.data_dir == tmp_path / "s"
    with pytest.raises(ConfigError, match="name different directories"):
        cfg.load_config(environ={}, overrides={"storage.url": f"file://{tmp_path}/s", "log.dirs": "/elsewhere"})
    memory = cfg.load_config(environ={}, overrides={"storage.url": "memory://"})
    assert (memory.data_dir, memory.effective_storage_url) == (None, "memory://")


def test_meta_properties_cluster_id_is_generated_once_and_persisted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    first = cfg.prepare_data_dir(data_dir, 1)
    assert len(first.cluster_id) == 22
    props = cfg.parse_properties((data_dir / "meta.properties").read_text())
    assert props["cluster.id"] == first.cluster_id and props["node.id"] == "1"
    assert cfg.prepare_data_dir(data_dir, 1) == first


def test_meta_properties_node_id_mismatch_is_an_error(tmp_path: Path) -> None:
    cfg.prepare_data_dir(tmp_path, 1)
    with pytest.raises(DataDirError, match="node.id 1.*node.id 2"):
        cfg.prepare_data_dir(tmp_path, 2)


def test_data_dir_under_a_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = blocker / "data"
    with pytest.raises(DataDirError, match=f"cannot create data directory '{target}'"):
        cfg.prepare_data_dir(target, 1)


def test_data_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "plain-file"
    target.write_text("x")
    with pytest.raises(DataDirError, match=str(target)):
        cfg.prepare_data_dir(target, 1)


def test_cluster_ids_differ_per_generation() -> None:
    assert cfg.generate_cluster_id() != cfg.generate_cluster_id()
