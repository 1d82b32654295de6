"""Day 12's real-data path: MS-COCO captions read from a tiny COCO-format folder written here (values, crops, and
caption-to-image pairing by image id), and the frozen CLIP text encoder checked against a direct CLIPTextModel call
on a tiny model and BPE vocabulary saved here. Neither needs the network or the real files."""

import json
import socket
import string
import sys

import pytest
import torch
from conftest import load_day
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from common.config import UserError, cli

real_data = load_day(12, "real_data")

PINK = (200, 40, 120)
# image id -> (file name, size (W, H)); id 9 has no caption, so it is left out
IMAGES = {12: ("000000000012.jpg", (64, 48)), 3: ("000000000003.jpg", (24, 36)), 7: ("000000000007.png", (40, 24)),
          5: ("000000000005.png", (96, 32)), 9: ("000000000009.png", (20, 20))}
# written in this order: each image's first caption is not the first in the file, nor in the order of ids
CAPTIONS = [(5, "Three Bands, Red Green Blue  "), (12, " A noisy PHOTO."), (7, "A pink rectangle"),
            (12, "a second caption of 12"), (3, "  Gradient Of Grey\n"), (7, "another pink one"),
            (5, "bands again"), (3, "grey again")]


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


# --- MS-COCO captions ---------------------------------------------------------------------------------------------

