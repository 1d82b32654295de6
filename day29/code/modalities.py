"""The two modalities that travel with an MNIST digit: its English name as analog bits, and its DTMF tone.

Text. The name ("seven") is padded to LENGTH characters with "_" and each character becomes a ±1 one-hot row
over the ALPHABET (analog bits, Chen et al. 2023, in the spirit of continuous diffusion for text): a (5, 16) array
in [-1, 1] like an image's pixels. A generated array is read back by the argmax of each row; a sample is right
when the decoded string is exactly the name.

Audio. A telephone keypad's dual tone (ITU-T Q.23): digit d sounds the sum of one ROW and one COLUMN frequency,
sampled at 8 kHz, CLIP = 512 samples (64 ms). Every clip is a draw from a distribution: two sines of random
amplitudes, both at phase 0 at the first sample, plus a little white noise. DETUNE and MAX_ONSET (0 here) would
add a frequency jitter and a silent onset; either one shifts the phases of the later samples (a 1 % detuning turns
the 1477 Hz tone by a whole cycle over the clip, one sample of onset by 1.2 rad), and random phases make the clips
of one key a family of waveforms whose mean is silence: a network of this size does not learn to draw from that in
minutes. The decoder is Goertzel's algorithm (one DFT bin evaluated by a second-order recursion) at the seven
keypad frequencies (each probed at PROBES detuned copies when DETUNE > 0, the strongest kept): the strongest row and
the strongest column name the key; a clip whose two tones carry under half of its energy, or whose key is not a digit
(* and #), reads as NOT_A_DIGIT.

References
    ITU-T Recommendation Q.23 (1988), "Technical features of push-button telephone sets" (the DTMF frequencies).
    Goertzel, G. (1958), "An algorithm for the evaluation of finite trigonometric series", Amer. Math. Monthly 65(1).
    Chen, Zhang & Hinton (2023), "Analog Bits: Generating Discrete Data using Diffusion Models with
        Self-Conditioning", arXiv:2208.04202.
"""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PAD = "_"
ALPHABET = PAD + "".join(sorted(set("".join(NAMES))))        # 16 symbols: _ e f g h i n o r s t u v w x z
LENGTH = 5                                                   # the longest name ("three", "seven", "eight")

RATE = 8000                                                  # samples per second
CLIP = 512                                                   # samples per clip: 64 ms
ROWS = (697.0, 770.0, 852.0, 941.0)                          # Hz, the keypad's rows ...
COLS = (1209.0, 1336.0, 1477.0)                              # ... and columns
KEYS = ("123", "456", "789", "*0#")                          # KEYS[row][col]
DETUNE = 0.0                                                 # relative frequency jitter (0: none)
MAX_ONSET = 0                                                # silent samples before the tone, 0..MAX_ONSET
NOISE = 0.01                                                 # white noise std
NOT_A_DIGIT = -1
PROBES = 5                                                   # Goertzel probes per keypad frequency


# --- text ------------------------------------------------------------------------------------------------------

def encode_text(digits: Tensor) -> Tensor:
    """Digits (B,) -> analog bits (B, LENGTH, len(ALPHABET)): +1 at each character of the padded name, −1 elsewhere."""
    index = torch.tensor([[ALPHABET.index(c) for c in name.ljust(LENGTH, PAD)] for name in NAMES])  # (10, LENGTH)
    onehot = torch.nn.functional.one_hot(index[digits.cpu()], len(ALPHABET)).float()
    return (2 * onehot - 1).to(digits.device)


def decode_text(bits: Tensor) -> list[str]:
    """Analog bits (B, LENGTH, len(ALPHABET)) -> strings, the argmax of every position, padding stripped."""
    return ["".join(ALPHABET[i] for i in row).rstrip(PAD) for row in bits.argmax(-1).tolist()]


def text_digits(bits: Tensor) -> Tensor:
    """The digit each decoded string names exactly, NOT_A_DIGIT for any other string: (B,) long."""
    return torch.tensor([NAMES.index(s) if s in NAMES else NOT_A_DIGIT for s in decode_text(bits)])


# --- audio -----------------------------------------------------------------------------------------------------

