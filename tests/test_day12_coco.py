"""Day 12's real-data script, coco.py: smoke runs on the tiny COCO folder of test_day12_real (word encoder, then a
tiny frozen CLIP), the vocabulary against the captions, CLIP's padding mask against its tokenizer, ClipTextToImage
against FrozenCLIPText and unchanged by padding, its CLIP frozen through a training step and kept out of the
checkpoint, and the script's one-line errors."""

import json
import sys

import pytest
import torch
from conftest import ROOT, load_day
from test_day12_real import CAPTIONS, save_tiny_clip, write_coco
from transformers import CLIPTextModel, CLIPTokenizer

from common.checkpoint import build_model, load_checkpoint
from common.config import cli
from common.loop import fit
from common.nets import CrossAttention, UNetConfig
from common.run import Run
from common.training import TrainConfig


def load_coco():
    """coco.py, with the bare names of the day-12 neighbours it imported (train, text, ...) taken back out. text.py
    is loaded again after it, so that the registry's TextToImage is day12_text's, a module that stays importable
    (checkpoints rebuild their config's types from it)."""
    before = set(sys.modules)
    module, _ = load_day(12, "coco", "text")
    for name in set(sys.modules) - before:
        if (ROOT / "day12" / "code" / f"{name}.py").is_file():
            sys.modules.pop(name)
    return module


coco = load_coco()


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny CLIP text model (width 32) and its BPE tokenizer, saved as save_pretrained saves them."""
    return save_tiny_clip(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def clip(clip_folder):
    return coco.FrozenCLIPText(clip_folder)


def smoke(tmp_path, *extra):
    out = tmp_path / "out"
    coco.main(["--preset", "smoke", "--out", str(out), "--device", "cpu", *extra])
    return out, json.loads((out / "metrics.json").read_text())


def first_captions():
    """Each image's first caption in increasing image id, as load_coco_captions gives them."""
    first = {}
    for image_id, caption in sorted(CAPTIONS, key=lambda pair: pair[0]):
        first.setdefault(image_id, caption.strip().lower())
    return list(first.values())


def check_outputs(out, metrics, n):
    assert metrics["dataset"] == f"coco-captions-train-{n}" and metrics["preset"] == "smoke"
    assert metrics["scores_skipped"] == "no attribute evaluator for COCO images; look at the grids"
    n_train = n * 9 // 10
    assert metrics["train_images"] == n_train and metrics["held_out_images"] == n - n_train
    assert metrics["sample_captions"] == first_captions()[n_train:]
    assert metrics["samples"] == {"w=1": "samples_w1.png", "w=3": "samples_w3.png"}
    for name in ("samples_w1.png", "samples_w3.png", "real.png", "loss.png", "progress/step_000006.png"):
        assert (out / name).stat().st_size > 1000, name
    assert metrics["params"] > 0 and metrics["text_encoder_params"] > 0


# --- the vocabulary -----------------------------------------------------------------------------------------------

def test_vocabulary_counts_lowercased_words_without_punctuation():
    captions = ["A cat, on a mat.", "the cat's hat", "a dog"]
    assert coco.words_of(captions[0]) == ["a", "cat", "on", "a", "mat"]
    assert coco.vocabulary(captions, 2) == ["a"]                      # "cat's" is not "cat"
    assert coco.vocabulary(captions, 1)[:1] == ["a"] and set(coco.vocabulary(captions, 1)) == {
        "a", "cat", "on", "mat", "the", "cat's", "hat", "dog"}


# --- (a) the word-encoder smoke run -----------------------------------------------------------------------------

def test_smoke_run_with_the_word_encoder(coco_root, tmp_path):
    out, metrics = smoke(tmp_path, f"--coco_root={coco_root}")
    check_outputs(out, metrics, 4)
    train_captions = first_captions()[:3]                             # the 4th is held out
    vocab = json.loads((out / "vocab.json").read_text())
    want = {w for c in train_captions for w in c.replace(",", " ").split()}
    assert set(vocab["words"]) == want and len(vocab["words"]) == len(want) == metrics["vocabulary_size"]
    assert not {"noisy", "photo"} & set(vocab["words"])               # the held-out caption's words stay out
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["model_class"] == "TextToImage" and ckpt["step"] == 6
    assert ckpt["model_config"]["text"]["vocab_size"] == len(want) + 3
    tokenizer = coco.Tokenizer(vocab["words"], vocab["length"])       # the samples' ids, rebuilt from the file
    assert tokenizer.decode(tokenizer.encode(["three bands red green"])[0]) == ["three", "bands", "red", "green"]
    build_model(ckpt)                                                 # the checkpoint rebuilds


# --- (b) the frozen-CLIP smoke run ------------------------------------------------------------------------------

