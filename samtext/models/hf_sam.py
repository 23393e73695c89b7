"""SAM 2.1 and SAM 3 (point and box prompts) from Hugging Face ``transformers``, behind :class:`SamSegmenter`'s protocol.

Every action talks to a segmenter through the same calls (``embed`` once per image, ``predict`` many prompts against
it, ``upscale``, the grid helpers); this module gives SAM 2.1 (``Sam2Model``) and SAM 3's promptable tracker
(``Sam3TrackerModel``) those calls, so they run every action SAM 1 runs.

Frames, as the models were trained (and as ``Sam2Processor`` does): the image is resized to the model's square input
(1024 px for SAM 2.1, 1008 px for SAM 3) *without* keeping its aspect ratio and without padding, so
``ImageEmbedding.input_size`` is the whole square and every feature cell covers the image. Prompts go to the model
in pixels of that square (``x * S / W``, ``y * S / H``); low-res mask logits (256 x 256, 288 x 288) cover the whole
square and come back to the original ``(H, W)`` by one bilinear resize (``post_process_masks``'s own math).

Coordinates in and out are samtext's everywhere: points ``(x, y)`` and boxes ``XYXY`` in pixels of the original
image, masks ``(H, W)``.
"""

import contextlib
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .precision import autocast
from .sam import ImageEmbedding, Prediction, SamSegmenter, _is_rgb
from ..errors import SamtextError

PROMPTS_PER_CALL = 16  # the decoder repeats the image's features per prompt: ~16 MB each at full size


@dataclass(frozen=True)
class HfFamily:
    """What differs between the transformers SAMs: the model class, its input side and its normalisation."""

    kind: str  # "sam2" or "sam3"
    model_class: str
    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


