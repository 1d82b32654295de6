"""Day 29's figures and sounds: spectrograms, images captioned by the other modalities, wav files."""
from __future__ import annotations

import wave
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from modalities import RATE  # noqa: E402

from common.samples import to_uint8  # noqa: E402

GAP = 256  # silent samples between the clips of a wav file (32 ms)


def spectrogram(clip: torch.Tensor) -> np.ndarray:
    """log-magnitude STFT (65 frequencies × 29 frames) of a clip (N,): 128-sample Hann windows, hop 16."""
    spec = torch.stft(clip.float(), n_fft=128, hop_length=16, window=torch.hann_window(128), return_complex=True)
    return (spec.abs() + 1e-3).log10().numpy()


def plot_spectrograms(rows: dict[str, torch.Tensor], path: Path, col_labels: list[str]) -> None:
    """One row of spectrograms per named set of clips (each (K, N)), 0–4 kHz upwards."""
    ncols = max(len(clips) for clips in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.1 * ncols + 1, 1.0 * len(rows) + 0.4), squeeze=False)
    for r, (name, clips) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(clips):
                ax.imshow(spectrogram(clips[c]), origin="lower", aspect="auto", cmap="magma", vmin=-3, vmax=2)
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def plot_captioned(images: torch.Tensor, captions: list[str], path: Path) -> None:
    """Images (K, 1, 28, 28) in a row, each titled with its caption (what the other modalities decode to)."""
    fig, axes = plt.subplots(1, len(images), figsize=(0.9 * len(images), 1.3), squeeze=False)
    for ax, image, caption in zip(axes[0], images, captions):
        ax.imshow(to_uint8(image)[0].numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=6)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_wav(clips: torch.Tensor, path: Path) -> None:
    """Clips (K, N) in [-1, 1] one after another, GAP samples of silence between, as 16-bit mono at RATE Hz."""
    gap = torch.zeros(GAP)
    audio = torch.cat([torch.cat([clip.float().clamp(-1, 1), gap]) for clip in clips])
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((audio * 32767).round().short().numpy().tobytes())