def write_coco(root, split="train"):
    """A COCO 2017 layout: ROOT/{split}2017/ images of different sizes, ROOT/annotations/captions_{split}2017.json."""
    (root / f"{split}2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    g = torch.Generator().manual_seed(0)
    for image_id, (name, (w, h)) in IMAGES.items():
        if image_id == 7:                                     # a solid colour
            pixels = torch.tensor(PINK, dtype=torch.uint8).expand(h, w, 3)
        elif image_id == 5:                                   # thirds: red | green | blue, left to right
            pixels = torch.zeros(h, w, 3, dtype=torch.uint8)
            for k in range(3):
                pixels[:, k * w // 3:(k + 1) * w // 3, k] = 255
        else:
            pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(pixels.contiguous().numpy()).save(root / f"{split}2017" / name)
    data = {"info": {"description": "test", "version": "1.0", "year": 2017}, "licenses": [],
            "images": [{"id": i, "file_name": name, "width": w, "height": h} for i, (name, (w, h)) in IMAGES.items()],
            "annotations": [{"id": 100 + k, "image_id": i, "caption": c} for k, (i, c) in enumerate(CAPTIONS)]}
    (root / "annotations" / f"captions_{split}2017.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"))


def test_coco_pairs_each_image_with_its_first_caption(coco):
    x, captions = real_data.load_coco_captions(coco, "train", image_size=16)
    ids = sorted({i for i, _ in CAPTIONS})                    # CocoCaptions' order: increasing image id
    first = {}
    for image_id, caption in CAPTIONS:
        first.setdefault(image_id, caption.strip().lower())
    assert x.shape == (len(ids), 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert captions == [first[i] for i in ids] == ["gradient of grey", "three bands, red green blue",
                                                   "a pink rectangle", "a noisy photo."]
    pink = torch.tensor(PINK, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1
    torch.testing.assert_close(x[ids.index(7)], pink.expand(3, 16, 16), rtol=0, atol=1e-6)   # the image of id 7


def test_coco_resizes_the_shorter_side_then_crops_the_centre(coco):
    x, _ = real_data.load_coco_captions(coco, image_size=16)
    bands = x[1]                        # id 5, 96x32 in thirds: 48x16 after the resize, the green third after the crop
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1)
    torch.testing.assert_close(bands[:, :, 2:-2], green.expand(3, 16, 12), rtol=0, atol=1e-6)   # away from the seams
    assert (bands[1] > 0).all()                                # squashing the whole width would show red and blue


def test_coco_limit_keeps_the_first_images(coco):
    x_all, captions_all = real_data.load_coco_captions(coco, image_size=8)
    x, captions = real_data.load_coco_captions(coco, image_size=8, limit=2)
    assert x.shape == (2, 3, 8, 8) and captions == captions_all[:2]
    assert torch.equal(x, x_all[:2])
    assert len(real_data.load_coco_captions(coco, image_size=8, limit=100)[1]) == 4


@pytest.mark.parametrize("layout, split, expect", [
    ("no root", "train", "no MS-COCO folder"),
    ("no annotations", "train", "captions_train2017.json"),
    ("no images", "train", "train2017.zip"),
    ("no captions", "train", "lists no images with captions"),
    ("a listed image is gone", "train", "000000000003.jpg: missing"),
    ("not json", "train", "not a COCO captions file"),
    ("val asked, train present", "val", "no caption file"),
    ("test split", "test", "choose one of: train, val"),
])
def test_coco_mistakes_are_one_line_errors(tmp_path, layout, split, expect):
    root = tmp_path / "coco"
    if layout != "no root":
        write_coco(root)
    ann = root / "annotations" / "captions_train2017.json"
    if layout == "no annotations":
        ann.unlink()
    elif layout == "no images":
        for f in (root / "train2017").iterdir():
            f.unlink()
        (root / "train2017").rmdir()
    elif layout == "no captions":
        ann.write_text(json.dumps({**json.loads(ann.read_text()), "annotations": []}))
    elif layout == "a listed image is gone":
        (root / "train2017" / "000000000003.jpg").unlink()
    elif layout == "not json":
        ann.write_text("{not json")
    with pytest.raises(UserError, match=expect) as err:
        real_data.load_coco_captions(root, split)
    assert one_line(err)


def test_coco_missing_folder_exits_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as code:
        cli(lambda argv: real_data.load_coco_captions(tmp_path / "nowhere"), [])
    assert code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "cocodataset.org" in lines[0]


def test_coco_without_pycocotools_names_the_package(coco, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)      # import pycocotools now fails
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(UserError, match="pip install pycocotools") as err:
        real_data.load_coco_captions(coco)
    assert one_line(err)


def test_coco_refuses_a_non_positive_limit(coco):
    with pytest.raises(UserError, match="limit=0"):
        real_data.load_coco_captions(coco, limit=0)


# --- the frozen CLIP text encoder -----------------------------------------------------------------------------------

WORDS = ["a", "on", "of", "the", "red", "blue", "pink", "cat", "dog", "bird", "sofa", "small", "big", "grass",
         "sitting", "picture", "photo", "two"]


def tiny_bpe() -> tuple[dict[str, int], list[str]]:
    """A CLIP-style BPE vocabulary: special tokens, letters (inner and word-final, '</w>'), and merges that build
    each of WORDS into one token."""
    letters = string.ascii_lowercase
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    merges = []
    for word in WORDS:
        symbol = word[0]
        for ch in word[1:]:
            pair = (symbol, ch + "</w>" if len(symbol) + 1 == len(word) else ch)
            if " ".join(pair) not in merges:
                merges.append(" ".join(pair))
                tokens.append("".join(pair))
            symbol += ch
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}, merges


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory)


