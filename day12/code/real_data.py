"""Day 12's real-data path: MS-COCO captions and a frozen, pretrained CLIP text encoder.

The default run is offline and needs neither: it trains its own small text encoder on the procedural captioned
dataset. This module is what a run uses when the user has the real files on disk (`pip install -e '.[real]'`):

    images, captions = load_coco_captions("data/coco", "train", image_size=32, limit=5000)
    clip = FrozenCLIPText("models/clip-vit-base-patch32")         # a folder saved with save_pretrained
    context, mask = clip.encode(captions[:64])                    # (64, 77, 512) float32, (64, 77) bool

`load_coco_captions` reads COCO 2017 as it ships, through torchvision's `CocoCaptions` (which needs pycocotools):
ROOT/{split}2017/*.jpg and ROOT/annotations/captions_{split}2017.json. Each image (about five captions each) gives
one pair: the image resized on its shorter side and centre-cropped, in [-1, 1] as every image inside our models,
and its first caption in the annotation file, stripped and lower-cased.

`FrozenCLIPText` is the LDM recipe for text-to-image (Rombach et al. 2022, Sec. 4.3.2 and Appendix; Stable
Diffusion's `FrozenCLIPEmbedder`): the caption's per-token states from a pretrained CLIP text transformer, kept
frozen, are the keys and values of the U-Net's cross-attention. Only a local folder is read (weights cannot be
downloaded here), so it never touches the network.

Mask convention: `mask` is (B, L) bool with True = a real token (<|startoftext|>, the words, <|endoftext|>) and
False = padding. Captions are padded to exactly `max_length` (padding="max_length", truncation=True), so L does not
depend on the batch and a whole dataset's context can be encoded once and indexed. True = "may be attended to" is
the convention of F.scaled_dot_product_attention's boolean attn_mask; nn.MultiheadAttention's key_padding_mask is
the opposite (True = ignore): pass it `~mask`.

References:
    Lin et al. (2014), "Microsoft COCO: Common Objects in Context", arXiv:1405.0312.
    Chen et al. (2015), "Microsoft COCO Captions: Data Collection and Evaluation Server", arXiv:1504.00325.
    Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision" (CLIP),
        arXiv:2103.00020.
    Rombach, Blattmann, Lorenz, Esser & Ommer (2022), "High-Resolution Image Synthesis with Latent Diffusion
        Models", CVPR, arXiv:2112.10752.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn

from common.config import UserError

SPLITS = ("train", "val")  # COCO 2017's test split has no captions
CLIP_HINT = "openai/clip-vit-base-patch32"


# --- MS-COCO captions ----------------------------------------------------------------------------------

def load_coco_captions(root, split: str = "train", image_size: int = 32,
                       limit: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images (N, 3, image_size, image_size) float32 in [-1, 1] and one caption per image (its first, stripped
    and lower-cased) from COCO 2017 under `root`. Images are in increasing image id (CocoCaptions' order), those
    without a caption left out; `limit` keeps the first `limit` of them."""
    if image_size < 1 or (limit is not None and limit < 1):
        bad = f"image_size={image_size}" if image_size < 1 else f"limit={limit}"
        raise UserError(f"{bad}: choose a positive number (limit=None keeps every image)")
    root = Path(root).expanduser()
    ann_file, image_dir = _coco_paths(root, split)
    ds = _coco_dataset(image_dir, ann_file, image_size)
    ds.ids = [i for i in ds.ids if ds.coco.imgToAnns.get(i)][:limit]  # captioned images only
    if not ds.ids:
        raise UserError(f"{ann_file}: lists no images with captions; use captions_{split}2017.json from COCO's "
                        "annotations_trainval2017.zip")
    images, captions = [], []
    for index, image_id in enumerate(ds.ids):
        image, texts = _read(ds, index, image_id, image_dir)
        images.append(image)                                      # (3, S, S) uint8
        captions.append(texts[0].strip().lower())
    return torch.stack(images).float() / 127.5 - 1.0, captions    # x = uint8 / 127.5 - 1, as common.data


def _coco_paths(root: Path, split: str) -> tuple[Path, Path]:
    """The annotation file and image folder of `split` under `root`, refused in one line if absent."""
    if split not in SPLITS:
        raise UserError(f"unknown COCO split '{split}'; choose one of: {', '.join(SPLITS)}")
    site = "https://cocodataset.org/#download"
    if not root.is_dir():
        raise UserError(f"no MS-COCO folder at {root}: unzip COCO's {split}2017.zip and annotations_trainval2017.zip "
                        f"({site}) there, or point to the folder that holds them")
    ann_file = root / "annotations" / f"captions_{split}2017.json"
    if not ann_file.is_file():
        raise UserError(f"no caption file {ann_file}: unzip COCO's annotations_trainval2017.zip ({site}) into {root}")
    image_dir = root / f"{split}2017"
    if not image_dir.is_dir():
        raise UserError(f"no image folder {image_dir}: unzip COCO's {split}2017.zip ({site}) into {root}")
    return ann_file, image_dir


