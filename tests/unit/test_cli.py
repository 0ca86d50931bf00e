"""The ``moldau`` command line: --version, flag-to-setting mapping and precedence, startup errors as one
clear line with exit code 2 (never a traceback), persistence of the cluster id, clean stop on signals."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker import __version__, cli
from broker.config import BrokerConfig, ConfigError
from tests.compat.conftest import REPO, BrokerProcess, finish

RUN_TIMEOUT_S = 20


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "broker", *args], check=False, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL)


def test_version_flag_prints_version() -> None:
    result = _run("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"moldau {__version__}")


def test_version_flag_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"moldau {__version__}"


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_USAGE
    assert "serve" in capsys.readouterr().err


def _config(*argv: str, environ: dict[str, str] | None = None) -> BrokerConfig:
    args = cli.build_parser().parse_args(["serve", *argv])
    return cli.config_from_args(args, environ=environ or {})


def test_serve_flags_map_to_kafka_settings(tmp_path: Path) -> None:
    config = _config("--listen", "127.0.0.1:0", "--advertised", "broker.example:19092",
                     "--data-dir", str(tmp_path), "--set", "num.partitions=4")
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 0)
    assert config.advertised_listeners == "broker.example:19092"
    assert config.data_dir == tmp_path
    assert config.num_partitions == 4
    assert _config("--memory").in_memory


def test_serve_precedence_file_env_set_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text("listeners=PLAINTEXT://127.0.0.1:1111\nnum.partitions=2\nqueued.max.requests=7\n")
    config = _config("--config", str(path), "--set", "listeners=127.0.0.1:2222", "--set", "num.partitions=3",
                     "--listen", "127.0.0.1:3333",
                     environ={"MOLDAU_NUM_PARTITIONS": "9", "MOLDAU_QUEUED_MAX_REQUESTS": "8"})
    assert config.listen_port == 3333  # dedicated flag over --set
    assert config.num_partitions == 3  # --set over env
    assert config.queued_max_requests == 8  # env over file


def test_serve_unknown_setting_is_rejected_in_process() -> None:
    with pytest.raises(ConfigError, match="did you mean 'num.partitions'"):
        _config("--set", "num.partitons=3")


def test_serve_unknown_setting_exits_2_with_suggestion(tmp_path: Path) -> None:
    result = _run("serve", "--memory", "--set", "num.partitons=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown setting 'num.partitons'" in result.stderr and "num.partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_bad_listen_exits_2(tmp_path: Path) -> None:
    result = _run("serve", "--memory", "--listen", "no-port-here", cwd=tmp_path)
    assert result.returncode == 2
    assert "'listeners' expects HOST:PORT" in result.stderr and "Traceback" not in result.stderr


def test_serve_unknown_env_setting_exits_2(tmp_path: Path) -> None:
    result = _run("serve", "--memory", env={"MOLDAU_NUM_PARTITONS": "3"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "MOLDAU_NUM_PARTITIONS" in result.stderr and "Traceback" not in result.stderr


def test_serve_data_dir_that_cannot_be_created_exits_2_naming_the_path(tmp_path: Path) -> None:
    # Tests run as root, so permissions would not stop the broker; a path under a file always fails.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "moldau-data"
    result = _run("serve", "--data-dir", str(target), "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(target) in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_default_data_dir_under_a_file_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "xdg-file"
    blocker.write_text("x")
    result = _run("serve", "--listen", "127.0.0.1:0", env={"XDG_DATA_HOME": str(blocker)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(blocker / "moldau") in result.stderr and "Traceback" not in result.stderr


def test_serve_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _run("serve", "--memory", "--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_serve_with_data_dir_persists_cluster_id_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = BrokerProcess(["--data-dir", str(data_dir)], tmp_path, memory=False)
    finish(first)
    assert (data_dir / "meta.properties").is_file()
    assert first.ready["storage"] == data_dir.as_uri()
    second = BrokerProcess(["--data-dir", str(data_dir)], tmp_path, memory=False)
    finish(second)
    assert second.ready["cluster_id"] == first.ready["cluster_id"]


def test_serve_memory_uses_a_fresh_cluster_id_per_process(tmp_path: Path) -> None:
    first = BrokerProcess([], tmp_path)
    second = BrokerProcess([], tmp_path)
    finish(first)
    finish(second)
    assert first.ready["cluster_id"] != second.ready["cluster_id"]
    assert [r["event"] for r in first.records].count("ready") == 1


def test_serve_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    proc = BrokerProcess([], tmp_path)
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(RUN_TIMEOUT_S) == 0
    finish(proc)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_while_stopping_is_ignored(tmp_path: Path, second: signal.Signals) -> None:
    """SIGINT, then another signal once shutdown has begun (whether it lands during the broker's stop or
    while the process exits): the exit is still clean, code 0, with the 'stopped' line."""
    proc = BrokerProcess([], tmp_path)
    proc.proc.send_signal(signal.SIGINT)
    proc.wait_for_log(lambda r: r.get("event") == "stopping", RUN_TIMEOUT_S, "the stopping event")
    proc.proc.send_signal(second)
    assert proc.proc.wait(RUN_TIMEOUT_S) == 0, "\n".join(proc.lines[-20:])
    finish(proc)


def test_serve_console_log_format_is_human_readable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "broker", "serve", "--memory", "--listen", "127.0.0.1:0",
                             "--log-format", "console"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        readable, _, _ = select.select([proc.stderr], [], [], RUN_TIMEOUT_S)
        assert readable, f"no log line within {RUN_TIMEOUT_S}s"
        line = proc.stderr.readline()
        assert "ready" in line and "port=" in line and not line.lstrip().startswith("{")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(RUN_TIMEOUT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(RUN_TIMEOUT_S)


# ------------------------------------------------------------------ --profile and --kafka-version


def test_serve_dev_profile_is_the_default_and_forms_groups_at_once() -> None:
    """Kafka's shipped server.properties value (0) by default; --profile kafka keeps the code default
    3000, as BrokerConfig() does."""
    assert _config().group_initial_rebalance_delay_ms == 0
    assert _config("--profile", "dev").group_initial_rebalance_delay_ms == 0
    assert _config("--profile", "kafka").group_initial_rebalance_delay_ms == 3000
    assert BrokerConfig().group_initial_rebalance_delay_ms == 3000


def test_serve_ci_profile_is_in_memory_with_short_sessions_and_the_control_endpoint() -> None:
    config = _config("--profile", "ci")
    assert config.in_memory and config.control_endpoint_enable
    assert (config.group_initial_rebalance_delay_ms, config.group_min_session_timeout_ms) == (0, 1000)
    assert not _config().control_endpoint_enable


def test_serve_ci_profile_with_a_data_dir_uses_files(tmp_path: Path) -> None:
    config = _config("--profile", "ci", "--data-dir", str(tmp_path))
    assert (config.in_memory, config.data_dir, config.effective_storage_url) == (False, tmp_path, tmp_path.as_uri())
    assert config.group_min_session_timeout_ms == 1000  # the rest of the profile still applies


def test_serve_profile_precedence_profile_file_env_set_then_flags(tmp_path: Path) -> None:
    """profile < config file < environment < --set < dedicated flags, each seen winning over the layer
    below it on a setting the ci profile sets."""
    path = tmp_path / "server.properties"
    path.write_text("log.segment.bytes=2000000\ngroup.min.session.timeout.ms=2000\n"
                    "group.initial.rebalance.delay.ms=100\nkafka.version=2.8\n")
    env = {"MOLDAU_GROUP_MIN_SESSION_TIMEOUT_MS": "3000", "MOLDAU_GROUP_INITIAL_REBALANCE_DELAY_MS": "200"}
    config = _config("--profile", "ci", "--config", str(path), "--set", "group.initial.rebalance.delay.ms=300",
                     "--set", "kafka.version=3.0", "--kafka-version", "3.9", environ=env)
    assert config.log_segment_bytes == "2000000"  # file over profile
    assert config.group_min_session_timeout_ms == 3000  # environment over file
    assert config.group_initial_rebalance_delay_ms == 300  # --set over environment
    assert config.kafka_version == "3.9"  # flag over --set
    assert config.control_endpoint_enable  # the profile where nothing else says otherwise


def test_serve_memory_flag_wins_over_a_data_dir_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text("storage.url=file:///nowhere\n")
    assert _config("--profile", "ci", "--config", str(path)).storage_url == "file:///nowhere"  # file over profile
    assert _config("--profile", "kafka", "--config", str(path), "--memory").in_memory


def test_serve_unknown_profile_exits_2_naming_the_choices(tmp_path: Path) -> None:
    result = _run("serve", "--profile", "prod", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown profile 'prod'" in result.stderr and "dev, ci, kafka" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_unknown_kafka_version_exits_2_naming_the_choices(tmp_path: Path) -> None:
    result = _run("serve", "--kafka-version", "1.0", cwd=tmp_path)
    assert result.returncode == 2
    assert "'kafka.version' must be one of 2.8, 3.0, 3.9, 4.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_fault_command_is_part_of_moldau(tmp_path: Path) -> None:
    result = _run("fault", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage: moldau fault")
    # Nothing listens on port 1: the command says so in one line and exits 1.
    result = _run("fault", "--bootstrap", "127.0.0.1:1", "--timeout", "2", "list", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("moldau fault: error: cannot reach the broker at 127.0.0.1:1")
    assert "Traceback" not in result.stderr


def test_serve_ci_profile_with_log_dirs_from_the_environment_uses_files(tmp_path: Path) -> None:
    config = _config("--profile", "ci", environ={"MOLDAU_LOG_DIRS": str(tmp_path)})
    assert (config.in_memory, config.data_dir) == (False, tmp_path)


def test_bad_security_settings_exit_2_with_one_line(tmp_path: Path) -> None:
    """A TLS listener whose key store is missing or not a key and chain, and an --add-scram the syntax or
    the mechanism rejects: exit 2, one line naming the problem, no traceback, no password echoed."""
    cases = [
        (["--set", "listeners=SSL://127.0.0.1:0", "--set", f"ssl.keystore.location={tmp_path / 'none.pem'}"],
         "ssl.keystore.location"),
        (["--listen", "127.0.0.1:0", "--add-scram", "SCRAM-SHA-1=[name=alice,password=hunter2]"],
         "SCRAM-SHA-1 is not supported"),
        (["--listen", "127.0.0.1:0", "--add-scram", "SCRAM-SHA-256=[password=hunter2]"], "name"),
    ]
    for args, expected in cases:  # --listen would replace the listeners setting: only where it has none
        result = _run("serve", "--memory", *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("moldau: error: ") and expected in lines[0], lines
        assert "hunter2" not in result.stderr
