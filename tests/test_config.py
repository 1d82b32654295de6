"""Configs: nested keys on the command line and in YAML files, type-checked alike; one-line errors; every run's
OUT/config.yaml reads back to the same config; the migrated days' presets build the networks they built before;
each config's check() runs when it is parsed, and the U-Net's agrees with building the real network.
(The bad inputs a user would type, through the days' real command lines: tests/test_bad_inputs.py.)"""
import itertools
from dataclasses import dataclass, field

import pytest
import torch
from conftest import ROOT, load_day

from common.checkpoint import load_checkpoint, load_model
from common.config import UserError, apply_overrides, check_out_folder, cli, parse_args, require, to_yaml, validate
from common.loop import fit
from common.nets import UNet, UNetConfig
from common.run import Run
from common.training import TrainConfig


@dataclass
class Cfg(TrainConfig):
    """A day's config in miniature: the shared fields, its own, and a nested U-Net."""
    prediction: str = "v"
    snr_db: tuple[float, ...] = (-10.0, 0.0)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=8, mults=(1,), n_res=1, attn_res=(),
                                                                 image_size=8))


PRESETS = {"smoke": Cfg(steps=2, batch_size=4, warmup=1, ckpt_every=2, log_every=1, sample_every=0, bf16=False),
           "cpu": Cfg(), "gpu": Cfg(lr=2e-5, unet=UNetConfig(channels=16))}


def parse(argv):
    return parse_args(PRESETS, ROOT / "unused", "test", argv)


