"""Setting profiles (``broker/profiles.py``) and the embedded broker's config (``broker.embedded.broker_config``):
what each profile sets, that a profile is the lowest layer (config file, environment, settings and flags
all win over it), that a data directory given by name turns the ci profile's memory storage into files,
and that the embedded config never reads the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import MEMORY_STORAGE_URL, BrokerConfig, ConfigError, load_config
from broker.embedded import broker_config
from broker.profiles import CI_PROFILE, DEV_PROFILE, PROFILES, profile_settings


def test_dev_profile_forms_groups_at_once_while_the_code_default_stays_kafkas_3000() -> None:
    """Kafka's shipped server.properties sets group.initial.rebalance.delay.ms=0; its code default (and
    BrokerConfig's) is 3000, which the kafka profile keeps."""
    assert BrokerConfig().group_initial_rebalance_delay_ms == 3000
    assert dict(DEV_PROFILE) == {"group.initial.rebalance.delay.ms": "0"}
    assert load_config(environ={}, profile=("dev", profile_settings("dev"))).group_initial_rebalance_delay_ms == 0
    assert load_config(environ={}, profile=("kafka", profile_settings("kafka"))).group_initial_rebalance_delay_ms == 3000
    assert PROFILES["kafka"] == {}


def test_ci_profile_settings() -> None:
    config = load_config(environ={}, profile=("ci", profile_settings("ci")))
    assert config.storage_url == MEMORY_STORAGE_URL and config.data_dir is None
    assert (config.group_initial_rebalance_delay_ms, config.group_min_session_timeout_ms) == (0, 1000)
    assert (config.log_segment_bytes, config.auto_create_topics_enable, config.control_endpoint_enable) == (
        "1048576", True, True)
    assert BrokerConfig().control_endpoint_enable is False  # only test brokers open the control endpoint


def test_unknown_profile_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'prod'; choose one of dev, ci, kafka"):
        profile_settings("prod")
    with pytest.raises(ConfigError, match="unknown profile 'prod'"):
        broker_config(profile="prod")


def test_a_data_dir_replaces_the_ci_profiles_memory_storage_and_the_table_is_not_changed() -> None:
    assert "storage.url" not in profile_settings("ci", data_dir_given=True)
    assert profile_settings("dev", data_dir_given=True) == dict(DEV_PROFILE)
    assert CI_PROFILE["storage.url"] == MEMORY_STORAGE_URL  # profile_settings hands out a copy


def test_a_profile_is_the_lowest_layer(tmp_path: Path) -> None:
    """profile < config file < environment < overrides, each layer seen winning over the one below."""
    file = tmp_path / "server.properties"
    file.write_text("log.segment.bytes=2000000\nnum.partitions=2\nqueued.max.requests=5\n")
    config = load_config(config_file=file, environ={"MOLDAU_NUM_PARTITIONS": "3", "MOLDAU_QUEUED_MAX_REQUESTS": "6"},
                         overrides={"queued.max.requests": "7"}, profile=("ci", profile_settings("ci")))
    assert config.log_segment_bytes == "2000000"  # file over profile
    assert config.num_partitions == 3  # environment over file
    assert config.queued_max_requests == 7  # overrides over environment
    assert config.group_min_session_timeout_ms == 1000  # the profile where nothing else says otherwise


# ------------------------------------------------------------------ broker_config (embedded brokers)


def test_broker_config_defaults_to_the_ci_profile_on_a_free_local_port() -> None:
    config = broker_config()
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 0)
    assert config.in_memory and config.group_initial_rebalance_delay_ms == 0 and config.control_endpoint_enable
    assert broker_config(profile="kafka").group_initial_rebalance_delay_ms == 3000
    assert broker_config(profile="kafka").storage_url is None  # Kafka's default: files


def test_broker_config_does_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLDAU_NUM_PARTITIONS", "9")
    monkeypatch.setenv("MOLDAU_NO_SUCH_SETTING", "1")  # would be an error if the environment were read
    assert broker_config().num_partitions == 1


def test_broker_config_settings_win_over_the_profile_and_keywords_over_settings(tmp_path: Path) -> None:
    config = broker_config(settings={"group.initial.rebalance.delay.ms": 250, "listeners": "127.0.0.1:1111",
                                     "num.partitions": "4"}, port=2222, kafka_version="3.9")
    assert config.group_initial_rebalance_delay_ms == 250
    assert (config.listen_port, config.num_partitions, config.kafka_version) == (2222, 4, "3.9")


def test_broker_config_takes_ints_and_bools_for_any_setting() -> None:
    """Topic defaults such as log.retention.ms are text settings (as in Kafka's properties); a Python int
    or bool is accepted for them as for numeric and boolean ones."""
    config = broker_config(settings={"log.retention.ms": 60_000, "log.cleanup.policy": "compact",
                                     "auto.create.topics.enable": False, "num.partitions": 3})
    assert (config.log_retention_ms, config.auto_create_topics_enable, config.num_partitions) == ("60000", False, 3)


def test_broker_config_names_the_settings_as_the_source_of_a_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'num.partitons' \(from settings\); did you mean"):
        broker_config(settings={"num.partitons": 3})
    with pytest.raises(ConfigError, match="kafka.version"):
        broker_config(kafka_version="1.0")


@pytest.mark.parametrize("how", ["data_dir", "log.dirs", "log.dir"])
def test_broker_config_with_a_data_directory_uses_files(tmp_path: Path, how: str) -> None:
    """A data directory asked for by name, as ``data_dir`` or as the log.dirs setting (or its synonym),
    is used: the ci profile's memory storage gives way."""
    config = broker_config(data_dir=tmp_path) if how == "data_dir" else broker_config(settings={how: str(tmp_path)})
    assert (config.in_memory, config.data_dir, config.effective_storage_url) == (False, tmp_path, tmp_path.as_uri())
