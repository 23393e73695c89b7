"""SAM as a promptable segmenter: one image embedding per image, many cheap prompt decodes.

Coordinates: points are ``(x, y)`` in pixels of the *original* image, boxes are ``XYXY`` in pixels of
the original image, masks are ``(H, W)`` arrays of the original image. The adapter owns every
conversion to SAM's resized-and-padded input frame, so pipelines never see SAM's 1024-px frame.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .precision import autocast
from .sam_decoder import PromptBatchDecoder, SharedImageTokens
from .upsampled_area import upsampled_areas
from ..errors import SamtextError


@dataclass
class ImageEmbedding:
    """SAM's encoding of one image.

    Attributes:
        features: ``(1, C, h, w)`` float32 tensor, SAM's image embedding (C=256, h=w=64 for ViT-B/L/H).
        original_size: ``(H, W)`` of the image that was encoded.
        input_size: ``(h_in, w_in)`` of the image after resizing its longest side to the encoder's input
            size, before padding to a square.
        shared_tokens: the decoder's prompt-independent image side, filled by the first ``predict``.
        levels: every feature level a model's decoder reads, finest first, ``features`` last (SAM 2.1 and
            SAM 3's high-resolution features, :mod:`samtext.models.hf_sam`); None for SAM 1.
    """

    features: torch.Tensor
    original_size: Tuple[int, int]
    input_size: Tuple[int, int]
    shared_tokens: Optional[SharedImageTokens] = field(default=None, repr=False, compare=False)
    levels: Optional[Tuple[torch.Tensor, ...]] = field(default=None, repr=False, compare=False)


@dataclass
class Prediction:
    """Masks decoded for a batch of N prompts with M masks each.

    Attributes:
        scores: ``(N, M)`` float numpy array, SAM's predicted IoU of each mask.
        low_res_logits: ``(N, M, h_m, w_m)`` float32 tensor, logits in SAM's low-res mask frame (the padded
            square input frame at 1/4 scale), to be fed back as ``mask_logits`` for refinement or turned into
            full-size masks with :meth:`SamSegmenter.upscale`.
        masks: ``(N, M, H, W)`` bool numpy array at the original image size; None when decoded with
            ``full_size=False``.
        logits: ``(N, M, H, W)`` float32 tensor, mask logits at the original size (mask = logits > 0); None
            when decoded with ``full_size=False``.
    """

    scores: np.ndarray
    low_res_logits: torch.Tensor
    masks: Optional[np.ndarray] = None
    logits: Optional[torch.Tensor] = None


# Images prepared ahead of ``embed`` (see :meth:`SamSegmenter.prepare`) kept at most; the oldest go first.
MAX_PREPARED = 32


def _is_rgb(image) -> bool:
    """Whether ``image`` is an ``(H, W, 3)`` uint8 array, the input every encoder path takes."""
    return isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


class SamSegmenter:
    """Wraps a ``segment_anything.modeling.Sam`` (SAM, or MobileSAM built on the same classes).

    Arguments:
        sam: the SAM model (real or tiny).
        device: torch device to run on.
        precision: "fp32" or "bf16". The plain encoder runs under bfloat16 autocast at "bf16"; the fast one
            (:mod:`samtext.models.fast_encoder`) holds bf16 weights. Prompts without a mask input are decoded
            with a bf16 copy of the mask decoder at "bf16" (:meth:`PromptBatchDecoder.for_model`); prompts with
            one go through SAM's own decoder module, in fp32.
        name: a label for run records ("vit_b", "tiny", ...).
        fast_encoder: run the image encoder on the fast path (fused attention, bf16 weights where precision
            is bf16, compilation for runs that plan many images).
        encoder_batch: images per encoder call when images are prepared ahead (:meth:`prepare`); default 8 on
            CUDA, 1 on a CPU (where a batch is no faster per image).
    """

    def __init__(self, sam, device="cpu", precision="fp32", name="sam", fast_encoder: bool = False,
                 encoder_batch: Optional[int] = None):
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam.to(device).eval()
        self.mask_threshold = sam.mask_threshold
        self.device = torch.device(device)
        self.precision = precision
        self.name = name
        self.image_size = sam.image_encoder.img_size
        self.transform = ResizeLongestSide(self.image_size)
        decoder_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.decoder = PromptBatchDecoder.for_model(sam, decoder_dtype)  # None: SAM's own module for every prompt
        self.fast = None
        if fast_encoder:
            from .fast_encoder import FastEncoder

            self.fast = FastEncoder(sam.image_encoder, precision, self.device)
        self._init_prepared(encoder_batch)

    def _init_prepared(self, encoder_batch: Optional[int]) -> None:
        """The state of :meth:`prepare` (shared with the transformers adapters)."""
        self.encoder_batch = int(encoder_batch or (8 if self.device.type == "cuda" else 1))
        self._prepared = OrderedDict()  # id(image) -> (image, ImageEmbedding or (input, input_size))
        self._prepared_lock = threading.Lock()

    def describe_encoder(self) -> str:
        """How the image encoder runs, for run records: "plain, bf16 autocast", "fused attention x12, ..."."""
        if self.fast is not None:
            return self.fast.describe()
        return "plain, " + ("bf16 autocast" if self.precision == "bf16" else "fp32")

    @property
    def feature_stride(self) -> int:
        """Input pixels per feature cell (16 for every SAM)."""
        return self.image_size // self.sam.prompt_encoder.image_embedding_size[0]

    @property
    def mask_input_size(self) -> Tuple[int, int]:
        """``(h_m, w_m)`` of the low-res mask prompts and logits (256x256 for real SAM)."""
        return tuple(self.sam.prompt_encoder.mask_input_size)

    def encoder_input(self, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """An ``(H, W, 3)`` uint8 RGB image -> ``(1, 3, S, S)`` float32 encoder input (resized so that its longest
        side is S, normalised, zero-padded at the right and bottom) and its ``(h_in, w_in)`` before padding."""
        if not _is_rgb(image):
            raise SamtextError("expected an (H, W, 3) uint8 RGB image, got %s %s"
                             % (getattr(image, "shape", type(image).__name__), getattr(image, "dtype", "")))
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].contiguous()
        return self.sam.preprocess(x.float()), tuple(resized.shape[:2])

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` encoder input -> ``(B, C, h, w)`` float32 image embeddings."""
        if self.fast is not None:
            return self.fast(x)
        with autocast(self.device, self.precision):
            return self.sam.image_encoder(x).float()

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Encodes an ``(H, W, 3)`` uint8 RGB image. The costly step: call it once per image. An image handed to
        :meth:`prepare` before comes back from what was prepared."""
        ready = self._take_prepared(image)
        if isinstance(ready, ImageEmbedding):
            return ready
        x, input_size = ready if ready is not None else self.encoder_input(image)
        return ImageEmbedding(self.encode(x), tuple(image.shape[:2]), input_size)

    @torch.no_grad()
    def embed_batch(self, images: Sequence[np.ndarray]) -> List[ImageEmbedding]:
        """Encodes several images, ``encoder_batch`` per encoder call."""
        inputs = [self.encoder_input(image) for image in images]
        out = []
        for start in range(0, len(inputs), self.encoder_batch):
            chunk = inputs[start:start + self.encoder_batch]
            x = torch.cat([x for x, _ in chunk])
            if self.fast is not None and self.fast.compiles() and len(chunk) < self.encoder_batch:
                x = torch.cat([x, x.new_zeros((self.encoder_batch - len(chunk),) + x.shape[1:])])  # one shape
            features = self.encode(x)
            out += [ImageEmbedding(features[i:i + 1].clone(), tuple(image.shape[:2]), size)  # not the batch's
                    for i, ((_, size), image) in enumerate(zip(chunk, images[start:start + len(chunk)]))]
        return out

    def prepare(self, images: Sequence[np.ndarray]) -> None:
        """Work for images about to be embedded that may run ahead, on a loader thread: SAM's preprocessing,
        and with ``encoder_batch`` > 1 the encoder itself, in batches. :meth:`embed` of the same image objects
        then takes the result. What is not an RGB image is left for :meth:`embed` to refuse."""
        images = [im for im in images if _is_rgb(im)]
        if not images:
            return
        if self.encoder_batch > 1 and len(images) > 1:
            ready = self.embed_batch(images)
        else:
            ready = [self.encoder_input(image) for image in images]
        with self._prepared_lock:
            for image, item in zip(images, ready):
                self._prepared[id(image)] = (image, item)
            while len(self._prepared) > MAX_PREPARED:
                self._prepared.popitem(last=False)

    def discard_prepared(self) -> None:
        """Drops what :meth:`prepare` made and no :meth:`embed` took (a run that stopped early)."""
        with self._prepared_lock:
            self._prepared.clear()

    def _take_prepared(self, image):
        with self._prepared_lock:
            entry = self._prepared.pop(id(image), None)
        return entry[1] if entry is not None and entry[0] is image else None

    @torch.no_grad()
    def predict(
        self,
        embedding: ImageEmbedding,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        boxes: Optional[np.ndarray] = None,
        mask_logits: Optional[torch.Tensor] = None,
        multimask: bool = False,
        full_size: bool = True,
        min_score: Optional[float] = None,
    ) -> Prediction:
        """Decodes masks for N prompts on one embedded image, in one batch.

        Arguments:
            point_coords: ``(N, K, 2)`` points as ``(x, y)`` pixels of the original image.
            point_labels: ``(N, K)`` labels, 1 = foreground, 0 = background.
            boxes: ``(N, 4)`` boxes as ``XYXY`` pixels of the original image.
            mask_logits: ``(N, 1, h_m, w_m)`` low-res logits from an earlier ``predict``.
            multimask: return SAM's 3 masks per prompt (use for single ambiguous points only).
            full_size: also build the ``(N, M, H, W)`` masks and logits at the original size. Turn it off
                when decoding many prompts and upscale only the masks that are kept (:meth:`upscale`).
            min_score: when given, the masks of a prompt none of whose masks scores above it are not drawn
                (their logits are all very negative: empty masks); their scores are still returned. For
                callers that drop such masks anyway: it skips about half of the decoder's work for them.

        Prompts without ``mask_logits`` share the image-side work of the decoder across prompts and images'
        calls (:mod:`samtext.models.sam_decoder`); results equal SAM's decoder module up to rounding.
        """
        sam = self.sam
        points = None
        if point_coords is not None:
            coords = torch.as_tensor(np.asarray(point_coords, dtype=np.float32), device=self.device)
            coords = self.transform.apply_coords_torch(coords, embedding.original_size)
            labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=self.device)
            points = (coords, labels)
        box_t = None
        if boxes is not None:
            box_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=self.device)
            box_t = self.transform.apply_boxes_torch(box_t, embedding.original_size)
        if mask_logits is not None:
            mask_logits = mask_logits.to(self.device)
        sparse, dense = sam.prompt_encoder(points=points, boxes=box_t, masks=mask_logits)
        if self.decoder is not None and mask_logits is None:
            if embedding.shared_tokens is None:
                embedding.shared_tokens = self.decoder.share(embedding.features, sam.prompt_encoder.get_dense_pe())
            low_res, iou = self.decoder(embedding.shared_tokens, sparse, multimask, min_iou=min_score)
        else:
            low_res, iou = sam.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        pred = Prediction(scores=iou.float().cpu().numpy(), low_res_logits=low_res.float())
        if full_size:
            logits = sam.postprocess_masks(low_res, embedding.input_size, embedding.original_size).float()
            pred.masks, pred.logits = (logits > self.mask_threshold).cpu().numpy(), logits
        return pred

    @torch.no_grad()
    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> np.ndarray:
        """``(N, h_m, w_m)`` low-res logits -> ``(N, H, W)`` bool masks at the original image size.

        One mask at a time, so that a large image never holds N float masks at once.
        """
        h, w = embedding.original_size
        out = np.zeros((len(low_res_logits), h, w), dtype=bool)
        for i, logits in enumerate(low_res_logits):
            full = self.sam.postprocess_masks(logits[None, None].to(self.device), embedding.input_size, (h, w))
            out[i] = (full[0, 0] > self.mask_threshold).cpu().numpy()
        return out

    @torch.no_grad()
    def input_frame_areas(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor,
                          thresholds: Sequence[float]) -> torch.Tensor:
        """``(N, h_m, w_m)`` low-res logits -> ``(N, T)`` pixel counts, in SAM's input frame (the image resized to
        the encoder's size, padding cut off), of the upsampled logits above each of the T ``thresholds``: what
        ``postprocess_masks`` would give before its last resize, without building the upsampled logits."""
        factor = self.image_size // self.mask_input_size[0]
        return upsampled_areas(low_res_logits.to(self.device), factor, embedding.input_size, thresholds)

    def low_res_masks(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        """``(N, h_m, w_m)`` low-res logits -> ``(N, h_v, w_v)`` bool masks of the part of the low-res frame
        that covers the image (padding cut off), for cheap comparisons between masks."""
        scale = self.image_size // self.mask_input_size[0]
        h_in, w_in = embedding.input_size
        return low_res_logits[:, : -(-h_in // scale), : -(-w_in // scale)] > self.mask_threshold

    def low_res_to_grid(self, embedding: ImageEmbedding, masks: torch.Tensor) -> torch.Tensor:
        """``(N, h_v, w_v)`` masks from :meth:`low_res_masks` -> ``(N, h, w)`` fraction of each valid
        feature cell (see :meth:`valid_grid`) that they cover."""
        factor = self.feature_stride * self.mask_input_size[0] // self.image_size
        gh, gw = self.valid_grid(embedding)
        m = masks.float()[:, None]
        m = F.pad(m, (0, gw * factor - m.shape[-1], 0, gh * factor - m.shape[-2]))
        return F.avg_pool2d(m, factor)[:, 0]

    def valid_grid(self, embedding: ImageEmbedding) -> Tuple[int, int]:
        """``(h, w)`` of the feature cells that cover the image (the rest is padding)."""
        s = self.feature_stride
        h_in, w_in = embedding.input_size
        return -(-h_in // s), -(-w_in // s)

    def mask_to_grid(self, mask: np.ndarray, embedding: ImageEmbedding) -> torch.Tensor:
        """Maps an ``(H, W)`` bool mask of the original image to ``(h, w)`` soft weights on the feature
        grid (the fraction of each cell that the mask covers), padding cells included (they are 0)."""
        h_in, w_in = embedding.input_size
        m = torch.as_tensor(mask, dtype=torch.float32, device=self.device)[None, None]
        m = F.interpolate(m, size=(h_in, w_in), mode="area")
        m = F.pad(m, (0, self.image_size - w_in, 0, self.image_size - h_in))
        grid = embedding.features.shape[-2:]
        return F.adaptive_avg_pool2d(m, grid)[0, 0]

    def grid_to_point(self, row: float, col: float, embedding: ImageEmbedding) -> Tuple[float, float]:
        """The centre of feature cell ``(row, col)`` as ``(x, y)`` pixels of the original image (fractional
        ``row``, ``col`` address points between cell centres)."""
        s = self.feature_stride
        H, W = embedding.original_size
        h_in, w_in = embedding.input_size
        x = min((col + 0.5) * s, w_in - 0.5) * W / w_in
        y = min((row + 0.5) * s, h_in - 0.5) * H / h_in
        return x, y
