"""Helpers shared by the test files: loading a day's scripts, and one torch thread for small tensors."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist (pyproject's `-n 2`) each worker has one core: one torch thread, and so for the smoke runs
    it starts (they inherit OMP_NUM_THREADS). Two threads per worker would oversubscribe the two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def load_script(path: Path, name: str | None = None):
    """Import a script from a folder that is not a package (a day's code/, bench/) as a module.

    Its neighbours are importable by their bare names while it loads (train.py may `import forward`);
    the module stays registered under a unique name, which dataclasses need to resolve annotations.
    """
    path = Path(path)
    name = name or f"{path.parent.parent.name}_{path.stem}"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def load_day(day: int, *names: str):
    """The modules `names` of dayNN/code/, loaded with load_script (e.g. load_day(4, "forward", "train"))."""
    code = ROOT / f"day{day:02d}" / "code"
    for own in code.glob("*.py"):  # another day's neighbour of the same bare name (day 9's and day 12's plots.py)
        module = sys.modules.get(own.stem)
        if module is not None and Path(getattr(module, "__file__", None) or "/").parent != code:
            sys.modules.pop(own.stem)
    loaded = [load_script(code / f"{name}.py") for name in names]
    for name in names:  # bare names that neighbours imported must not leak into other days' tests
        sys.modules.pop(name, None)
    return loaded[0] if len(loaded) == 1 else loaded


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors only: on a shared 2-core box a second thread only spins."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# A subprocess limit that catches a hang, never a slow machine: CI may share its two cores with other work.
HANG_TIMEOUT = 1800


def smoke_run(day: int, out: Path, *args: str) -> subprocess.CompletedProcess:
    """`python dayNN/code/train.py --preset smoke --out OUT ARGS`, from the repository root, output captured."""
    return subprocess.run([sys.executable, f"day{day:02d}/code/train.py", "--preset", "smoke", "--out", str(out),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)


def session_smoke(tmp_path_factory, day: int, *args: str) -> Path:
    """A smoke run of day `day` for the whole test session, checked to have succeeded. Under pytest-xdist the
    workers share it: the first to need it runs it under a file lock, the others wait and read the same folder
    (the pattern of pytest-xdist's docs), so no smoke run is trained twice."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent                                    # the session's folder, above each worker's own
    out = root / f"day{day:02d}_smoke"
    with FileLock(f"{out}.lock"):
        if not (out / "smoke.done").exists():
            result = smoke_run(day, out, *args)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
            (out / "smoke.done").touch()
    return out


@pytest.fixture(scope="session")
def day6_smoke(tmp_path_factory) -> Path:
    """One smoke run of day 6 for the whole session, keeping its checkpoints at steps 10, 20 and 30: its own test
    checks it, later days (7, 10, 13, 17) load its checkpoints instead of training their own."""
    return session_smoke(tmp_path_factory, 6, "--keep_every=10")


@pytest.fixture(scope="session")
def day9_smoke(tmp_path_factory) -> Path:
    """One smoke run of day 9 for the whole session (its class-conditional U-Net is unet/checkpoint.pt)."""
    return session_smoke(tmp_path_factory, 9)


@pytest.fixture(scope="session")
def day16_smoke(tmp_path_factory) -> Path:
    """One smoke run of day 16 for the whole session: its own test checks it, day 18 loads its flow (1-RF)."""
    return session_smoke(tmp_path_factory, 16)