def test_smoke_run_with_a_frozen_clip(coco_root, clip_folder, tmp_path):
    out, metrics = smoke(tmp_path, f"--coco_root={coco_root}", f"--clip={clip_folder}")
    check_outputs(out, metrics, 4)
    assert not (out / "vocab.json").exists() and metrics["clip_weights_in_checkpoint"] is False
    assert metrics["text_encoder"].startswith("CLIP") and "vocabulary_size" not in metrics
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["model_class"] == "ClipTextToImage" and ckpt["model_config"]["unet"]["context_dim"] == 32
    for weights in (ckpt["model"], ckpt["ema"]):
        assert weights and not any(k.startswith("clip.") for k in weights)
    rebuilt = build_model(ckpt)                                       # U-Net from the file, CLIP from the folder
    folder = CLIPTextModel.from_pretrained(str(clip_folder), local_files_only=True)
    for (name, p), q in zip(rebuilt.clip.model.named_parameters(), folder.parameters()):
        assert torch.equal(p, q), name


# --- (c) ClipTextToImage ---------------------------------------------------------------------------------------

TEXTS = ["a red cat sitting on the sofa", "two dog", "", "a picture of a small pink bird on the grass of the sofa"]


@pytest.mark.parametrize("pad", ["<|endoftext|>", "z</w>"])   # OpenAI CLIP's own padding, and another token
def test_clip_mask_matches_the_tokenizers_attention_mask(clip_folder, pad):
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_folder), local_files_only=True)
    tokenizer.pad_token = pad
    tokens = tokenizer(TEXTS, padding="max_length", max_length=10, truncation=True, return_tensors="pt")
    assert tokens["attention_mask"][-1].all()                     # the last caption is cut: no padding at all
    mask = coco.clip_mask(tokens["input_ids"], tokenizer.eos_token_id)
    assert torch.equal(mask, tokens["attention_mask"].bool())


def clip_model(clip, length=12, channels=8):
    unet = UNetConfig(in_channels=3, image_size=32, channels=channels, mults=(1, 2, 2, 4), n_res=1, attn_res=(8, 4),
                      context_dim=clip.dim)
    torch.manual_seed(0)
    return coco.ClipTextToImage(coco.ClipTextToImageConfig(str(clip.path), unet, length), clip)


def test_clip_context_is_frozen_clips_encoding(clip):
    model = clip_model(clip)
    context = model.context(model.tokenize(TEXTS))
    want, mask = clip.encode(TEXTS, max_length=12)                # the oracle: captions in, not ids
    assert torch.equal(context.mask, mask)
    torch.testing.assert_close(context.tokens, want, rtol=0, atol=0)


def test_clip_model_ignores_padding_but_not_the_caption(clip):
    model = clip_model(clip).eval()
    for m in model.modules():             # cross-attention starts as the identity: let the caption matter
        if isinstance(m, CrossAttention):
            torch.nn.init.normal_(m.out.weight, std=0.3)
    x, t = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.full((4,), 0.5)
    texts = TEXTS[:3] + ["two dog"]
    ids = model.tokenize(texts)                                               # (4, 12)
    longer = clip.tokenizer(texts, padding="max_length", max_length=20, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        short_out, long_out = model(x, t, ids), model(x, t, longer)
        other = model(x, t, model.tokenize(["a big blue bird"] * 4))
    torch.testing.assert_close(long_out, short_out, rtol=1e-4, atol=1e-5)   # 8 more pad tokens: no change
    assert (other - short_out).abs().amax(dim=(1, 2, 3)).min() > 1e-3          # another caption: a change


def test_training_moves_the_unet_and_leaves_clip_frozen(clip, tmp_path):
    model = clip_model(clip)
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    ids = model.tokenize(["a red cat", "two dog", "a pink bird", "the sofa"])
    path = coco.DiscreteVP.named("cosine", 100)

    def loss_fn(net, x0, y, generator):
        return coco.diffusion_loss(net, x0, path, "v", generator, y=y)[0].mean()

    cfg = TrainConfig(steps=2, batch_size=4, warmup=0, bf16=False, log_every=1, sample_every=0, ckpt_every=2)
    model, ema = fit(model, loss_fn, x, ids, cfg, Run(tmp_path, torch.device("cpu"), "test", "test", commit="x"))
    for k, v in model.clip.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    assert all(not p.requires_grad for p in model.clip.parameters())
    changed = [k for k, v in model.unet.state_dict().items() if not torch.equal(v, unet_before[k])]
    assert len(changed) > len(unet_before) // 2
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert set(saved) == {f"unet.{k}" for k in unet_before}          # the U-Net alone is in the checkpoint


# --- (d) the command line's one-line errors ---------------------------------------------------------------------

@pytest.mark.parametrize("case", ["no coco_root", "no clip folder"])
def test_mistakes_exit_with_one_line(coco_root, tmp_path, capsys, case):
    out = tmp_path / "out"
    argv = ["--preset", "smoke", "--out", str(out)]
    if case == "no clip folder":
        argv += [f"--coco_root={coco_root}", f"--clip={tmp_path / 'nowhere'}"]
    with pytest.raises(SystemExit) as code:
        cli(coco.main, argv)
    assert code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    expect = ("--coco_root=: point it at", "cocodataset.org") if case == "no coco_root" else (
        "no CLIP text encoder", "nowhere", "drop --clip")
    assert all(e in lines[0] for e in expect), lines[0]
    assert not out.exists()                                           # refused before anything was written
