"""Strict config loading: typos and wrong types fail loudly with the dotted path."""

from pathlib import Path

import pytest

from asr.config import (
    ExperimentConfig,
    SearchConfig,
    dump_config,
    from_dict,
    load_config,
    to_dict,
)
from asr.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "asr" / "configs"


def test_every_shipped_config_loads():
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert paths, "no shipped configs"
    for path in paths:
        cfg = load_config(path)
        assert isinstance(cfg, ExperimentConfig)


def test_unknown_key_names_dotted_path(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("training:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="training.lerning_rate"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.max_steps=abc", "training.max_steps"),
        ("model.encoder.rnn_type=transformer", "model.encoder.rnn_type"),
        ("model.ctc_weight=1.5", "model.ctc_weight"),
        ("training.grad_clip=[1]", "training.grad_clip"),
        ("nosuchsection.x=1", "nosuchsection"),
        ("search.beam_size=0", "search.beam_size"),
    ],
)
def test_bad_overrides_raise(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["training.max_steps"])


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level"):
        load_config(top)


def test_round_trip_through_yaml_and_dict(tmp_path):
    cfg = load_config(
        None, ["model.encoder.rnn_type=gru", "search.boost_phrases=[{phrase: hello world, boost: 3.0}]", "seed=7"]
    )
    assert cfg.model.encoder.rnn_type == "gru"
    assert cfg.search.boost_phrases[0].phrase == "hello world"
    path = tmp_path / "dump.yaml"
    dump_config(cfg, path)
    assert load_config(path) == cfg
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg


def test_manifest_paths_resolve_relative_to_config(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "exp.yaml"
    path.write_text("data:\n  train_manifests: [../train.jsonl]\n")
    cfg = load_config(path)
    assert cfg.data.train_manifests == (str((tmp_path / "train.jsonl").resolve()),)


def test_int_accepted_for_float_and_not_bool():
    assert load_config(None, ["training.learning_rate=1"]).training.learning_rate == 1.0
    with pytest.raises(ConfigError):
        load_config(None, ["training.max_steps=true"])
    assert from_dict(SearchConfig, {"beam_size": 4}).beam_size == 4
