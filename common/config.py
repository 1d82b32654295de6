"""Typed run configuration and the one command line every day shares.

    python dayNN/code/train.py [--preset smoke|cpu|gpu] [--config FILE.yaml] [--out DIR]
                               [--device auto|cpu|cuda] [--data-dir DIR] [--resume]
                               [--track none|wandb|tensorboard] [--key=value ...]

A day describes its experiment with a dataclass; presets are instances of it. A field may itself be a
dataclass (a day's `unet: UNetConfig`); its fields are addressed with dotted keys, `--unet.channels=32`.
A run's config is built in three layers, each type-checked against the fields (nanoGPT's idea, without
the `exec`): the preset, then the YAML file given by `--config` (a nested mapping or dotted keys), then
`--key=value`, which wins. Every run writes OUT/config.yaml (`to_yaml`), which `--config` reads back to
the same config. Every mistake a user can make is a one-line `UserError` naming the fix, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file): printed as one line, no traceback."""


@dataclasses.dataclass
class RunArgs:
    """What the command line says besides the experiment itself, and the config it resolved to."""
    preset: str
    out: Path
    device: str
    data_dir: str | None
    resume: bool
    config: Any                    # the resolved config: common.run.Run.from_args writes it to OUT/config.yaml
    track: str = "none"            # none | wandb | tensorboard: where common.tracking mirrors the run


# --- one value: text (command line) or plain data (YAML, checkpoints) -> the field's type ----------------

def _convert(text: str, kind, key: str):
    """Parse `text` as the dataclass field type `kind` (bool, int, float, str, tuple[int, ...]); `key` names it."""
    origin = typing.get_origin(kind)
    if origin is tuple:  # "1,2,2" -> (1, 2, 2)
        inner = typing.get_args(kind)[0]
        return tuple(_convert(part, inner, key) for part in text.split(",") if part)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{key}={text}: expected true or false")
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"{key}={text}: expected {kind.__name__}") from None


def _from_data(value, kind, key: str):
    """A value read from YAML or a checkpoint as the field type `kind`, checked exactly as its text would be.

    Scalars go through `_convert` as text, so `lr: 1e-3` (a string to YAML 1.1) and `lr: 0.001` both give a
    float while `steps: 2.5` is refused like `--steps=2.5`; lists become tuples.
    """
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        inner = typing.get_args(kind)[0]
        return tuple(_from_data(v, inner, key) for v in value)
    if value is None or isinstance(value, (dict, list, tuple)):
        expected = "a list" if typing.get_origin(kind) is tuple else kind.__name__
        raise UserError(f"{key}={value!r}: expected {expected}")
    return _convert(str(value), kind, key)


# --- setting (dotted) keys on a config ------------------------------------------------------------------

def _set(cfg: C, key: str, value, convert: Callable, prefix: str = "") -> C:
    """A copy of `cfg` with the dotted `key` set to convert(value, field type, full key name)."""
    name, dot, rest = key.partition(".")
    hints = typing.get_type_hints(type(cfg))
    if name not in hints:
        raise UserError(f"unknown config key '{prefix}{key}'; valid keys: {', '.join(prefix + k for k in hints)}")
    if dataclasses.is_dataclass(hints[name]):  # a group of keys: descend
        if not dot:
            first = dataclasses.fields(hints[name])[0].name
            raise UserError(f"'{prefix}{name}' is a group of keys; set them one at a time, as {prefix}{name}.{first}=")
        new = _set(getattr(cfg, name), rest, value, convert, f"{prefix}{name}.")
    elif dot:
        raise UserError(f"unknown config key '{prefix}{key}': '{prefix}{name}' has no keys inside")
    else:
        new = convert(value, hints[name], prefix + name)
    return dataclasses.replace(cfg, **{name: new})


def apply_overrides(cfg: C, pairs: list[str]) -> C:
    """Return a copy of `cfg` with `--key=value` pairs applied (dotted keys reach nested configs)."""
    for pair in pairs:
        key, sep, value = pair.removeprefix("--").partition("=")
        if not sep:
            raise UserError(f"'{pair}': overrides are written --key=value")
        cfg = _set(cfg, key, value, lambda text, kind, name: _convert(text, kind, f"--{name}"))
    return cfg


