"""SAM 3's concept segmentation: every instance of a noun phrase, or of exemplar boxes, in an image.

``Sam3Concepts`` wraps transformers' ``Sam3Model`` (the detector: SAM 3's image encoder, text encoder, exemplar
geometry encoder, DETR decoder with a presence token, mask head). One image is encoded once (:meth:`embed`); any
number of concepts are then asked of it in one batch (:meth:`find`). A concept is a text ("yellow school bus"),
exemplar boxes (positive or negative), or both.

Scores: an instance's score is SAM 3's: ``sigmoid(query logit) * sigmoid(presence logit)``, the presence factor
being the model's belief that the concept is in the image at all (the absent gate). Masks are the processor's
math: sigmoid, one bilinear resize to the image, ``> 0.5``.

Frames: the image is squashed to the model's square input (1008 px; no padding), normalised with mean = std =
0.5. Boxes in and out are ``XYXY`` pixels of the original image (the model reads normalised ``cx, cy, w, h``).
"""

import functools
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .precision import autocast
from ..errors import SamtextError

TEXT_TOKENS = 32  # SAM 3's text encoder reads 32 tokens (start and end markers included)
BOX_PAD = -10  # the label of a padding exemplar
MASK_THRESHOLD = 0.5  # on the sigmoid of the mask logits, as Sam3Processor.post_process_instance_segmentation
EXEMPLARS_ONLY_TEXT = "visual"  # the text SAM 3 reads with exemplar boxes and no noun phrase (as its processor)


@dataclass
class ConceptImage:
    """One image encoded by SAM 3: its vision features (batch 1) and ``(H, W)``."""

    vision: object
    original_size: Tuple[int, int]


@dataclass
class Exemplars:
    """Exemplar boxes for one concept: ``boxes`` ``(K, 4)`` XYXY pixels of the image, ``labels`` ``(K,)`` 1 for an
    example of the concept, 0 for a counter-example."""

    boxes: np.ndarray
    labels: np.ndarray


@dataclass
class Found:
    """SAM 3's answer for one concept in one image, one row per query (Q: 200 for the real model).

    Attributes:
        scores: ``(Q,)`` instance scores in [0, 1] (query probability times presence).
        presence: the probability that the concept is in the image at all.
        boxes: ``(Q, 4)`` XYXY pixels of the original image.
        mask_logits: ``(Q, h_m, w_m)`` float32 low-res mask logits over the square frame.
    """

    scores: np.ndarray
    presence: float
    boxes: np.ndarray
    mask_logits: torch.Tensor


def clip_tokenizer_offline():
    """The CLIP BPE tokenizer SAM 3 reads (``CLIPTokenizer``, vocabulary 49408), built from the vocabulary file
    open_clip ships (Meta's ``sam3`` ships the same file): for the tiny test model and for Meta's ``sam3.pt``, which
    holds no tokenizer; no download. The ids are open_clip's own."""
    import gzip

    import open_clip
    from transformers import CLIPTokenizer

    byte_chars = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = byte_chars[:], 0
    for b in range(256):
        if b not in byte_chars:
            byte_chars.append(b)
            chars.append(256 + extra)
            extra += 1
    unicode_of = [chr(c) for c in chars]
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = [tuple(m.split()) for m in gzip.open(path).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]]
    vocab = unicode_of + [v + "</w>" for v in unicode_of] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