def one_line_error(argv, capsys) -> str:
    """Run parse_args as a day's main under cli(); return its stderr, which must be one line, no traceback."""
    with pytest.raises(SystemExit) as exit_:
        cli(parse, argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- the command line -------------------------------------------------------------------------------------

def test_nested_overrides_are_typed_and_leave_the_preset_alone():
    cfg = apply_overrides(PRESETS["cpu"], ["--unet.channels=4", "--unet.attn_res=4,2", "--lr=1e-3", "--snr_db=-5,5"])
    assert cfg.unet == UNetConfig(channels=4, mults=(1,), n_res=1, attn_res=(4, 2), image_size=8)
    assert cfg.lr == 1e-3 and cfg.snr_db == (-5.0, 5.0) and cfg.steps == PRESETS["cpu"].steps
    assert PRESETS["cpu"].unet.channels == 8


@pytest.mark.parametrize("bad, message", [
    ("--unet.chanels=3", "unknown config key 'unet.chanels'; valid keys: unet.in_channels, unet.channels"),
    ("--unet.channels=wide", "--unet.channels=wide: expected int"),
    ("--unet.mults=1,x", "--unet.mults=1,x: expected int values separated by commas ('x' is not one)"),
    ("--unet=8", "'unet' is a group of keys"),
    ("--lr.base=1", "unknown config key 'lr.base': 'lr' has no keys inside"),
    ("--stpes=3", "unknown config key 'stpes'"),
])
def test_bad_nested_overrides_are_one_line_errors(bad, message, capsys):
    assert message in one_line_error([bad], capsys)


def test_help_lists_the_nested_keys(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "unet.channels=8" in out and "unet.attn_res=()" in out and "--config" in out


# --- YAML files ---------------------------------------------------------------------------------------------

def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_takes_nested_and_dotted_keys_and_the_command_line_wins(tmp_path):
    path = write(tmp_path, "lr: 1e-3\nsteps: 700\nunet:\n  channels: 4\n  mults: [1, 2]\n"
                           "unet.n_res: 2\nsnr_db: [1, 2.5]\n")
    cfg, args = parse(["--config", str(path), "--unet.channels=16"])
    assert args.preset == "cpu" and cfg.lr == 1e-3 and cfg.steps == 700 and cfg.snr_db == (1.0, 2.5)
    assert cfg.unet == UNetConfig(channels=16, mults=(1, 2), n_res=2, attn_res=(), image_size=8)


def test_yaml_preset_key_picks_the_preset_unless_the_command_line_does(tmp_path):
    path = write(tmp_path, "preset: smoke\nlr: 0.5\n")
    cfg, args = parse(["--config", str(path)])
    assert args.preset == "smoke" and cfg == apply_overrides(PRESETS["smoke"], ["--lr=0.5"])
    cfg, args = parse(["--config", str(path), "--preset", "gpu"])
    assert args.preset == "gpu" and cfg == apply_overrides(PRESETS["gpu"], ["--lr=0.5"])


@pytest.mark.parametrize("text, message", [
    ("unet:\n  chanels: 3\n", "unknown config key 'unet.chanels'"),
    ("steps: 2.5\n", "steps=2.5: expected int"),
    ("bf16: maybe\n", "bf16=maybe: expected true or false"),
    ("lr: [1, 2]\n", "lr=[1, 2]: expected float"),
    ("unet:\n  mults: [1, two]\n", "unet.mults=[1, 'two']: expected int values separated by commas ('two' is not"),
    ("unet: 8\n", "'unet' is a group of keys"),
    ("steps:\n", "steps=None: expected int"),
    ("preset: huge\n", "preset 'huge' is not one of smoke, cpu, gpu"),
    ("lr: [1, 2\n", "not valid YAML at line 2"),
    ("- lr\n- 1\n", "expected a mapping of config keys"),
])
def test_bad_yaml_is_a_one_line_error_naming_the_file_and_key(tmp_path, text, message, capsys):
    path = write(tmp_path, text)
    err = one_line_error(["--config", str(path)], capsys)
    assert str(path) in err and message in err, err


def test_a_missing_config_file_is_a_one_line_error(tmp_path, capsys):
    err = one_line_error(["--config", str(tmp_path / "nope.yaml")], capsys)
    assert "nope.yaml" in err and "cannot read" in err


def day_presets():
    """(name, presets) of the days whose configs nest a UNetConfig."""
    return [(f"day{d:02d}", load_day(d, "train").PRESETS) for d in (2, 5, 6, 8)] + [("test", PRESETS)]


def test_every_preset_round_trips_through_yaml(tmp_path):
    for day, presets in day_presets():
        for preset, cfg in presets.items():
            path = write(tmp_path, to_yaml(cfg, preset), f"{day}_{preset}.yaml")
            again, args = parse_args(presets, tmp_path, "test", ["--config", str(path)])
            assert again == cfg and args.preset == preset, (day, preset)


def test_a_run_writes_a_config_yaml_that_reproduces_it(tmp_path):
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--device", "cpu", "--unet.channels=4", "--lr=2e-5"]
    cfg, args = parse(argv)
    Run.from_args(args, "toy")
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith("#") and "preset: smoke" in text
    again, args_again = parse(["--config", str(tmp_path / "config.yaml")])
    assert again == cfg and args_again.preset == "smoke"


# --- checkpoints of nested configs ------------------------------------------------------------------------

def train(out, cfg, resume=False):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def loss_fn(net, x0, y, generator):
        t = torch.rand(len(x0), generator=generator)
        return (net(x0, t) - x0).pow(2).mean()
    return fit(UNet(cfg.unet), loss_fn, x, None, cfg, Run(out, torch.device("cpu"), "smoke", "toy", resume))


def test_checkpoints_of_nested_configs_rebuild_and_resume_compares_nested_keys(tmp_path, one_thread):
    cfg = PRESETS["smoke"]
    _, ema = train(tmp_path, cfg)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["config"]["unet"]["channels"] == 8 and ckpt["model_config"]["mults"] == [1]
    rebuilt, _ = load_model(tmp_path / "checkpoint.pt")
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert rebuilt.cfg == cfg.unet and torch.equal(rebuilt(x, t), ema(x, t))
    train(tmp_path, cfg, resume=True)                                        # the same settings: resumes
    with pytest.raises(UserError, match=r"other settings \(unet\.channels\)"):
        train(tmp_path, apply_overrides(cfg, ["--unet.channels=4"]), resume=True)


# --- the migrated days build the networks they built before ------------------------------------------------

OLD = {  # (day, preset): the U-Net fields each preset had before they moved into `unet` (in_channels was 1)
    (2, "smoke"): dict(channels=8, mults=(1, 2), n_res=1, attn_res=()),
    (2, "cpu"): dict(channels=16, mults=(1, 2, 2), n_res=1, attn_res=()),
    (2, "gpu"): dict(channels=64, mults=(1, 2, 2), n_res=1, attn_res=()),
    (5, "smoke"): dict(channels=8, mults=(1, 2), n_res=1, attn_res=()),
    (5, "cpu"): dict(channels=16, mults=(1, 2), n_res=1, attn_res=()),
    (5, "gpu"): dict(channels=32, mults=(1, 2, 2), n_res=2, attn_res=(7,)),
    (6, "smoke"): dict(channels=16, mults=(1, 2, 2), n_res=1, attn_res=(7,)),
    (6, "cpu"): dict(channels=16, mults=(1, 2, 2), n_res=1, attn_res=(7,)),
    (6, "gpu"): dict(channels=64, mults=(1, 2, 2), n_res=2, attn_res=(7, 14)),
    (8, "smoke"): dict(channels=8, mults=(1, 2, 2), n_res=1, attn_res=(7,)),
    (8, "cpu"): dict(channels=16, mults=(1, 2, 2), n_res=1, attn_res=(7,)),  # day 6's cpu net since; 24 before
    (8, "gpu"): dict(channels=64, mults=(1, 2, 2), n_res=2, attn_res=(7, 14)),
}


@pytest.mark.parametrize("day, preset", list(OLD))
def test_migrated_presets_keep_their_unet(day, preset):
    assert load_day(day, "train").PRESETS[preset].unet == UNetConfig(in_channels=1, **OLD[day, preset])


# --- checking a whole config when it is parsed ----------------------------------------------------------------

CALLS = []


@dataclass
class Inner:
    sides: tuple[int, ...] = (1, 2)

    def check(self):
        CALLS.append("inner")
        require(len(self.sides) >= 1, "sides", "choose one or more")


@dataclass
class Base:
    steps: int = 1

    def check(self):
        CALLS.append("base")
        require(self.steps >= 1, "steps", "train at least 1 step")


@dataclass
class Outer(Base):  # no super().check(): validate runs every class's own check
    grid: tuple[float, ...] = (0.5, 1.0)
    inner: Inner = field(default_factory=Inner)

    def check(self):
        CALLS.append("outer")
        require(all(0 <= g <= 1 for g in self.grid), "grid", "choose times in [0, 1]")


def test_validate_runs_nested_then_base_then_own_checks_and_names_the_whole_value():
    CALLS.clear()
    validate(Outer())
    assert CALLS == ["inner", "base", "outer"]
    for cfg, message in [(Outer(grid=(0.5, 2.0, 0.1)), "--grid=0.5,2.0,0.1: choose times in [0, 1]"),
                         (Outer(steps=0), "--steps=0: train at least 1 step"),
                         (Outer(inner=Inner(sides=())), "--inner.sides=: choose one or more")]:
        with pytest.raises(UserError) as err:
            validate(cfg)
        assert str(err.value) == message


def test_overrides_are_validated_after_all_of_them_apply(capsys):
    assert parse(["--steps=5", "--warmup=5"])[0].warmup == 5          # warmup <= steps once both are set
    assert "--warmup=3: choose 0..steps=2" in one_line_error(["--preset", "smoke", "--warmup=3"], capsys)


@pytest.mark.parametrize("argv, message", [
    (["lr=1"], "'lr=1': overrides are written --key=value (--lr=1?)"),
    (["--lr", "1"], "'--lr': overrides are written --key=value (--lr=1?)"),
    (["--preset=huge"], "argument --preset: invalid choice: 'huge'"),
    (["--dev=cpu"], "unknown config key 'dev'"),                       # no argparse abbreviations
    (["--snr_db=1,,x"], "--snr_db=1,,x: expected float values separated by commas ('x' is not one)"),
])
def test_command_line_typos_are_one_line_errors(argv, message, capsys):
    assert message in one_line_error(argv, capsys)


def test_cli_catches_only_user_errors(capsys):
    """A bug is not the user's to fix: its traceback must survive cli()."""
    def buggy(argv):
        raise KeyError("a bug")
    with pytest.raises(KeyError):
        cli(buggy, [])
    assert capsys.readouterr().err == ""


def test_check_out_folder_creates_nothing_and_refuses_files(tmp_path):
    check_out_folder(tmp_path / "a" / "b")
    (tmp_path / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    for out, message in [(tmp_path / "f", "it is a file"), (tmp_path / "f" / "sub", f"{tmp_path / 'f'} is a file")]:
        with pytest.raises(UserError, match=message):
            check_out_folder(out)


def test_unet_check_agrees_with_building_and_running_the_network(one_thread):
    """check() passes exactly the shapes whose network builds and runs (attn_res sides that no level has are
    refused by policy, not because they fail, so every attn_res here is a real side)."""
    x, t = torch.zeros(1, 1, 28, 28), torch.zeros(1)
    for channels, mults, attn_res in itertools.product(range(1, 19), [(1,), (1, 2), (1, 3), (2, 1)], [(), (28,)]):
        cfg = UNetConfig(channels=channels, mults=mults, n_res=1, attn_res=attn_res)
        try:
            validate(cfg)
            accepted = True
        except UserError:
            accepted = False
        try:
            UNet(cfg)(x, t)
            works = True
        except (ValueError, RuntimeError):
            works = False
        assert accepted == works, cfg


def test_every_days_presets_and_ablation_variants_pass_their_checks():
    for day in range(1, 9):
        for cfg in load_day(day, "train").PRESETS.values():
            validate(cfg)
    day6, ablation = load_day(6, "train"), load_day(6, "ablation")
    for overrides, scale, _ in ablation.VARIANTS.values():
        validate(apply_overrides(day6.PRESETS["cpu"], [*ablation.BASE, f"--steps={round(ablation.BASE_STEPS * scale)}",
                                                       *overrides]))
    validate(apply_overrides(day6.PRESETS["smoke"], list(load_day(7, "train").PRESETS["smoke"].day6_args)))



def test_help_lists_the_keys_with_the_values_a_plain_run_uses(capsys):
    """--help shows each config key with its value in the default (cpu) preset, not the first preset's."""
    @dataclass
    class Small:
        steps: int = 1

    with pytest.raises(SystemExit):
        parse_args({"smoke": Small(steps=2), "cpu": Small(steps=300)}, ROOT / "out", "a day", ["--help"])
    help_text = capsys.readouterr().out
    assert "cpu-preset values" in help_text and "steps=300" in help_text and "steps=2" not in help_text
