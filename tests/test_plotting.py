"""common.plotting: exact pixels for grids, readable files (and frame counts) for everything else."""

import numpy as np
import pytest
import torch
from PIL import Image

from common import plotting
from common.config import UserError

MAX_BYTES = 1_000_000


def small_png(path) -> bool:
    with Image.open(path) as im:
        im.verify()  # raises if the file is not a valid image
    return 0 < path.stat().st_size < MAX_BYTES


def test_to_uint8_inverts_the_loader_scaling():
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(plotting.to_uint8(u.float() / 127.5 - 1), u)
    assert plotting.to_uint8(torch.tensor([-5.0, 5.0])).tolist() == [0, 255]  # clamped


def test_image_grid_places_pixels_exactly():
    x = -torch.ones(5, 1, 3, 4)  # five black 3x4 grey images
    x[4, 0, 2, 1] = 1.0  # one white pixel in image 4, row 2, column 1
    x[1, 0, 0, 0] = 0.0  # one mid-grey pixel in image 1, top-left
    grid = plotting.image_grid(x, nrow=2, pad=1)  # 3 rows of 2
    assert grid.shape == (1 + 3 * (3 + 1), 1 + 2 * (4 + 1), 3) and grid.dtype == np.uint8
    # image 4 is at grid row 2, column 0: top-left (1 + 2 * 4, 1 + 0 * 5) = (9, 1)
    assert grid[9 + 2, 1 + 1].tolist() == [255, 255, 255]
    assert grid[1, 1 + 5].tolist() == [128, 128, 128]  # image 1: row 0, column 1
    assert grid[1, 1].tolist() == [0, 0, 0]
    assert (grid[0] == plotting.PAD_VALUE).all() and (grid[:, 5] == plotting.PAD_VALUE).all()
    assert (grid[9:12, 6:10] == plotting.PAD_VALUE).all()  # the empty sixth slot is padding
    assert grid[grid < 255].size == 3 * (5 * 12 - 1)  # everything else is the images' black or grey


def test_marked_images_get_a_red_frame_and_keep_their_pixels():
    x = torch.rand(4, 1, 3, 3) * 2 - 1
    plain = plotting.image_grid(x, nrow=2, pad=1)
    grid = plotting.image_grid(x, nrow=2, pad=1, marked=torch.tensor([False, False, False, True]))
    red = np.all(grid == plotting.MARK_RGB, axis=-1)                  # (9, 9)
    # image 3 sits at grid row 1, column 1: top-left (1 + 4, 1 + 4); its frame is the ring around it
    ring = np.zeros_like(red)
    ring[4:9, 4:9] = True
    ring[5:8, 5:8] = False
    assert (red == ring).all()
    assert (grid[~ring] == plain[~ring]).all()                      # every image pixel unchanged


def test_image_grid_keeps_rgb_channels():
    x = -torch.ones(1, 3, 2, 2)
    x[0, 0] = 1.0  # pure red
    assert plotting.image_grid(x, pad=0).tolist() == [[[255, 0, 0]] * 2] * 2
    with pytest.raises(ValueError):
        plotting.image_grid(torch.zeros(1, 2, 4, 4))


def test_save_grid_and_gif(tmp_path):
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    plotting.save_grid(x, tmp_path / "sub" / "grid.png", nrow=3, scale=3)
    with Image.open(tmp_path / "sub" / "grid.png") as im:
        assert im.size == (3 * (2 + 3 * 10), 3 * (2 + 2 * 10))
        assert np.array_equal(np.asarray(im.convert("RGB"))[::3, ::3], plotting.image_grid(x, nrow=3))

    frames = [x * s for s in torch.linspace(0, 1, 5)]
    plotting.save_gif(frames, tmp_path / "f.gif", duration_ms=50)
    with Image.open(tmp_path / "f.gif") as gif:
        assert gif.n_frames == 5
        gif.seek(4)
        assert gif.info["duration"] == plotting.GIF_HOLD_MS
    assert (tmp_path / "f.gif").stat().st_size < MAX_BYTES


def test_line_plots(tmp_path):
    plotting.plot_curves(
        {"a": ([1, 2, 3], [3.0, 2.0, 1.5]), "b": (range(100), np.linspace(1, 2, 100))},
        tmp_path / "curves.png", xlabel="step", ylabel="loss", logy=True,
    )
    assert small_png(tmp_path / "curves.png")
    log = tmp_path / "run" / "log.csv"
    log.parent.mkdir()
    rows = [f"{s},{1 / (s + 1) + 0.01},{s * 0.1}" for s in range(300)]
    log.write_text("step,loss,lr\n" + "\n".join(rows) + "\n")
    plotting.plot_loss_csv(log, tmp_path / "loss.png", smooth=20)
    assert small_png(tmp_path / "loss.png")
    (tmp_path / "bad.csv").write_text("epoch,value\n1,2\n")
    with pytest.raises(UserError, match="'step' and 'loss'"):
        plotting.plot_loss_csv(tmp_path / "bad.csv", tmp_path / "bad.png")


def test_centred_average_does_not_lag_and_keeps_the_ends():
    ramp = np.arange(10.0)
    smooth = plotting.centred_average(ramp, 5)
    assert np.allclose(smooth[2:-2], ramp[2:-2])           # a centred window leaves a straight line in place
    assert smooth[0] == np.mean([0, 1, 2]) and smooth[-1] == np.mean([7, 8, 9])  # shrunken windows at the ends
    assert np.allclose(plotting.centred_average(ramp, 1), ramp)


def test_2d_plots(tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g) + 1
    plotting.scatter2d({"data": a, "samples": b}, tmp_path / "scatter.png", title="toy")
    states = [a * (1 - s) + b * s for s in torch.linspace(0, 1, 20)]
    plotting.trajectories2d(states, tmp_path / "traj.png", n_show=32)
    calls = []

    def field(x):
        calls.append(x.shape)
        return -x

    plotting.vector_field(field, tmp_path / "field.png", n=15, background=a)
    assert calls == [(225, 2)]
    for name in ["scatter.png", "traj.png", "field.png"]:
        assert small_png(tmp_path / name)


def test_panel(tmp_path):
    images = [[torch.rand(1, 28, 28) * 2 - 1 for _ in range(4)], [torch.rand(3, 28, 28) * 2 - 1 for _ in range(3)]]
    plotting.panel(images, tmp_path / "panel.png", row_labels=["forward", "reverse"], col_labels=list("abcd"))
    assert small_png(tmp_path / "panel.png")
