"""training.config and training.parse: typed YAML + overrides, presets, one-line errors, --help."""
from __future__ import annotations

import dataclasses

import pytest

import train
from lora import LoRAConfig
from train_runs import REPO, TINY
from training import config as config_module
from training.parse import keys_help, load_config


def test_config_yaml_and_cli_overrides_are_typed(tmp_path):
    cfg, options = train.parse_args(["--config", str(TINY), "--train.lr", "2e-4", "--train.max_steps=null",
                                     "--lora.target_modules", "q_proj,v_proj", "--train.group_by_length", "yes",
                                     "--data.limit", "50", "--output_dir", str(tmp_path), "--resume", "latest"])
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps is None and cfg.train.group_by_length is True
    assert cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.data.limit == 50
    assert cfg.lora.alpha == 8.0 and cfg.model.bits == 16  # from the YAML
    assert options.resume == "latest" and options.overwrite is False
    assert train.parse_args(["--lora.target_modules", "all-linear"])[0].lora.target_modules == "all-linear"
    # The saved resolved config loads back to the same config.
    path = tmp_path / "c.yaml"
    path.write_text(config_module.config_yaml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs").glob("*.yaml")
                                           if not p.name.startswith("accelerate")))
def test_presets_load(preset):
    cfg = load_config(REPO / "configs" / preset)
    if preset == "llama31-8b.yaml":  # the course recipe, exactly
        assert (cfg.model.name, cfg.model.bits, cfg.model.quant_type, cfg.model.double_quant,
                cfg.model.compute_dtype) == ("meta-llama/Llama-3.1-8B", 4, "nf4", True, "bfloat16")
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (32, 64.0, 0.1)
        assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
        t = cfg.train
        assert (t.epochs, t.batch_size, t.lr, t.schedule, t.warmup_ratio, t.optimizer, t.max_grad_norm,
                t.weight_decay, t.save_every) == (1, 4, 1e-4, "cosine", 0.03, "paged_adamw_32bit", 0.3, 0.001, 2000)
        assert cfg.data.max_length == 182


