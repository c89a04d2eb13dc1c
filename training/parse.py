"""From a YAML preset and `--section.key value` overrides to a validated Config.

    python train.py --config configs/demo.yaml --train.lr 2e-4 --lora.target_modules q_proj,v_proj

Values are coerced to each field's type (YAML's unquoted `no` stays the string "no" where a
field wants it); an unknown key fails with the list of valid ones; `--help` lists every key with
its type, default, valid range and description, taken from the dataclasses in training.config.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from training.config import Config, sections, validate
from training.errors import ConfigError
from utils.bounded_yaml import YAMLRefused, load_yaml, read_yaml

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NULL = {"none", "null", "~"}


def _coerce_union(value: Any, args: tuple, key: str) -> Any:
    if value is None or (isinstance(value, str) and value.lower() in _NULL):
        if type(None) in args:
            return None
    errors = []
    # list before str: "q_proj,v_proj" is a list, "all-linear" falls through to str.
    for option in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
        try:
            return coerce(value, option, key)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[-1])


def _coerce_list(value: Any, item: Any, key: str) -> list:
    if isinstance(value, str):
        if value.startswith("["):
            try:
                value = load_yaml(value)
            except yaml.YAMLError:
                raise ConfigError(f"{key} must be a list like [q_proj, v_proj], got {value!r}") from None
        elif "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} must be a list, got {value!r}")
    return [coerce(v, item, key) for v in value]


def _coerce_number(value: Any, tp: type, key: str) -> int | float:
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError
        if tp is int and float(number) != int(number):
            raise ValueError
        return tp(number)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key} must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` (from YAML or the command line) as type `tp`, or ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads an unquoted `no` as false
            value = "no"
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        return _coerce_list(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp in (int, float):
        return _coerce_number(value, tp, key)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set `section.key` (or a top-level key) on cfg, coercing to the field's type."""
    all_sections = sections()
    section, _, name = key.rpartition(".")
    if not section:
        top = [f.name for f in dataclasses.fields(Config) if f.name not in all_sections]
        if name not in top:
            raise ConfigError(f"unknown key {key!r}; valid top-level keys: {', '.join(top)}; "
                              f"sections: {', '.join(all_sections)} (write section.key)")
        setattr(cfg, name, coerce(value, typing.get_type_hints(Config)[name], key))
        return
    if section not in all_sections:
        raise ConfigError(f"unknown section {section!r}; valid sections: {', '.join(all_sections)}")
    target = getattr(cfg, section)
    hints = typing.get_type_hints(type(target))
    if name not in hints:
        raise ConfigError(f"unknown key {key!r}; valid keys in {section}: {', '.join(hints)}")
    setattr(target, name, coerce(value, hints[name], key))


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found: pass one of configs/*.yaml")
    try:
        raw = read_yaml(path) or {}
    except YAMLRefused as e:
        raise ConfigError(f"{path} is refused: {e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path} ({e.strerror}): pass a readable file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections (model:, lora:, data:, train:, log:)")
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file at `path`, then `overrides` ({"train.lr": "2e-4", ...}); validated."""
    cfg = Config()
    if path is not None:
        for key, value in _read_yaml(Path(path)).items():
            if key in sections():
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: section {key!r} must be a mapping")
                for sub, v in value.items():
                    set_key(cfg, f"{key}.{sub}", v)
            else:
                set_key(cfg, str(key), value)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


def keys_help() -> str:
    """Every config key with its type, default, valid range and description: the body of --help."""
    lines = []
    for section, cls in [*sections().items(), (None, Config)]:
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if section or f.name not in sections()]
        lines.append(f"\n{section or 'top level'}: {cls.__doc__.splitlines()[0] if section else ''}".rstrip())
        for f in fields:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            valid = f" in {f.metadata['valid']}" if f.metadata.get("valid") else ""
            key = f"--{section}.{f.name}" if section else f"--{f.name}"
            lines.append(f"  {key} ({_type_name(hints[f.name])}{valid}; default {default!r})\n"
                         f"        {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _overrides(rest: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {token!r}: overrides look like --train.lr 2e-4")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(rest):
                raise ConfigError(f"--{key} needs a value")
            value, i = rest[i + 1], i + 1
        overrides[key] = value
        i += 1
    return overrides


@dataclass
class RunOptions:
    """What the command line says beside the config: resume from where, move an earlier run aside."""

    resume: str | None = None
    overwrite: bool = False
    print_config: bool = False


def parse_args(argv: list[str] | None = None, description: str = "") -> tuple[Config, RunOptions]:
    """`--config FILE [--section.key value ...] [--resume latest|PATH] [--overwrite]` -> (config, options)."""
    parser = argparse.ArgumentParser(
        prog="train.py", description=description, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (any can be overridden: --train.lr 2e-4 --output_dir runs/x):" + keys_help())
    parser.add_argument("--config", help="YAML preset, e.g. configs/demo.yaml")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder (output_dir/checkpoints/step-N)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output_dir that holds an earlier run (moved aside, not deleted)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config (preset + overrides, validated) as YAML and exit; loads no model")
    args, rest = parser.parse_known_args(argv)
    return load_config(args.config, _overrides(rest)), RunOptions(args.resume, args.overwrite, args.print_config)

