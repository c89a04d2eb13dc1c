"""Property-based fuzzing of the config parser (hypothesis): any YAML text, any override value for any
key, gives a Config or a one-line ConfigError; never another exception."""
from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from training import config as config_module
from training.errors import ConfigError
from training.parse import load_config

KEYS = [f"{s}.{f.name}" for s, cls in config_module.sections().items() for f in dataclasses.fields(cls)]
KEYS += ["output_dir", "train.nope", "nope.lr", "nope"]
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _config_or_one_line(make):
    try:
        cfg = make()
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return
    assert isinstance(cfg, config_module.Config)


@seed(17)
@SETTINGS
@given(st.text(max_size=200) | st.sampled_from(["train: [1, 2]", "train:\n  lr: [", "lora: {r: x}", "- a\n- b",
                                                "train:\n  lr: .inf", "model:\n  bits: 4.5", "data: 3"]))
def test_any_yaml_text_is_a_config_or_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    _config_or_one_line(lambda: load_config(path))


@seed(18)
@SETTINGS
@given(st.sampled_from(KEYS), st.text(max_size=30) | st.sampled_from(["inf", "-inf", "nan", "1e400", "-0", "[", "]",
                                                                     "[1,", "null", "yes", "1_000", "0x10"]))
def test_any_override_is_a_config_or_one_line(key, value):
    _config_or_one_line(lambda: load_config(None, {key: value}))
