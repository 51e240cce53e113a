"""Server settings: defaults < YAML file < ASR_SERVER_* environment < flags, each layer checked strictly."""

from __future__ import annotations

import pytest

from asr.errors import ConfigError
from server.__main__ import parse_args
from server.config import ServerConfig, load_server_config


def test_precedence_is_defaults_then_yaml_then_environment_then_flags(tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text("max_batch_size: 8\nmax_batch_delay_ms: 5\nport: 6000\ntokens_file: /run/tokens\n")
    environ = {"ASR_SERVER_MAX_BATCH_DELAY_MS": "7.5", "ASR_SERVER_PORT": "7000", "HOME": "/root"}
    config_path, flags = parse_args(["--config", str(path), "--port", "8000"])
    cfg = load_server_config(config_path, flags, environ)
    assert cfg.max_batch_size == 8  # YAML over the default
    assert cfg.max_batch_delay_ms == 7.5  # environment over YAML
    assert cfg.port == 8000  # flag over environment
    assert cfg.tokens_file == "/run/tokens" and cfg.grace_period_s == ServerConfig.grace_period_s


def test_string_settings_from_the_environment_stay_strings():
    cfg = load_server_config(None, {}, {"ASR_SERVER_MODEL_NAME": "0123", "ASR_SERVER_REFLECTION": "false"})
    assert cfg.model_name == "0123" and cfg.reflection is False


@pytest.mark.parametrize(
    ("yaml_text", "environ", "message"),
    [
        ("max_batch_sise: 8\n", {}, "max_batch_sise"),
        ("port: eighty\n", {}, "port"),
        ("", {"ASR_SERVER_NO_SUCH": "1"}, "ASR_SERVER_NO_SUCH"),
        ("max_batch_size: 0\n", {}, "max_batch_size"),
        ("tls_cert_file: a.pem\n", {}, "tls_key_file"),
        ("web_port: 50051\n", {}, "web_port"),
        ("left_context_ms: -1\n", {}, "left_context_ms"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(tmp_path, yaml_text, environ, message):
    path = tmp_path / "server.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_server_config(path, {}, environ)
