"""Typed run configuration and the one command line every day shares.

    python dayNN/code/train.py [--preset smoke|cpu|gpu] [--out DIR] [--device auto|cpu|cuda]
                               [--data-dir DIR] [--resume] [--key=value ...]

A day describes its experiment with a dataclass; presets are instances of it. `--key=value`
overrides are type-checked against the dataclass fields (nanoGPT's idea, without the `exec`), and
every mistake a user can make is a one-line `UserError` naming the fix, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Callable, TypeVar

C = TypeVar("C")


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file): printed as one line, no traceback."""


@dataclasses.dataclass
class RunArgs:
    """What the command line says besides the experiment itself."""
    preset: str
    out: Path
    device: str
    data_dir: str | None
    resume: bool


def _convert(text: str, kind, key: str):
    """Parse `text` as the dataclass field type `kind` (bool, int, float, str, tuple[int, ...])."""
    origin = typing.get_origin(kind)
    if origin is tuple:  # "1,2,2" -> (1, 2, 2)
        inner = typing.get_args(kind)[0]
        return tuple(_convert(part, inner, key) for part in text.split(",") if part)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--{key}={text}: expected true or false")
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"--{key}={text}: expected {kind.__name__}") from None


def apply_overrides(cfg: C, pairs: list[str]) -> C:
    """Return a copy of `cfg` with `key=value` pairs applied, type-checked against its fields."""
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for pair in pairs:
        key, sep, value = pair.removeprefix("--").partition("=")
        if not sep:
            raise UserError(f"'{pair}': overrides are written --key=value")
        if key not in hints:
            raise UserError(f"unknown config key '{key}'; valid keys: {', '.join(hints)}")
        changes[key] = _convert(value, hints[key], key)
    return dataclasses.replace(cfg, **changes)


def parse_args(presets: dict[str, C], default_out: Path, description: str,
               argv: list[str] | None = None) -> tuple[C, RunArgs]:
    """Parse the shared command line; returns (config, run arguments). Default preset: `cpu`."""
    example = next(iter(presets.values()))
    keys = ", ".join(f"{f.name}={getattr(example, f.name)!r}" for f in dataclasses.fields(example))
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys (override with --key=value): {keys}")
    parser.add_argument("--preset", default="cpu", choices=list(presets),
                        help="smoke: seconds (tests); cpu: minutes on 2 cores (default); gpu: paper scale")
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $D30_DATA_DIR or ./data)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    args, rest = parser.parse_known_args(argv)
    cfg = apply_overrides(presets[args.preset], rest)
    return cfg, RunArgs(args.preset, args.out, args.device, args.data_dir, args.resume)


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


def to_dict(cfg) -> dict:
    """The config as plain data (for checkpoints and metrics.json)."""
    return dataclasses.asdict(cfg)