def tone_pair(digit: int) -> tuple[float, float]:
    """(row, column) frequencies in Hz of a digit's key."""
    row = next(r for r, keys in enumerate(KEYS) if str(digit) in keys)
    return ROWS[row], COLS[KEYS[row].index(str(digit))]


def dtmf(digits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Digits (B,) -> clips (B, CLIP) in [-1, 1]: two sines of random amplitude (detuned by up to DETUNE), both at
    phase 0 where they start after a silent onset of up to MAX_ONSET samples, plus white noise. All randomness comes
    from `generator` (drawn on the CPU)."""
    b = len(digits)
    pairs = torch.tensor([tone_pair(d) for d in range(10)], dtype=torch.float64)[digits.cpu()]     # (B, 2) Hz

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, generator=generator, dtype=torch.float64)
    freq = pairs * (1 + uniform(-DETUNE, DETUNE, 2))                                                # (B, 2)
    amp = uniform(0.3, 0.45, 2)
    onset = torch.randint(0, MAX_ONSET + 1, (b, 1), generator=generator)                            # (B, 1)
    n = torch.arange(CLIP, dtype=torch.float64) - onset                                             # (B, CLIP)
    tones = amp[..., None] * torch.sin(2 * math.pi * freq[..., None] / RATE * n[:, None])          # (B, 2, CLIP)
    clip = tones.sum(1) * (n >= 0)                                                                  # (B, CLIP)
    clip = clip + NOISE * torch.randn(b, CLIP, generator=generator, dtype=torch.float64)
    return clip.clamp(-1, 1).float().to(digits.device)


def goertzel_power(clips: Tensor, freqs: tuple[float, ...]) -> Tensor:
    """|X(f)|² of each clip (B, N) at each frequency (F,), by Goertzel's recursion
    s_n = x_n + 2cos(ω) s_{n−1} − s_{n−2},  |X|² = s_{N−1}² + s_{N−2}² − 2cos(ω) s_{N−1} s_{N−2},  ω = 2π f / RATE
    (float64): (B, F)."""
    x = clips.detach().cpu().double()
    coeff = 2 * torch.cos(2 * math.pi * torch.tensor(freqs, dtype=torch.float64) / RATE)           # (F,)
    s1 = s2 = torch.zeros(len(x), len(freqs), dtype=torch.float64)
    for n in range(x.shape[1]):
        s1, s2 = x[:, n, None] + coeff * s1 - s2, s1
    return s1 ** 2 + s2 ** 2 - coeff * s1 * s2


def key_power(clips: Tensor) -> Tensor:
    """The power of each keypad frequency in each clip (B, 7), rows then columns: the largest |X(f)|² over PROBES
    detuned copies of f spanning ±DETUNE, so that a detuned tone (up to 15 Hz, a DFT bin over 512 samples is
    15.6 Hz wide) is measured at its own frequency; with DETUNE = 0, |X(f)|² at f itself."""
    k = PROBES if DETUNE > 0 else 1                                  # undetuned tones: the frequency itself
    spread = torch.linspace(-DETUNE, DETUNE, k).tolist()
    probes = tuple(f * (1 + d) for f in ROWS + COLS for d in spread)
    return goertzel_power(clips, probes).reshape(len(clips), len(ROWS + COLS), k).amax(-1)


def audio_digits(clips: Tensor, min_share: float = 0.5) -> Tensor:
    """The digit each clip (B, CLIP) dials: strongest row × strongest column, NOT_A_DIGIT when that key is * or #
    or when the two tones carry under `min_share` of the clip's energy (a sine of amplitude a over N samples has
    |X(f)|² ≈ (aN/2)² and energy a²N/2, so 2|X(f)|²/N is its energy)."""
    power = key_power(clips)                                                                        # (B, 7)
    row, col = power[:, :4].argmax(1), power[:, 4:].argmax(1)
    tone_energy = 2 / clips.shape[1] * (power[:, :4].amax(1) + power[:, 4:].amax(1))
    share = tone_energy / clips.detach().cpu().double().pow(2).sum(1).clamp(min=1e-12)
    keys = [KEYS[r][c] for r, c in zip(row.tolist(), col.tolist())]
    return torch.tensor([int(k) if k.isdigit() and s >= min_share else NOT_A_DIGIT
                         for k, s in zip(keys, share.tolist())])
