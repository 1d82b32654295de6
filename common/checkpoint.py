"""Self-describing checkpoints: written atomically, read safely, and enough to rebuild their network.

A checkpoint is a dict holding the network's registered class name and config (`describe`), the run's
config, dataset, preset and step, the raw and EMA weights, and the optimiser and RNG state
(common.loop.payload). `load_model(path)` rebuilds the network through the registry common.nets.MODELS,
without the code that trained it: this is how one day uses another day's model.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from common.config import UserError, from_dict, to_dict
from common.nets import MODELS


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | str) -> dict:
    """Read a checkpoint with weights_only=True; missing or corrupted files are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train first (run the day's train.py) or drop --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or unsafe pickle content
        raise UserError(f"checkpoint {path} is corrupted ({type(err).__name__}); delete it and retrain") from None
    if not isinstance(ckpt, dict) or "model_class" not in ckpt:
        raise UserError(f"{path} is not a checkpoint of this project; delete it and retrain")
    return ckpt


def kept_checkpoints(folder: Path) -> list[Path]:
    """checkpoint_step{N}.pt files a run kept along the way (TrainConfig.keep_every), in step order."""
    return sorted(Path(folder).glob("checkpoint_step*.pt"), key=lambda p: int(p.stem.removeprefix("checkpoint_step")))


def describe(model: nn.Module) -> dict:
    """What it takes to rebuild `model`: its registered class name and its config as plain data."""
    return {"model_class": type(model).__name__, "model_config": to_dict(model.cfg)}


def build_model(ckpt: dict, ema: bool = True) -> nn.Module:
    """Rebuild the network a checkpoint describes (nested configs and tuples restored) and load its (EMA) weights."""
    if ckpt["model_class"] not in MODELS:
        raise UserError(f"checkpoint holds an unregistered model class '{ckpt['model_class']}' (registered: "
                        f"{', '.join(MODELS)}); import the module that defines it")
    cls, cfg_cls = MODELS[ckpt["model_class"]]
    model = cls(from_dict(cfg_cls, ckpt["model_config"]))
    model.load_state_dict(ckpt["ema" if ema and "ema" in ckpt else "model"])
    return model.eval()


def load_model(path: Path | str, device: torch.device | str = "cpu", ema: bool = True,
               finished: bool = False) -> tuple[nn.Module, dict]:
    """The (EMA) network of the checkpoint at `path`, on `device`, and the checkpoint itself. `finished`: refuse a
    run that has not reached its last step."""
    ckpt = load_checkpoint(path)
    if finished and ckpt["step"] < ckpt["config"]["steps"]:
        raise UserError(f"{path} is at step {ckpt['step']} of {ckpt['config']['steps']}: its run is still training "
                        "(wait for it, or finish it with --resume)")
    return build_model(ckpt, ema).to(device), ckpt


def load_ddpm(path: Path | str, device: torch.device | str = "cpu", finished: bool = True):
    """A trained DDPM checkpoint ready to sample: (EMA network, its denoiser with x̂0 clipped to [-1, 1] as Ho et
    al. sample, its DiscreteVP path, the checkpoint). `finished`: refuse a run that has not reached its last step."""
    from common.paths import DiscreteVP  # here: paths and predictions build on nets, not on us
    from common.predictions import clipped, denoiser

    model, ckpt = load_model(path, device, finished=finished)
    c = ckpt["config"]
    vp = DiscreteVP.named(c["schedule"], c["n_steps"])
    return model, clipped(denoiser(model, c["prediction"], vp), vp), vp, ckpt