def save_tiny_clip(tmp_path_factory):
    """A folder holding a tiny CLIP text model and its tokenizer (save_pretrained), and the model and vocabulary."""
    vocab, merges = tiny_bpe()
    bpe = tmp_path_factory.mktemp("bpe")
    (bpe / "vocab.json").write_text(json.dumps(vocab))
    (bpe / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
    torch.manual_seed(0)
    model = CLIPTextModel(config).eval()
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    CLIPTokenizer.from_pretrained(str(bpe), local_files_only=True).save_pretrained(folder)
    return folder, model, vocab


def by_hand(caption: str, vocab: dict[str, int]) -> list[int]:
    """<|startoftext|>, one token per word of WORDS, <|endoftext|>: the ids the tokenizer should give."""
    return [vocab["<|startoftext|>"], *(vocab[w + "</w>"] for w in caption.split()), vocab["<|endoftext|>"]]


CAPTIONS_TEXT = ["a red cat sitting on the sofa", "two dog", "", "a picture of a small pink bird"]


def test_clip_context_and_mask(clip):
    folder, _, vocab = clip
    encoder = real_data.FrozenCLIPText(folder)
    context, mask = encoder.encode(CAPTIONS_TEXT, max_length=12)
    assert encoder.dim == 32
    assert context.shape == (4, 12, 32) and context.dtype == torch.float32 and torch.isfinite(context).all()
    assert mask.dtype == torch.bool and mask.shape == (4, 12)
    lengths = [len(by_hand(c, vocab)) for c in CAPTIONS_TEXT]              # 9, 4, 2, 9 real tokens
    assert mask.sum(1).tolist() == lengths and all(mask[i, :n].all() for i, n in enumerate(lengths))
    tokens = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)(
        CAPTIONS_TEXT, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    assert torch.equal(mask, tokens["attention_mask"].bool())


def test_clip_real_tokens_match_a_direct_call_of_the_model(clip):
    folder, model, vocab = clip
    context, mask = real_data.FrozenCLIPText(folder).encode(CAPTIONS_TEXT, max_length=12)
    for i, caption in enumerate(CAPTIONS_TEXT):  # the in-memory model, on hand-made ids, one unpadded caption each
        ids = torch.tensor([by_hand(caption, vocab)])
        with torch.no_grad():
            want = model(input_ids=ids).last_hidden_state[0]                   # (n, D)
        torch.testing.assert_close(context[i, mask[i]], want, rtol=1e-5, atol=1e-5)


def test_clip_is_frozen_and_deterministic(clip):
    encoder = real_data.FrozenCLIPText(clip[0])
    assert not any(p.requires_grad for p in encoder.parameters()) and sum(1 for _ in encoder.parameters()) > 0
    encoder.train()                                                       # a parent's .train() leaves it in eval
    assert not encoder.training and not any(m.training for m in encoder.modules())
    first, second = encoder.encode(CAPTIONS_TEXT), encoder.encode(list(CAPTIONS_TEXT))
    assert first[0].shape == (4, 77, 32)                                  # the default length: CLIP's 77
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not first[0].requires_grad


def test_clip_truncates_and_keeps_the_end_token(clip):
    folder, _, vocab = clip
    encoder = real_data.FrozenCLIPText(folder)
    _, mask = encoder.encode(["a red cat sitting on the sofa"], max_length=5)
    assert mask.all()
    tokens = encoder.tokenizer(["a red cat sitting on the sofa"], max_length=5, truncation=True)["input_ids"][0]
    assert tokens == by_hand("a red cat", vocab)                          # ..., <|endoftext|> last
    with pytest.raises(UserError, match="max_length=78"):
        encoder.encode(["a cat"], max_length=78)


def test_clip_reads_only_the_folder(clip, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("FrozenCLIPText tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert real_data.FrozenCLIPText(clip[0]).encode(["a cat"])[0].shape == (1, 77, 32)


@pytest.mark.parametrize("case, expect", [
    ("no folder", "no such folder"),
    ("no weights", "no file named model.safetensors"),
    ("weights lack a tensor", "lack 1 of the text model's tensors"),
    ("no tokenizer", "no tokenizer files"),
    ("no transformers", "pip install transformers"),
])
def test_clip_missing_pieces_are_one_line_errors(clip, tmp_path, monkeypatch, case, expect):
    folder = tmp_path / "clip"
    if case != "no folder":
        folder.mkdir()
        for f in clip[0].iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
    if case == "no weights":
        (folder / "model.safetensors").unlink()
    elif case == "weights lack a tensor":
        weights = load_file(folder / "model.safetensors")
        weights.pop(next(k for k in weights if "final_layer_norm.weight" in k))
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    elif case == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    elif case == "no transformers":
        monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=expect) as err:
        real_data.FrozenCLIPText(folder)
    text = one_line(err)
    if case != "no transformers":
        assert str(folder) in text and "save_pretrained" in text and "drop --clip" in text
