"""SAM's automatic mask proposals from one image embedding, decoded at low resolution.

What ``segment_anything.SamAutomaticMaskGenerator`` does without crops (a grid of single-point prompts, SAM's
three masks for each, filters on SAM's predicted IoU and on stability, box NMS), with differences that
matter when hundreds of prompts are decoded per image:

- the image is encoded once, by the caller's :class:`samtext.models.SamSegmenter` (``set_image`` would encode
  it again);
- the decoder shares its image-side work across prompts (:mod:`samtext.models.sam_decoder`) and draws no mask
  for a prompt none of whose masks passes the predicted-IoU filter;
- on a coarse grid (CPU's default 16x16), a second pass prompts the points of a grid twice as dense that no mask
  of the first pass covers (``fill_gaps``; at most an eighth as many as the first pass): small objects between
  the first points are found, at the cost of decoding only where nothing was found;
- every prompt stays in SAM's low-resolution mask frame (256x256 for real SAM) through the filters and the NMS;
  only the proposals that survive are upscaled to the image's size. The stability score is computed as the
  generator does, on the logits upsampled to SAM's input frame (without the last resize to the image), but
  counted without building the upsampled logits (:mod:`samtext.models.upsampled_area`); the NMS compares boxes
  in the low-resolution frame (resizing keeps the aspect ratio, so box IoU is unchanged up to rounding).

Nothing here imports FiftyOne.
"""

from typing import Optional

import numpy as np
import torch

from ..settings import ProposalSettings
from .result import Instance, MaskResult, PreparesImages

PROPOSAL_LABEL = "proposal"
FILL_SHARE = 8  # the second pass prompts at most an eighth as many points as the first (bench/results/proposals_fill.md)


def point_grid(side: int, size) -> np.ndarray:
    """``(side * side, 2)`` prompt points as ``(x, y)`` pixels of an image of ``size = (H, W)``: cell centres
    of an even ``side x side`` grid, row by row (SAM's ``build_point_grid`` scaled to the image)."""
    from segment_anything.utils.amg import build_point_grid

    h, w = size
    return (build_point_grid(side) * np.array([w, h], dtype=np.float64)).astype(np.float32)