def _coco_dataset(image_dir: Path, ann_file: Path, image_size: int):
    """torchvision's CocoCaptions over the files, with pycocotools' progress lines silenced."""
    try:
        import pycocotools.coco  # noqa: F401  (CocoCaptions imports it only once built: ask for it here)
    except ImportError:
        raise UserError("MS-COCO captions need pycocotools: pip install pycocotools") from None
    from torchvision import transforms
    from torchvision.datasets import CocoCaptions

    resize = transforms.Compose([transforms.Resize(image_size),  # shorter side -> image_size, aspect kept
                                 transforms.CenterCrop(image_size), transforms.PILToTensor()])
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "loading annotations into memory... Done"
            return CocoCaptions(str(image_dir), str(ann_file), transform=resize)
    except (ValueError, KeyError, TypeError, AssertionError) as err:  # bad JSON, or JSON of another shape
        why = " ".join(str(err).split())[:80] or type(err).__name__
        raise UserError(f"{ann_file}: not a COCO captions file ({why}); use the one from COCO's "
                        "annotations_trainval2017.zip") from None


def _read(ds, index: int, image_id: int, image_dir: Path) -> tuple[torch.Tensor, list[str]]:
    """Image `index` of the dataset and its captions; a missing or unreadable file is a one-line error."""
    try:
        return ds[index]
    except OSError as err:  # FileNotFoundError, PIL.UnidentifiedImageError
        name = ds.coco.imgs[image_id].get("file_name", "?")
        why = "missing" if isinstance(err, FileNotFoundError) else "unreadable"
        raise UserError(f"{image_dir / name}: {why} (image id {image_id}); restore the {image_dir.name} folder "
                        f"from {image_dir.name}.zip") from None


# --- the frozen CLIP text encoder ---------------------------------------------------------------------------

def _no_clip(path: Path, why: str) -> UserError:
    """The one-line error for a folder that holds no usable CLIP text encoder, saying how to make one."""
    return UserError(f"no CLIP text encoder at {path} ({why}; weights cannot be downloaded here): save one with "
                     f"CLIPTextModel.from_pretrained('{CLIP_HINT}').save_pretrained('{path}') (and its tokenizer) "
                     "on a machine that is online, or drop --clip")


class FrozenCLIPText(nn.Module):
    """A pretrained CLIP text transformer read from a local folder, frozen: `encode` maps captions to the
    context (B, L, D) and padding mask (B, L) that cross-attention consumes; `dim` is D.

    It never changes: a network that holds one (coco.py's ClipTextToImage) keeps its weights out of checkpoints,
    and a dataset's captions could be encoded once."""

    def __init__(self, path):
        super().__init__()
        path = Path(path).expanduser()
        tokenizer_cls, model_cls = _transformers()
        _check_clip_folder(path)
        self.tokenizer = tokenizer_cls.from_pretrained(str(path), local_files_only=True)
        self.model = _text_model(model_cls, path)
        if len(self.tokenizer) > self.model.config.vocab_size:
            raise _no_clip(path, f"its tokenizer has {len(self.tokenizer)} tokens, the model "
                                 f"{self.model.config.vocab_size}: they are not a pair")
        self.path, self.dim = path, self.model.config.hidden_size
        self.positions = self.model.config.max_position_embeddings  # the longest caption it can read
        self.model.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenCLIPText:
        return super().train(False)  # frozen: a parent's .train() must not switch dropout on here

    @torch.no_grad()
    def encode(self, captions: list[str], max_length: int = 77) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's last hidden states (B, max_length, D) float32 and the mask (B, max_length) bool, True at real
        tokens; captions are truncated to max_length tokens (<|endoftext|> kept), on the encoder's device."""
        if not 2 <= max_length <= self.positions:
            raise UserError(f"max_length={max_length}: the CLIP text encoder at {self.path} reads 2 to "
                            f"{self.positions} tokens; choose a length in that range")
        tokens = self.tokenizer(list(captions), padding="max_length", max_length=max_length, truncation=True,
                                return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)  # (B, L) each
        # CLIP's attention is causal, so a real token's state never depends on the padding after it
        context = self.model(input_ids=ids, attention_mask=mask).last_hidden_state      # (B, L, D)
        return context.float(), mask.bool()


def _transformers():
    """CLIPTokenizer and CLIPTextModel, or a one-line error naming the package."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise UserError("the CLIP text encoder needs transformers: pip install transformers, or drop --clip") from None
    return CLIPTokenizer, CLIPTextModel


def _check_clip_folder(path: Path) -> None:
    """Refuse a folder that from_pretrained would take for a hub name, or read without error but wrongly: with no
    tokenizer files CLIPTokenizer quietly builds a two-token vocabulary."""
    if not path.is_dir():
        raise _no_clip(path, "no such folder")
    if not (path / "config.json").is_file():
        raise _no_clip(path, "no config.json")
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file() and (path / "merges.txt").is_file()):
        raise _no_clip(path, "no tokenizer files: tokenizer.json, or vocab.json and merges.txt")


def _text_model(model_cls, path: Path) -> nn.Module:
    """The CLIPTextModel in `path` in float32, eval mode; refused if it has no weights or not all of them."""
    try:
        model, info = model_cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32,
                                                output_loading_info=True)
    except (OSError, ValueError) as err:
        why = " ".join(str(err).split())
        raise _no_clip(path, why if len(why) <= 100 else why[:97] + "...") from None
    if info["missing_keys"]:  # transformers would fill them with random numbers: not a pretrained encoder
        raise _no_clip(path, f"its weights lack {len(info['missing_keys'])} of the text model's tensors, "
                             f"e.g. {sorted(info['missing_keys'])[0]}")
    return model.eval()
