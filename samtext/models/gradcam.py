"""Grad-CAM of CLIP image crops against text embeddings (pytorch-grad-cam), for ResNet and ViT CLIP.

The score a map explains is the cosine between the crop's image embedding and a text embedding (what CLIP
ranks by). The hooked layer is the last one that still has a spatial layout:

- ResNet CLIP (``open_clip.model.ModifiedResNet``): the last bottleneck of ``layer4``, before attention pooling;
  a ``(C, h, w)`` map (7x7 for RN50 at 224 px).
- ViT CLIP (``open_clip.transformer.VisionTransformer``): the first norm of the last transformer block, whose
  patch tokens are reshaped to their ``(gh, gw)`` grid (the class token dropped); 7x7 for ViT-B/32, 14x14 for
  ViT-B/16.

Maps are ReLU'd weighted sums of the activations, upsampled to the crop and scaled to [0, 1] per crop (Grad-CAM as
pytorch-grad-cam computes it).
"""

from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from ..errors import SamtextError


class _ImageTextScore(torch.nn.Module):
    """``(N, 3, S, S)`` preprocessed crops -> ``(N, T)`` cosines with T fixed unit text embeddings."""

    def __init__(self, model, text_embeddings: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("text", text_embeddings)

    def forward(self, x):
        return F.normalize(self.model.encode_image(x), dim=-1) @ self.text.T


def target_layer(visual) -> torch.nn.Module:
    """The module of a CLIP image tower whose output Grad-CAM weighs (see the module docstring).

    Raises:
        ValueError: a tower that is neither open_clip's ResNet nor its ViT (timm towers, say).
    """
    if hasattr(visual, "layer4"):
        return visual.layer4[-1]
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks"):
        return transformer.resblocks[-1].ln_1
    raise SamtextError("Grad-CAM supports open_clip's ResNet and ViT image towers, not %s" % type(visual).__name__)


def token_grid_reshape(visual):
    """The reshape pytorch-grad-cam needs for a ViT tower: tokens -> ``(N, D, gh, gw)``; None for a CNN."""
    if hasattr(visual, "layer4"):
        return None
    gh, gw = visual.grid_size
    batch_first = getattr(visual.transformer, "batch_first", True)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if not batch_first:
            tokens = tokens.transpose(0, 1)  # (L, N, D) -> (N, L, D)
        grid = tokens[:, tokens.shape[1] - gh * gw :]  # drop the class (and any prefix) tokens
        return grid.reshape(grid.shape[0], gh, gw, grid.shape[-1]).permute(0, 3, 1, 2)

    return reshape


def clip_gradcam(clip, crops: Sequence[np.ndarray], text_embeddings: torch.Tensor, targets: Sequence[int],
                 batch_size: int = 16) -> List[np.ndarray]:
    """Grad-CAM maps of square crops for chosen texts.

    Arguments:
        clip: a :class:`samtext.models.ClipModel`.
        crops: N square ``(s, s, 3)`` uint8 RGB crops (any sizes; pad non-square ones first, since CLIP's centre
            crop would cut them).
        text_embeddings: ``(T, D)`` unit text embeddings.
        targets: N indices into ``text_embeddings``: the text each crop's map explains.

    Returns:
        N float32 maps in [0, 1], each ``(s, s)`` like its crop.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    visual = clip.model.visual
    scorer = _ImageTextScore(clip.model, text_embeddings.detach().float().to(clip.device))
    out: List[np.ndarray] = []
    params = [p for p in clip.model.parameters() if p.requires_grad]
    with torch.enable_grad():
        cam = GradCAM(model=scorer, target_layers=[target_layer(visual)], reshape_transform=token_grid_reshape(visual))
        # gradients flow to the activations through the input, not into (and kept on) every weight
        cam.compute_input_gradient = True
        for p in params:
            p.requires_grad_(False)
        try:
            for i in range(0, len(crops), batch_size):
                chunk = crops[i : i + batch_size]
                x = clip.preprocess(chunk)
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets[i : i + batch_size]])
                for crop, m in zip(chunk, maps):
                    side = crop.shape[0]
                    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(m))[None, None], size=(side, side),
                                       mode="bilinear", align_corners=False)[0, 0]
                    out.append(up.clamp(0, 1).numpy().astype(np.float32))
        finally:
            cam.activations_and_grads.release()
            for p in params:
                p.requires_grad_(True)
    return out
