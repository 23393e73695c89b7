"""CLIP (open_clip) as a vision-language scorer: unit image and text embeddings, and class probabilities.

Images are ``(H, W, 3)`` uint8 RGB arrays of any size. Each goes through open_clip's own evaluation
transform for the loaded weights (resize mode, interpolation, crop, mean and std as the weights' tag
declares them), so CLIP sees exactly what ``open_clip.create_model_and_transforms`` would feed it.
"""

from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .precision import autocast

# Background prompts a class prompt competes with, so that scores become probabilities of "this class
# rather than something generic" instead of raw cosines with no scale.
BACKGROUND_PROMPTS = ("background", "a blurry photo", "an object", "a texture", "a scene")

PROMPT_TEMPLATE = "a photo of a {}."


def eval_transform(model) -> Callable:
    """open_clip's evaluation transform (PIL image -> ``(3, S, S)`` tensor) for ``model``'s preprocessing
    configuration (the one its weights' tag declares, as set by open_clip's factory)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), open_clip.get_model_preprocess_cfg(model))
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


class ClipModel:
    """Wraps an open_clip ``CLIP`` model, its tokenizer and its image transform.

    Arguments:
        model: an ``open_clip.CLIP`` (or ``CustomTextCLIP``).
        tokenizer: the matching open_clip tokenizer.
        transform: open_clip's evaluation transform for the weights (PIL image -> tensor); default:
            :func:`eval_transform` of the model.
        device: torch device.
        precision: "fp32" or "bf16" (autocast for both towers).
        name: a label for run records ("ViT-B-32/openai", "tiny", ...).
    """

    def __init__(self, model, tokenizer, transform: Optional[Callable] = None, device="cpu", precision="fp32",
                 name="clip"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.transform = transform or eval_transform(model)
        self.device = torch.device(device)
        self.precision = precision
        self.name = name
        self._text_cache = {}

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``N`` uint8 RGB arrays -> ``(N, 3, S, S)`` normalised float tensor on the model's device."""
        batch = [self.transform(Image.fromarray(np.ascontiguousarray(image))) for image in images]
        return torch.stack(batch).to(self.device)

    @torch.no_grad()
    def encode_images(self, images: Sequence[np.ndarray], batch_size: int = 64) -> torch.Tensor:
        """``N`` uint8 RGB arrays -> ``(N, D)`` unit-norm float32 embeddings."""
        out = []
        for i in range(0, len(images), batch_size):
            x = self.preprocess(images[i : i + batch_size])
            with autocast(self.device, self.precision):
                out.append(self.model.encode_image(x).float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: List[str]) -> torch.Tensor:
        """``N`` strings -> ``(N, D)`` unit-norm float32 embeddings."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with autocast(self.device, self.precision):
            emb = self.model.encode_text(tokens).float()
        return F.normalize(emb, dim=-1)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    def class_probability(self, image_embeddings: torch.Tensor, class_name: str) -> torch.Tensor:
        """``(N, D)`` unit image embeddings -> ``(N,)`` probability of ``class_name`` against the
        background prompts (a softmax over [class prompt, *BACKGROUND_PROMPTS])."""
        texts = (PROMPT_TEMPLATE.format(class_name),) + BACKGROUND_PROMPTS
        if texts not in self._text_cache:  # the same prompts score every image of a run
            self._text_cache[texts] = self.encode_texts(list(texts))
        text_emb = self._text_cache[texts]
        logits = self.logit_scale * image_embeddings @ text_emb.T
        return logits.softmax(dim=-1)[:, 0]

    def saliency_maps(self, crops, text_embeddings: torch.Tensor, targets) -> list:
        """Grad-CAM maps (``(s, s)`` float32 in [0, 1]) of square uint8 crops, each for the text
        ``targets[i]`` among ``text_embeddings`` ``(T, D)``; see :func:`samtext.models.gradcam.clip_gradcam`."""
        from .gradcam import clip_gradcam

        return clip_gradcam(self, crops, text_embeddings, targets)