SAM2 = HfFamily("sam2", "Sam2Model", 1024, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SAM3 = HfFamily("sam3", "Sam3TrackerModel", 1008, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
FAMILIES = {f.kind: f for f in (SAM2, SAM3)}


def squashed_input(image: np.ndarray, side: int, mean, std, device) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 RGB image -> ``(1, 3, side, side)`` float32 input of a transformers SAM: resized on the
    uint8 image to the square without keeping its aspect (as ``Sam2ImageProcessor`` and ``Sam3ImageProcessor``),
    scaled to [0, 1], normalised with ``mean`` and ``std`` (per channel)."""
    from torchvision.transforms.v2 import functional as TF

    if not _is_rgb(image):
        raise SamtextError("expected an (H, W, 3) uint8 RGB image, got %s %s"
                           % (getattr(image, "shape", type(image).__name__), getattr(image, "dtype", "")))
    x = torch.as_tensor(np.ascontiguousarray(image), device=device).permute(2, 0, 1)
    x = TF.resize(x, [side, side], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    m = torch.tensor(mean, device=device)[:, None, None]
    sd = torch.tensor(std, device=device)[:, None, None]
    return ((x.float() / 255.0 - m) / sd)[None].contiguous()  # channels first in memory


def model_class(family: HfFamily):
    import transformers

    return getattr(transformers, family.model_class)


@contextlib.contextmanager
def quiet_loading():
    """Silences transformers' load-time notes that say nothing to a samtext user: SAM 2.1's repositories hold
    video models (their memory weights go unused here), and loading on one device lists every layer as "not
    sharded"."""
    import logging

    quiet = [logging.getLogger(n) for n in ("transformers.modeling_utils", "transformers.distributed")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def load_hf_sam(spec, checkpoint: Optional[str], device: str, precision: str) -> "HfSamSegmenter":
    """The segmenter of registry entry ``spec`` (family "sam2" or "sam3"): a tiny preset built at random (or from
    ``checkpoint``, a folder), a real one from its weights (:func:`samtext.models.weights.resolve_hf_sam`: a folder
    of transformers weights, or Meta's own ``.pt`` file, converted)."""
    from .weights import hf_sam_weights

    family = FAMILIES[spec.family]
    where = hf_sam_weights(spec, checkpoint)
    if where is None:
        model = spec.build()
    elif os.path.isfile(where):  # Meta's own .pt (FiftyOne's zoo keeps these)
        from .meta_checkpoints import load_meta_sam2
        from .meta_sam3 import load_meta_sam3_tracker

        model = {"sam2": load_meta_sam2, "sam3": load_meta_sam3_tracker}[spec.family](where)
    else:
        with quiet_loading():
            model = model_class(family).from_pretrained(where, local_files_only=True)
    return HfSamSegmenter(model, family, device=device, precision=precision, name=spec.name)


def drop_unread_neck_levels(model):
    """A ``Sam3TrackerModel`` whose neck makes only the levels its heads read (``backbone_feature_sizes``: scales 4,
    2 and 1), as Meta's SAM 3, which computes a fourth (0.5) level and drops it before the heads.

    transformers adds the tracker's "no memory" embedding to the last level the neck makes and then keeps the
    first ``len(backbone_feature_sizes)`` levels: with ``Sam3TrackerConfig()``'s four scale factors the embedding
    lands on the level thrown away and the masks differ from Meta's. The model's layers are cut, its config is
    left as it is (it may be the caller's). Other models (``Sam3Model`` reads the four levels its own way) are
    returned as they are."""
    if type(model).__name__ != "Sam3TrackerModel":
        return model
    neck = model.vision_encoder.neck
    keep = len(model.backbone_feature_sizes)
    if len(neck.fpn_layers) > keep:
        neck.fpn_layers = neck.fpn_layers[:keep]
    return model


class HfSamSegmenter(SamSegmenter):
    """A transformers ``Sam2Model`` or ``Sam3TrackerModel`` with :class:`SamSegmenter`'s interface.

    Arguments:
        model: the model (real or tiny), in eval mode after this.
        family: :data:`SAM2` or :data:`SAM3`.
        device, precision, name: as for :class:`SamSegmenter` (bf16: the image encoder under bfloat16 autocast;
            the decoder stays fp32).
        image_size: the model's square input side (default: its config's).
        encoder_batch: images per encoder call when prepared ahead (default 8 on CUDA, 1 on a CPU).
    """

    def __init__(self, model, family: HfFamily, device="cpu", precision="fp32", name="sam2",
                 image_size: Optional[int] = None, encoder_batch: Optional[int] = None):
        self.model = drop_unread_neck_levels(model).to(device).eval()
        self.family = family
        self.device = torch.device(device)
        self.precision = precision
        self.name = name
        self.image_size = int(image_size or model.config.prompt_encoder_config.image_size)
        self.mask_threshold = 0.0
        self.fast = None
        self.decoder = None
        prompt_encoder = model.prompt_encoder
        self._mask_size = tuple(int(v) for v in prompt_encoder.mask_input_size)
        self._grid = int(prompt_encoder.image_embedding_size[0])
        self._init_prepared(encoder_batch)

    def describe_encoder(self) -> str:
        return "transformers %s, %s" % (self.family.model_class,
                                        "bf16 autocast" if self.precision == "bf16" else "fp32")

    @property
    def feature_stride(self) -> int:
        """Input pixels per feature cell (16 for SAM 2.1, 14 for SAM 3)."""
        return self.image_size // self._grid

    @property
    def mask_input_size(self) -> Tuple[int, int]:
        """``(h_m, w_m)`` of the low-res mask logits (256x256 for SAM 2.1, 288x288 for SAM 3)."""
        return self._mask_size

    # -- encoder
    def encoder_input(self, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """An ``(H, W, 3)`` uint8 RGB image -> ``(1, 3, S, S)`` model input (:func:`squashed_input`) and ``(S, S)``."""
        s = self.image_size
        return squashed_input(image, s, self.family.mean, self.family.std, self.device), (s, s)

    @torch.no_grad()
    def encode_levels(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``(B, 3, S, S)`` model input -> the model's image embeddings, finest first, the last ``(B, C, h, w)``."""
        with autocast(self.device, self.precision):
            levels = self.model.get_image_embeddings(x)
        return [level.float() for level in levels]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_levels(x)[-1]

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        ready = self._take_prepared(image)
        if isinstance(ready, ImageEmbedding):
            return ready
        x, input_size = ready if ready is not None else self.encoder_input(image)
        levels = self.encode_levels(x)
        return ImageEmbedding(levels[-1], tuple(image.shape[:2]), input_size, levels=tuple(levels))

    @torch.no_grad()
    def embed_batch(self, images: Sequence[np.ndarray]) -> List[ImageEmbedding]:
        out = []
        for start in range(0, len(images), self.encoder_batch):
            chunk = images[start:start + self.encoder_batch]
            inputs = [self.encoder_input(image) for image in chunk]
            levels = self.encode_levels(torch.cat([x for x, _ in inputs]))
            for i, (image, (_, size)) in enumerate(zip(chunk, inputs)):
                mine = tuple(level[i:i + 1].clone() for level in levels)
                out.append(ImageEmbedding(mine[-1], tuple(image.shape[:2]), size, levels=mine))
        return out

    # -- decoder
    def _to_model_frame(self, xy: np.ndarray, original_size) -> torch.Tensor:
        """``(..., 2k)`` ``(x, y, ...)`` pixels of the original image -> the same in pixels of the model's square."""
        h, w = original_size
        s = self.image_size
        scale = np.tile(np.array([s / w, s / h], np.float32), xy.shape[-1] // 2)
        return torch.as_tensor(np.asarray(xy, np.float32) * scale, device=self.device)

    @torch.no_grad()
    def predict(self, embedding: ImageEmbedding, point_coords: Optional[np.ndarray] = None,
                point_labels: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None,
                mask_logits: Optional[torch.Tensor] = None, multimask: bool = False, full_size: bool = True,
                min_score: Optional[float] = None) -> Prediction:
        """As :meth:`SamSegmenter.predict` (``min_score`` is accepted and every mask is drawn). Labels: 1
        foreground, 0 background, -1 no point (SAM's padding label, which both models know)."""
        n = len(point_coords) if point_coords is not None else len(boxes)
        points = labels = box_t = None
        if point_coords is not None:
            points = self._to_model_frame(np.asarray(point_coords, np.float32), embedding.original_size)
            labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.long, device=self.device)
        if boxes is not None:
            box_t = self._to_model_frame(np.asarray(boxes, np.float32).reshape(n, 4), embedding.original_size)
        levels = list(embedding.levels)
        scores, low = [], []
        step = 1 if mask_logits is not None else PROMPTS_PER_CALL
        for start in range(0, n, step):
            part = slice(start, min(start + step, n))
            kwargs = dict(image_embeddings=levels, multimask_output=multimask)
            if points is not None:
                kwargs.update(input_points=points[part][None], input_labels=labels[part][None])
            if box_t is not None:
                kwargs.update(input_boxes=box_t[part][None])
            if mask_logits is not None:  # one mask per call: the model shares a mask prompt across its prompts
                kwargs.update(input_masks=mask_logits[part].to(self.device, self.model.dtype))
            out = self.model(**kwargs)
            scores.append(out.iou_scores[0].float())
            low.append(out.pred_masks[0].float())
        pred = Prediction(scores=torch.cat(scores).cpu().numpy(), low_res_logits=torch.cat(low))
        if full_size:
            logits = self._to_original(pred.low_res_logits, embedding.original_size)
            pred.masks, pred.logits = (logits > self.mask_threshold).cpu().numpy(), logits
        return pred

    @staticmethod
    def _to_original(low_res_logits: torch.Tensor, original_size) -> torch.Tensor:
        """``(..., h_m, w_m)`` low-res logits -> ``(..., H, W)`` logits at the original size (the square frame
        covers the image, so one bilinear resize: ``Sam2Processor.post_process_masks``'s math)."""
        lead = low_res_logits.shape[:-2]
        flat = low_res_logits.reshape((-1, 1) + tuple(low_res_logits.shape[-2:])).float()
        full = F.interpolate(flat, size=tuple(original_size), mode="bilinear", align_corners=False)
        return full.reshape(tuple(lead) + tuple(original_size))

    @torch.no_grad()
    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> np.ndarray:
        h, w = embedding.original_size
        out = np.zeros((len(low_res_logits), h, w), dtype=bool)
        for i, logits in enumerate(low_res_logits):
            out[i] = (self._to_original(logits.to(self.device), (h, w)) > self.mask_threshold).cpu().numpy()
        return out

    @torch.no_grad()
    def input_frame_areas(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor,
                          thresholds: Sequence[float]) -> torch.Tensor:
        """As :meth:`SamSegmenter.input_frame_areas`; SAM 3's low-res frame is 1/3.5 of its input, so its logits
        are resized to the square (a few masks at a time) where the factor is not a whole number."""
        if self.image_size % self.mask_input_size[0] == 0:
            return super().input_frame_areas(embedding, low_res_logits, thresholds)
        out = []
        for start in range(0, len(low_res_logits), 8):
            full = self._to_original(low_res_logits[start:start + 8].to(self.device), (self.image_size,) * 2)
            out.append(torch.stack([(full > t).flatten(1).sum(1) for t in thresholds], dim=1))
        return torch.cat(out) if out else torch.zeros((0, len(thresholds)), dtype=torch.long)
