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

The whole config is checked when it is parsed, before any data is loaded: each config class may declare a
`check(self)` that states its constraints with `require(ok, key, fix)` (a day's Config checks its own
fields, TrainConfig and UNetConfig theirs), and `validate` runs them all. The output folder is checked then
too (`check_out_folder`), so a mistake surfaces in a second, not after training.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
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
    if origin is tuple:  # "1,2,2" -> (1, 2, 2); "" -> ()
        inner = typing.get_args(kind)[0]
        return _tuple_of([part for part in text.split(",") if part], inner, key, text)
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


def _tuple_of(items: list, inner, key: str, shown) -> tuple:
    """Each item converted to `inner`; an error names the whole value (`shown`), then its bad item."""
    values = []
    for item in items:
        try:
            values.append(_from_data(item, inner, key))
        except UserError:
            raise UserError(f"{key}={shown}: expected {inner.__name__} values separated by commas "
                            f"('{item}' is not one)") from None
    return tuple(values)


def _from_data(value, kind, key: str):
    """A value read from YAML or a checkpoint as the field type `kind`, checked exactly as its text would be.

    Scalars go through `_convert` as text, so `lr: 1e-3` (a string to YAML 1.1) and `lr: 0.001` both give a
    float while `steps: 2.5` is refused like `--steps=2.5`; lists become tuples.
    """
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        return _tuple_of(list(value), typing.get_args(kind)[0], key, plain(value))
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
    for i, pair in enumerate(pairs):
        key, sep, value = pair.removeprefix("--").partition("=")
        if not sep or not pair.startswith("--"):  # `lr=1` and `--lr 1` are typos, not overrides
            after = pairs[i + 1] if i + 1 < len(pairs) and not sep else ""
            meant = f"--{pair.lstrip('-')}" if sep else f"{pair}={after}" if after and "=" not in after else ""
            raise UserError(f"'{pair}': overrides are written --key=value" + (f" ({meant}?)" if meant else ""))
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


# --- checking a whole config ---------------------------------------------------------------------------

class _Refused(Exception):
    """Raised by `require` inside a config's check(); `validate` turns it into a UserError naming the value."""

    def __init__(self, key: str, fix: str):
        super().__init__(key, fix)
        self.key, self.fix = key, fix


def require(ok: bool, key: str, fix: str) -> None:
    """In a config class's `check(self)`: unless `ok`, refuse its field `key` (dotted for a nested config's
    field), with `fix` saying what to choose instead."""
    if not ok:
        raise _Refused(key, fix)


def _as_text(value) -> str:
    """A value as it is written on the command line: (1, 2) -> 1,2; True -> true."""
    if isinstance(value, tuple):
        return ",".join(_as_text(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def validate(cfg, prefix: str = "") -> None:
    """Run the `check()` of every nested config, then those `cfg`'s classes declare (base class first, so a
    day's Config need not call TrainConfig's); a refused field is the one-line UserError `--key=value: fix`."""
    for f in dataclasses.fields(cfg):
        if dataclasses.is_dataclass(getattr(cfg, f.name)):
            validate(getattr(cfg, f.name), f"{prefix}{f.name}.")
    for cls in reversed(type(cfg).__mro__):
        if "check" in vars(cls):
            try:
                vars(cls)["check"](cfg)
            except _Refused as bad:
                value = cfg
                for name in bad.key.split("."):
                    value = getattr(value, name)
                raise UserError(f"--{prefix}{bad.key}={_as_text(value)}: {bad.fix}") from None


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
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg, preset


# --- the command line ------------------------------------------------------------------------------------

class ArgumentParser(argparse.ArgumentParser):
    """argparse whose own errors (a bad --preset, an option without its value) are one-line UserErrors too,
    instead of a usage block and exit."""

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")


def check_out_folder(out: Path, flag: str = "--out", given: Path | None = None) -> None:
    """Refuse, in one line, an output folder that is a file or that cannot be created or written in; the
    message names `given` (what the user typed, say a file in that folder), else the folder.

    Creates nothing: it opens (and at once drops) a nameless temporary file in the folder, or in its nearest
    existing parent when the folder is still to be made.
    """
    out = Path(out)
    given = given or out
    base = next(p for p in (out, *out.parents) if p.exists())
    if not base.is_dir():
        what = "it is a file" if base == given else f"{base} is a file"
        raise UserError(f"{flag} {given}: {what}, not a folder; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise UserError(f"{flag} {given}: cannot write in {base} ({err.strerror or type(err).__name__}); "
                        f"choose a folder you can write to") from None


def _check_run_args(args: argparse.Namespace) -> None:
    """What the command line names besides the config: output folder, data folder, device."""
    check_out_folder(args.out)
    if args.data_dir is not None and Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise UserError(f"--data-dir {args.data_dir}: it is a file, not a folder")
    if args.device == "cuda":
        import torch  # only here: --help and config errors stay instant

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")


def parse_args(presets: dict[str, C], default_out: Path, description: str,
               argv: list[str] | None = None) -> tuple[C, RunArgs]:
    """Parse the shared command line; returns (config, run arguments). Default preset: `cpu`. Every check
    that needs no data runs here: the whole config (`validate`), the output folder, the device."""
    shown = "cpu" if "cpu" in presets else next(iter(presets))          # the values a plain run uses
    keys = ", ".join(f"{k}={v!r}" for k, v in flatten(dataclasses.asdict(presets[shown])).items())
    parser = ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        epilog=f"config keys with their {shown}-preset values (override with --key=value, or set them in a "
               f"--config file): {keys}")
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
    _check_run_args(args)
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
