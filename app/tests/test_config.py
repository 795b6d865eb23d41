"""Settings: precedence flags > env > file > defaults, and clear errors."""

from __future__ import annotations

import pytest

from signaling import config
from signaling.config import ConfigError, load


def test_defaults():
    s, _ = load([], {})
    assert (s.host, s.port, s.heartbeat, s.idle_timeout, s.resume_window, s.resume_queue) == (
        "127.0.0.1", 8080, 30, 60, 60, 256)
    assert (s.max_message_size, s.room_max_peers, s.rate_limit, s.rate_limit_burst) == (65536, 50, 50.0, 100)
    assert s.public_mode and s.private_mode and not s.discovery
    assert s.shutdown_grace == 10 and s.upload_max_size == 10 * 1024 * 1024 and s.redis_url == ""


def test_precedence_flags_over_env_over_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('port = 9001\nheartbeat = 20\nroom_max_peers = 7\n'
                 'ice_servers = [{urls = ["stun:s.example:3478"]}]\nallowed_origins = ["https://a.example"]\n')
    env = {"SIGNALING_PORT": "9002", "SIGNALING_HEARTBEAT": "25"}
    s, _ = load(["--config", str(f), "--port", "9003"], env)
    assert (s.port, s.heartbeat, s.room_max_peers) == (9003, 25, 7)
    assert s.ice_servers == ({"urls": ["stun:s.example:3478"]},)
    assert s.allowed_origins == ("https://a.example",)


def test_config_file_from_env_and_bool_flags(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("discovery = true\n")
    s, _ = load(["--no-public-mode"], {"SIGNALING_CONFIG": str(f), "SIGNALING_ALLOWED_ORIGINS": "https://a, https://b"})
    assert s.discovery and not s.public_mode and s.allowed_origins == ("https://a", "https://b")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "0"], {}, r"port \(from --port\): 0 is outside 1..65535"),
        (["--port", "http"], {}, "port"),
        ([], {"SIGNALING_PROT": "1"}, "unknown environment variable SIGNALING_PROT"),
        ([], {"SIGNALING_PUBLIC_MODE": "maybe"}, "expected true or false"),
        (["--log-level", "loud"], {}, "not one of debug, info, warning, error"),
        (["--heartbeat", "60", "--idle-timeout", "60"], {}, "must be longer than heartbeat"),
        (["--turn-urls", "turn:x"], {}, "turn_secret is empty"),
        (["--turn-urls", "http://x"], {"SIGNALING_TURN_SECRET": "s"}, "must start with turn"),
        # Secrets never on a command line (ps shows it to every local user): file or environment.
        (["--turn-secret", "s3cret"], {}, r"--turn-secret carries a secret, .* \(SIGNALING_TURN_SECRET\)"),
        (["--redis-url", "redis://:s3cret@10.0.0.9:6379/0"], {},
         r"--redis-url carries a password, .* config file \(--config\) or the environment \(SIGNALING_REDIS_URL\)"),
        (["--trusted-proxies", "10.0.0.300"], {}, "not an address or network"),
        (["--redis-url", "localhost:6379"], {}, "redis_url must start with"),
        (["--ice-servers", '[{"urls": "http://x"}]'], {}, "ice_servers"),
    ],
)
def test_bad_settings_are_named(argv, env, message):
    with pytest.raises(ConfigError, match=message):
        load(argv, env)


def test_secrets_come_from_the_file_or_the_environment(tmp_path):
    """What the command line refuses, the config file and the environment carry; a Redis URL
    without a password stays a flag."""
    f = tmp_path / "s.toml"
    f.write_text('turn_secret = "from-the-file"\n')
    s, _ = load(["--config", str(f), "--turn-urls", "turn:t.example:3478", "--redis-url", "redis://10.0.0.9:6379/0"],
                {"SIGNALING_REDIS_URL": "redis://:from-env@10.0.0.9:6379/0"})
    assert (s.turn_secret, s.redis_url) == ("from-the-file", "redis://10.0.0.9:6379/0")
    s, _ = load([], {"SIGNALING_TURN_SECRET": "from-env", "SIGNALING_REDIS_URL": "redis://:from-env@r:6379/0"})
    assert (s.turn_secret, s.redis_url) == ("from-env", "redis://:from-env@r:6379/0")


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load(["--config", str(f)], {})


def test_unreadable_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(["--config", str(tmp_path / "missing.toml")], {})
    f = tmp_path / "bad.toml"
    f.write_text("port = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load(["--config", str(f)], {})


def test_every_setting_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [name for name in config.FIELDS if f"`{name}`" not in readme]
    assert not missing, f"app/README.md does not document: {missing}"