@pytest.mark.parametrize("argv, message", [
    (["--train.lrr", "1"], "unknown key 'train.lrr'; valid keys in train: epochs, max_steps, batch_size"),
    (["--trian.lr", "1"], "unknown section 'trian'; valid sections: model, lora, data, train, log"),
    (["--train.batch_size", "four"], "train.batch_size must be an integer, got 'four'"),
    (["--train.schedule", "step"], "train.schedule must be one of cosine, linear, constant, got 'step'"),
    (["--lora.r", "0"], "lora: LoRA rank r must be a positive integer, got 0"),
    (["--lora.dropout", "1"], "lora: "),
])
def test_bad_config_fails_with_one_line_listing_valid_keys(argv, message, capsys):
    assert train.main(["--config", str(TINY), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_unknown_key_in_yaml_fails(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1e-3\n  warmpu_ratio: 0.1\n")
    assert train.main(["--config", str(bad)]) == 2
    assert "valid keys in train:" in capsys.readouterr().err
    with pytest.raises(train.ConfigError, match="warmpu_ratio"):
        load_config(bad)


def test_yaml_no_and_a_bare_target_name_mean_what_they_say(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  mixed_precision: no\nlora:\n  target_modules: v_proj\n")
    cfg = load_config(cfg_file)
    assert cfg.train.mixed_precision == "no"
    assert list(train.lora_config_of(cfg).target_modules) == ["v_proj"]


def test_lora_defaults_are_lora_configs():
    """One set of LoRA defaults: the train config's lora section starts at LoRAConfig's values."""
    section, reference = config_module.LoRASection(), LoRAConfig()
    for f in dataclasses.fields(section):
        want = getattr(reference, f.name)
        got = getattr(section, f.name)
        assert (tuple(got) if isinstance(got, list) else got) == want, f.name
    assert train.lora_config_of(config_module.Config()) == dataclasses.replace(
        reference, base_model_name_or_path=config_module.ModelConfig().name)


def test_help_lists_every_key_with_type_default_and_description(capsys):
    text = keys_help()
    for section, cls in config_module.sections().items():
        for f in dataclasses.fields(cls):
            assert f"--{section}.{f.name} (" in text, f.name
            assert f.metadata.get("help"), f"{section}.{f.name} has no description"
    assert "--train.lr (float in (0, inf); default 0.0001)" in text
    assert "--output_dir (str; default 'runs/train')" in text
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--help"])
    assert exit_.value.code == 0
    assert "--train.max_grad_norm" in capsys.readouterr().out


def _out_of_range(interval: str) -> list[str]:
    """Values just outside `interval` ("[1, inf)", "(0, 1)", "{4, 8, 16}"), plus inf/nan where finite is needed."""
    if interval.startswith("{"):
        return [str(max(float(v) for v in interval.strip("{}").split(",")) + 1), "3"]
    low, high = (float(v) for v in interval[1:-1].split(","))
    values = [str(low if interval[0] == "(" else low - 1)]
    values.append("inf" if high == float("inf") and interval[-1] == ")" else str(high if interval[-1] == ")" else
                                                                                 high + 1))
    return values + ["nan"]


def _numeric_keys():
    for section, cls in config_module.sections().items():
        for f in dataclasses.fields(cls):
            if f.metadata.get("valid"):
                yield f"{section}.{f.name}", f.metadata["valid"]


@pytest.mark.parametrize("key, interval", list(_numeric_keys()))
def test_every_numeric_key_refuses_values_outside_its_range(key, interval, capsys):
    """Before any model loads: train.main fails with one line naming the key (its range, or its type for
    an integer key given inf or nan)."""
    for value in _out_of_range(interval):
        assert train.main(["--config", str(TINY), f"--{key}", value]) == 2, (key, value)
        err = capsys.readouterr().err.strip()
        # LoRAConfig checks its own fields first, in its own words ("lora: LoRA rank r must be ...").
        named = err.startswith(f"error: {key} must be ") or key.startswith("lora.") and err.startswith("error: lora: ")
        assert named and "\n" not in err, (key, value, err)


@pytest.mark.parametrize("argv, message", [
    (["--train.max_grad_norm", "-1"], "train.max_grad_norm must be in [0, inf), got -1.0"),
    (["--train.warmup_steps", "-5"], "train.warmup_steps must be in [0, inf), got -5"),
    (["--train.save_every", "-1"], "train.save_every must be in [0, inf), got -1"),
    (["--train.lr", "inf"], "train.lr must be in (0, inf), got inf"),
    (["--data.val_fraction", "1.5"], "data.val_fraction must be in [0, 1), got 1.5"),
    (["--data.limit", "-3"], "data.limit must be in [1, inf), got -3"),
    (["--data.val_fraction", "0.5", "--data.test_fraction", "0.5"], "must be below 1"),
    (["--lora.target_modules", "["], "lora: target_modules '[' is not a valid regex"),
    (["--train.price_predictor", "oracle"], "train.price_predictor must be one of greedy, expected"),
])
def test_the_reported_bad_values_are_refused_in_one_line(argv, message, capsys):
    assert train.main(["--config", str(TINY), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("rows, why", [
    ("", "no items left to train on"),
    ("name,cost\nwidget,3\n", "no price column; found columns: name, cost"),
    ('{"title": "A drill", "text": "A cordless drill", "price": "abc"}\n', "no items left to train on"),
])
def test_no_usable_items_is_one_line_before_the_model_loads(tmp_path, capsys, rows, why):
    data = tmp_path / ("items.csv" if rows.startswith("name") else "items.jsonl")
    data.write_text(rows)
    out = tmp_path / "run"
    # The model name does not exist: the data must fail first, or this would be a model error.
    assert train.main(["--config", str(TINY), "--data.source", str(data), "--model.name", str(tmp_path / "none"),
                       "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and why in err and str(data) in err


def test_print_config_prints_the_validated_config_and_loads_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    argv = ["--config", str(TINY), "--train.lr", "3e-3", "--model.name", str(tmp_path / "no-model"),
            "--output_dir", str(out), "--print-config"]
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "printed.yaml"
    path.write_text(printed)
    assert load_config(path) == load_config(TINY, {"train.lr": "3e-3", "model.name": str(tmp_path / "no-model"),
                                                   "output_dir": str(out)})
    assert not out.exists()  # no model, no data, no output folder
    assert train.main(["--config", str(TINY), "--train.lr", "-1", "--print-config"]) == 2


BOMB = "lora:\n  target_modules: &l9 [*l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8]\n"
for _level in range(8, 0, -1):
    BOMB = f"l{_level}: &l{_level} [*l{_level - 1}, *l{_level - 1}, *l{_level - 1}, *l{_level - 1}]\n" + BOMB
BOMB = "l0: &l0 [q_proj, v_proj]\n" + BOMB


@pytest.mark.parametrize("text, why", [
    (BOMB, "aliases expand to more than 100,000 values"),                   # 2 * 4^8 * 9 items, in 10 lines
    ("train: &t\n  x: *t\n", "recursive alias"),
    ("train:\n  lr: 1.0e-4\n" + "#" * (1 << 20), "larger than 1,048,576 bytes"),
])
def test_a_config_that_expands_or_is_huge_is_refused_in_one_line(tmp_path, capsys, text, why):
    """An alias bomb would have the parser coerce ~600,000 items (a 9^9 one ran out of memory after a minute);
    aliases of a few values still load."""
    path = tmp_path / "few.yaml"
    path.write_text("train:\n  lr: &lr 1.0e-4\n  weight_decay: *lr\nlora:\n  target_modules: &t [q_proj, v_proj]\n")
    cfg = load_config(path)
    assert cfg.train.weight_decay == cfg.train.lr == 1e-4 and cfg.lora.target_modules == ["q_proj", "v_proj"]
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert train.main(["--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path} is refused: ") and why in err and "\n" not in err

