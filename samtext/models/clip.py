"""CLIP (open_clip) as a vision-language scorer: unit image and text embeddings, and class probabilities.

Images are ``(H, W, 3)`` uint8 RGB arrays of any size; each is resized (short side to the model's input
size, bicubic with antialiasing) and centre-cropped, as CLIP was trained.
"""

from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .precision import autocast

# Background prompts a class prompt competes with, so that scores become probabilities of "this class
# rather than something generic" instead of raw cosines with no scale.
BACKGROUND_PROMPTS = ("background", "a blurry photo", "an object", "a texture", "a scene")

PROMPT_TEMPLATE = "a photo of a {}."


class ClipModel:
    """Wraps an open_clip ``CLIP`` model and its tokenizer.

    Arguments:
        model: an ``open_clip.CLIP`` (or ``CustomTextCLIP``).
        tokenizer: the matching open_clip tokenizer.
        device: torch device.
        precision: "fp32" or "bf16" (autocast for both towers).
        name: a label for run records ("ViT-B-32/openai", "tiny", ...).
    """

    def __init__(self, model, tokenizer, device="cpu", precision="fp32", name="clip"):
        import open_clip

        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.precision = precision
        self.name = name
        self._text_cache = {}
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.input_size = size if isinstance(size, int) else size[0]
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``N`` uint8 RGB arrays -> ``(N, 3, S, S)`` normalised float tensor."""
        s = self.input_size
        batch = []
        for image in images:
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
            h, w = x.shape[-2:]
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
            top, left = (nh - s) // 2, (nw - s) // 2
            batch.append(x[..., top : top + s, left : left + s].clamp(0, 1))
        x = torch.cat(batch)
        return ((x - self.mean) / self.std).to(self.device)

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