class Sam3Concepts:
    """SAM 3's detector with samtext's coordinates (see the module docstring).

    Arguments:
        model: a transformers ``Sam3Model`` (real or tiny).
        tokenizer: its ``CLIPTokenizer``.
        device, precision, name: as for :class:`samtext.models.SamSegmenter` (bf16: the image encoder under
            bfloat16 autocast).
    """

    def __init__(self, model, tokenizer, device="cpu", precision="fp32", name="sam3"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.precision = precision
        self.name = name
        self.image_size = int(model.config.vision_config.backbone_config.image_size)

    def describe_encoder(self) -> str:
        return "transformers Sam3Model, %s" % ("bf16 autocast" if self.precision == "bf16" else "fp32")

    def encoder_input(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(1, 3, S, S)`` float32 (squashed, scaled to [-1, 1]: SAM 3's normalisation)."""
        from .hf_sam import SAM3, squashed_input

        return squashed_input(image, self.image_size, SAM3.mean, SAM3.std, self.device)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> ConceptImage:
        """Encodes an image once; :meth:`find` then asks it any number of concepts."""
        with autocast(self.device, self.precision):
            vision = self.model.get_vision_features(pixel_values=self.encoder_input(image))
        return ConceptImage(_map_vision(vision, lambda t: t.float()), tuple(image.shape[:2]))

    def _tokens(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _boxes(self, exemplars: Sequence[Optional[Exemplars]], size) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(B, K, 4)`` normalised ``cx, cy, w, h`` and ``(B, K)`` labels, padded with :data:`BOX_PAD`."""
        h, w = size
        k = max(len(e.boxes) if e is not None else 0 for e in exemplars)
        boxes = torch.full((len(exemplars), k, 4), float(BOX_PAD))
        labels = torch.full((len(exemplars), k), BOX_PAD, dtype=torch.long)
        for i, e in enumerate(exemplars):
            if e is None or not len(e.boxes):
                continue
            b = torch.as_tensor(np.asarray(e.boxes, np.float32)).reshape(-1, 4) / torch.tensor([w, h, w, h])
            boxes[i, : len(b)] = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                                              b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1)
            labels[i, : len(b)] = torch.as_tensor(np.asarray(e.labels)).long()
        return boxes.to(self.device), labels.to(self.device)

    @torch.no_grad()
    def find(self, image: ConceptImage, texts: Sequence[Optional[str]],
             exemplars: Optional[Sequence[Optional[Exemplars]]] = None) -> List[Found]:
        """One :class:`Found` per concept: ``texts[i]`` (None: exemplars only) with ``exemplars[i]`` (optional),
        all in one batch against ``image``'s features."""
        n = len(texts)
        if exemplars is not None and len(exemplars) != n:
            raise SamtextError("find: %d texts and %d exemplar sets" % (n, len(exemplars)))
        ids, mask = self._tokens([t if t else EXEMPLARS_ONLY_TEXT for t in texts])
        kwargs = dict(vision_embeds=_map_vision(image.vision, lambda t: t.expand(n, *t.shape[1:])), input_ids=ids,
                      attention_mask=mask)
        if exemplars is not None and any(e is not None and len(e.boxes) for e in exemplars):
            kwargs["input_boxes"], kwargs["input_boxes_labels"] = self._boxes(exemplars, image.original_size)
        out = self.model(**kwargs)
        presence = out.presence_logits.float().sigmoid()  # (n, 1)
        scores = out.pred_logits.float().sigmoid() * presence
        h, w = image.original_size
        boxes = out.pred_boxes.float() * torch.tensor([w, h, w, h], device=self.device)
        return [Found(scores[i].cpu().numpy(), float(presence[i, 0]), boxes[i].cpu().numpy(),
                      out.pred_masks[i].float()) for i in range(n)]

    @torch.no_grad()
    def probabilities(self, mask_logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """``(K, h_m, w_m)`` low-res logits -> ``(K, h, w)`` mask probabilities over the whole square frame resized
        to ``size`` (sigmoid, then one bilinear resize: the processor's order)."""
        return F.interpolate(mask_logits[:, None].float().sigmoid(), size=tuple(size), mode="bilinear",
                             align_corners=False)[:, 0]

    @torch.no_grad()
    def masks(self, image: ConceptImage, mask_logits: torch.Tensor) -> np.ndarray:
        """``(K, h_m, w_m)`` low-res logits -> ``(K, H, W)`` bool masks at the image's size (one at a time)."""
        out = np.zeros((len(mask_logits),) + tuple(image.original_size), bool)
        for i in range(len(mask_logits)):
            out[i] = (self.probabilities(mask_logits[i:i + 1], image.original_size)[0] > MASK_THRESHOLD).cpu().numpy()
        return out

    @property
    def window_pixels(self) -> int:
        """Pixels of the image encoder's attention window side (336 at 1008 px): a canvas seam on a multiple keeps
        every windowed attention inside one of its images."""
        vit = self.model.config.vision_config.backbone_config
        return int(vit.window_size * vit.patch_size)


def _map_vision(vision, fn):
    """``vision`` (a ``Sam3VisionEncoderOutput``) with ``fn`` applied to each of its tensors."""
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    return Sam3VisionEncoderOutput(
        last_hidden_state=fn(vision.last_hidden_state),
        fpn_hidden_states=tuple(fn(t) for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(fn(t) for t in vision.fpn_position_encoding))


def build_tiny_sam3_concepts(seed: int = 0):
    """transformers' ``Sam3Model`` with every part of the real one at width 32 (2-layer ViT at 224 px, patch 14; a
    1-layer CLIP text encoder with the real vocabulary; 1-layer geometry, DETR encoder and decoder with 8 queries),
    randomly initialised (and perturbed, see :func:`samtext.models.tiny._perturbed`), and its tokenizer."""
    from transformers import (Sam3Config, Sam3DETRDecoderConfig, Sam3DETREncoderConfig, Sam3GeometryEncoderConfig,
                              Sam3MaskDecoderConfig, Sam3Model, Sam3VisionConfig, Sam3ViTConfig)

    from .tiny import _perturbed

    size, patch, hidden, heads = 224, 14, 32, 4
    grid = size // patch
    vit = Sam3ViTConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                        num_attention_heads=heads, image_size=size, patch_size=patch, window_size=8,
                        global_attn_indexes=[1], pretrain_image_size=8 * patch)
    vision = Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=hidden, scale_factors=[4.0, 2.0, 1.0, 0.5],
                              backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2])
    text = dict(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, projection_dim=hidden,
                num_hidden_layers=1, num_attention_heads=heads, max_position_embeddings=TEXT_TOKENS, hidden_act="gelu")
    small = dict(hidden_size=hidden, num_attention_heads=heads, intermediate_size=2 * hidden)
    config = Sam3Config(
        vision_config=vision, text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(num_layers=1, **small),
        detr_encoder_config=Sam3DETREncoderConfig(num_layers=1, **small),
        detr_decoder_config=Sam3DETRDecoderConfig(num_layers=1, num_queries=8, **small),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=hidden, num_attention_heads=heads,
                                                  num_upsampling_stages=2))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Sam3Model(config)
    return _perturbed(model, seed, scale=0.1), clip_tokenizer_offline()


def load_sam3_concepts(name: str, checkpoint: Optional[str] = None, device: str = "auto",
                       precision: str = "auto") -> Sam3Concepts:
    """SAM 3's detector (once per process) for ``sam_model`` ``name`` ("sam3", or "tiny-sam3" for tests), weights
    found as :func:`samtext.models.weights.resolve_hf_sam` says; ``device`` and ``precision`` as for
    :func:`samtext.models.load_sam` ("auto" resolved here)."""
    from .precision import resolve_device, resolve_precision

    device = resolve_device(device)
    return _load_sam3_concepts(name, checkpoint, device, resolve_precision(precision, device))


@functools.lru_cache(maxsize=2)
def _load_sam3_concepts(name: str, checkpoint: Optional[str], device: str, precision: str) -> Sam3Concepts:
    from .registry import sam_spec

    spec = sam_spec(name)
    if spec.family != "sam3":
        raise SamtextError("SAM 3's concept prompts need sam_model='sam3' (sam_model=%r cannot read a noun phrase)"
                           % (name,))
    from .weights import hf_sam_weights

    where = hf_sam_weights(spec, checkpoint)
    if where is None:
        model, tokenizer = build_tiny_sam3_concepts()
    elif os.path.isfile(where):  # Meta's sam3.pt: weights only, the CLIP vocabulary comes from open_clip
        from .meta_sam3 import load_meta_sam3

        model, tokenizer = load_meta_sam3(where), clip_tokenizer_offline()
    else:
        from transformers import CLIPTokenizer, Sam3Model

        from .hf_sam import quiet_loading

        with quiet_loading():
            model = Sam3Model.from_pretrained(where, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(where, local_files_only=True)
    return Sam3Concepts(model, tokenizer, device=device, precision=precision, name=name)