class ProposalGenerator(PreparesImages):
    """``image -> MaskResult`` of SAM's automatic masks (see the module docstring).

    Each instance is labelled ``"proposal"``, its confidence is SAM's predicted IoU, and its scores hold
    ``predicted_iou``, ``stability_score`` and ``area`` (pixels). Instances are sorted by predicted IoU, best
    first. An image where nothing passes the filters gives an empty result that says so.

    Arguments:
        segmenter: a :class:`samtext.models.SamSegmenter` (or a double with the same methods).
        settings: a :class:`ProposalSettings` (defaults if None).
    """

    def __init__(self, segmenter, settings: Optional[ProposalSettings] = None):
        self.segmenter = segmenter
        self.settings = (settings or ProposalSettings()).check()
        device = getattr(segmenter, "device", "cpu")
        # the decoder's own precision: SAM 2.1 / SAM 3 (transformers' decoders) and SAM 1 without the shared-image
        # decoder keep an fp32 decoder at any precision
        decoder = getattr(segmenter, "decoder", None)
        precision = "bf16" if getattr(decoder, "dtype", None) == torch.bfloat16 else "fp32"
        self.side, self.batch = self.settings.grid_side(device), self.settings.batch_size(device, precision)

    def __call__(self, image: np.ndarray) -> MaskResult:
        return self.from_embedding(self.segmenter.embed(image))

    def _decode(self, embedding, points: np.ndarray):
        """Low-res logits ``(K, h_m, w_m)``, predicted IoU ``(K,)`` and stability ``(K,)`` of the masks of
        ``points`` ``(B, 2)`` that pass the score filters (3 masks per point before filtering)."""
        seg, s = self.segmenter, self.settings
        min_score = float(s.pred_iou_thresh) if s.pred_iou_thresh > 0 else None  # masks below are dropped here
        pred = seg.predict(embedding, points[:, None, :], np.ones((len(points), 1), dtype=np.int64),
                           multimask=True, full_size=False, min_score=min_score)
        logits = pred.low_res_logits.flatten(0, 1)  # (B * 3, h_m, w_m)
        iou = torch.as_tensor(pred.scores, dtype=torch.float32).flatten()
        if s.pred_iou_thresh > 0:  # as SAM's generator: 0 keeps every mask, even one predicted below 0
            keep = iou > s.pred_iou_thresh
            logits, iou = logits[keep], iou[keep]
        stability = self._stability(embedding, logits)
        if s.stability_score_thresh > 0:
            keep = stability >= s.stability_score_thresh
            logits, iou, stability = logits[keep], iou[keep], stability[keep]
        return logits, iou, stability

    def _uncovered_points(self, embedding, shape, logits: torch.Tensor) -> np.ndarray:
        """``(M, 2)`` ``(x, y)`` points of a grid twice as dense as the first one that no mask of the first pass
        (``logits``, those that passed the filters) covers, at most 1/:data:`FILL_SHARE` of the first grid's
        count (taken evenly through them): small objects between the first grid's points get a prompt of their
        own, and the decoder works only where the first pass found nothing."""
        gaps = point_grid(2 * self.side, shape)
        if len(logits):
            covered = torch.zeros(self.segmenter.low_res_masks(embedding, logits[:1]).shape[1:], dtype=torch.bool)
            for start in range(0, len(logits), self.STABILITY_CHUNK):
                chunk = logits[start:start + self.STABILITY_CHUNK]
                covered |= self.segmenter.low_res_masks(embedding, chunk).any(0).cpu()
            h, w = shape
            hv, wv = covered.shape
            rows = np.clip((gaps[:, 1] * hv / h).astype(int), 0, hv - 1)
            cols = np.clip((gaps[:, 0] * wv / w).astype(int), 0, wv - 1)
            gaps = gaps[~covered.numpy()[rows, cols]]
        cap = self.side * self.side // FILL_SHARE
        if len(gaps) > cap:  # evenly through the gaps, within the speed budget
            gaps = gaps[np.linspace(0, len(gaps) - 1, cap).round().astype(int)]
        return gaps

    STABILITY_CHUNK = 64  # masks whose low-res logits are scored at once

    def _stability(self, embedding, logits: torch.Tensor) -> torch.Tensor:
        """``(K,)`` SAM's stability score of each low-res mask, as SAM's generator computes it on the logits
        upsampled to SAM's input frame: the area above ``+offset`` over the area above ``-offset`` (0 for an
        empty mask). The areas are counted without upsampling (``SamSegmenter.input_frame_areas``)."""
        offset = float(self.settings.stability_score_offset)
        out = []
        for start in range(0, len(logits), self.STABILITY_CHUNK):
            areas = self.segmenter.input_frame_areas(embedding, logits[start:start + self.STABILITY_CHUNK],
                                                     (offset, -offset)).float().cpu()
            inner, outer = areas[:, 0], areas[:, 1]
            out.append(torch.where(outer > 0, inner / outer.clamp(min=1), torch.zeros_like(outer)))
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def from_embedding(self, embedding) -> MaskResult:
        """The proposals of an image already encoded by the segmenter (an ``ImageEmbedding``)."""
        from segment_anything.utils.amg import batched_mask_to_box
        from torchvision.ops import batched_nms

        seg, s = self.segmenter, self.settings
        shape = tuple(embedding.original_size)
        points = point_grid(self.side, shape)
        parts = [self._decode(embedding, points[i:i + self.batch])
                 for i in range(0, len(points), self.batch)]
        if self.settings.fills_gaps(self.side):
            extra = self._uncovered_points(embedding, shape, torch.cat([p[0] for p in parts]))
            parts += [self._decode(embedding, extra[i:i + self.batch]) for i in range(0, len(extra), self.batch)]
            points = np.concatenate([points, extra])
        logits = torch.cat([p[0] for p in parts])
        iou = torch.cat([p[1] for p in parts])
        stability = torch.cat([p[2] for p in parts])
        if len(logits) == 0:
            return MaskResult.empty(shape, "no SAM mask passed the filters (predicted IoU > %.2f, stability >= %.2f)"
                                    % (s.pred_iou_thresh, s.stability_score_thresh))
        boxes = batched_mask_to_box(seg.low_res_masks(embedding, logits)).float()  # low-res frame, XYXY
        keep = batched_nms(boxes, iou, torch.zeros(len(boxes), dtype=torch.int64), s.box_nms_thresh)
        # nms returns the kept indices by decreasing score; upscale them a batch at a time until the cap
        cap = int(s.max_proposals) if s.max_proposals is not None else len(keep)
        instances = []
        for start in range(0, len(keep), self.batch):
            if len(instances) >= cap:
                break
            idx = keep[start:start + self.batch]
            for k, mask in zip(idx.tolist(), seg.upscale(embedding, logits[idx])):
                area = int(mask.sum())
                if area >= max(1, s.min_area):
                    instances.append(Instance(mask, float(np.clip(float(iou[k]), 0, 1)), PROPOSAL_LABEL, dict(
                        predicted_iou=float(iou[k]), stability_score=float(stability[k]), area=float(area))))
        labels = np.ones(len(points), dtype=np.int64)
        if not instances:
            return MaskResult.empty(shape, "every SAM mask was smaller than min_area (%d px)" % s.min_area, points,
                                    labels)
        return MaskResult(shape, instances[:cap], points, labels)