def apply_mapping(cfg: C, data: dict) -> C:
    """Return a copy of `cfg` with a mapping of plain values applied: nested ({'unet': {'channels': 8}}),
    dotted ({'unet.channels': 8}) or both, as YAML files and checkpoints hold them."""
    for key, value in flatten(data).items():
        cfg = _set(cfg, key, value, _from_data)
    return cfg


def from_dict(cls: type[C], data: dict) -> C:
    """Rebuild a config from its plain data (`to_dict`): nested dicts become configs, lists tuples.
    Keys it lacks keep the class defaults (a checkpoint from before a field was added still loads)."""
    return apply_mapping(cls(), data)


# --- plain data ------------------------------------------------------------------------------------------

def plain(value):
    """`value` with every tuple a list, recursively: the data YAML, JSON and checkpoints hold."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def to_dict(cfg) -> dict:
    """The config as plain data, nested dicts and lists (for checkpoints, metrics.json and YAML)."""
    return plain(dataclasses.asdict(cfg))


def flatten(data: dict, prefix: str = "") -> dict:
    """{'lr': 0.1, 'unet': {'channels': 8}} -> {'lr': 0.1, 'unet.channels': 8}: one dotted key per value."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- YAML files ------------------------------------------------------------------------------------------

def load_yaml(path: Path) -> dict:
    """The mapping a YAML config file holds; a missing or unparseable file is a one-line UserError."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise UserError(f"--config {path}: cannot read it ({err.strerror or type(err).__name__})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or type(err).__name__).split())
        raise UserError(f"--config {path}: not valid YAML{where} ({problem})") from None
    if data is None:  # an empty file: no settings
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of config keys, found a {type(data).__name__}")
    return data


def to_yaml(cfg, preset: str) -> str:
    """The full config as YAML that `--config` reads back to an identical config; `preset` is recorded
    as the key `preset` (the run's name for its starting point; every other key is set explicitly)."""
    header = ("# The full config of a run: rerun it with `python dayNN/code/train.py --config config.yaml`;\n"
              "# --key=value options still win. `preset` is the preset it started from.\n")
    return header + yaml.safe_dump({"preset": preset, **to_dict(cfg)}, sort_keys=False, default_flow_style=None)


def resolve(presets: dict[str, C], preset: str | None, path: Path | None, overrides: list[str]) -> tuple[C, str]:
    """The config of a run and its preset name: the preset (`--preset`, else the file's `preset` key, else
    cpu), then the file's keys, then the `--key=value` overrides."""
    data = load_yaml(path) if path else {}
    preset = str(preset or data.get("preset") or "cpu")
    data.pop("preset", None)  # a name, not a config key
    if preset not in presets:
        raise UserError(f"--config {path}: preset '{preset}' is not one of {', '.join(presets)}")
    try:
        cfg = apply_mapping(presets[preset], data)
    except UserError as err:
        raise UserError(f"--config {path}: {err}") from None
    return apply_overrides(cfg, overrides), preset


# --- the command line ------------------------------------------------------------------------------------

def parse_args(presets: dict[str, C], default_out: Path, description: str,
               argv: list[str] | None = None) -> tuple[C, RunArgs]:
    """Parse the shared command line; returns (config, run arguments). Default preset: `cpu`."""
    example = next(iter(presets.values()))
    keys = ", ".join(f"{k}={v!r}" for k, v in flatten(dataclasses.asdict(example)).items())
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys (override with --key=value, or set them in a --config file): {keys}")
    parser.add_argument("--preset", default=None, choices=list(presets),
                        help="smoke: seconds (tests); cpu: minutes on 2 cores (default, unless the --config file "
                             "names one); gpu: paper scale")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of config keys (nested or dotted), e.g. a run's OUT/config.yaml")
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $D30_DATA_DIR or ./data)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--track", default="none", choices=["none", "wandb", "tensorboard"],
                        help="also log the run to Weights & Biases or TensorBoard (optional packages; common.tracking)")
    args, rest = parser.parse_known_args(argv)
    cfg, preset = resolve(presets, args.preset, args.config, rest)
    return cfg, RunArgs(preset, args.out, args.device, args.data_dir, args.resume, cfg, args.track)


def cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run a day's `main`, turning a UserError into one line on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: continue with --resume", file=sys.stderr)
        raise SystemExit(130) from None
