"""SAM's mask decoder for many prompts on one image, with the image-side work done once per image.

``segment_anything``'s ``MaskDecoder`` copies the image embedding once per prompt and runs every projection of
its two-way transformer on the 4096 image tokens of each copy. Two exact rewrites remove most of that work
when hundreds of prompts are decoded per image (mask proposals, the reference action's point sweeps):

- **Shared first layer.** Until the first block's image-to-token attention updates them, the image tokens are
  the same for every prompt that has no mask input (image embedding + the "no mask" embedding). Their key and
  value projections (token-to-image attention) and their query projection (image-to-token attention) are
  computed once per image and cached.
- **Projections folded into the few tokens.** Where image tokens differ per prompt (later blocks), attention
  between T prompt tokens (about 7) and N image tokens (4096) is rewritten so that every linear map touches the
  T tokens instead of the N image tokens: ``q . (x W_k^T + b_k) = (q W_k) . x + const`` (a constant per query
  leaves softmax unchanged), ``P (x W_v^T + b_v) = (P x) W_v^T + b_v`` (rows of P sum to 1), and likewise for
  the query and output projections of image-to-token attention. Per prompt this replaces 134 M
  multiply-adds per projection (ViT-B's decoder) with about 58 M for the folded products.

The transposed convolutions of the upscaling head (kernel 2, stride 2) are per-pixel linear maps; they run as
matrix products in token layout with a fused layer norm, and the masks are put back in image order at the end.

The result equals ``MaskDecoder.predict_masks`` up to floating-point rounding (checked in the tests against
the original module on the real ViT-B decoder architecture). Only SAM's original ``MaskDecoder`` with its
``TwoWayTransformer`` is supported; prompts with a mask input go through the original module.
"""

import copy
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


SKIPPED_LOGIT = -1000.0  # the logit of every pixel of a mask whose decoding was skipped (an empty mask)


@dataclass
class SharedImageTokens:
    """The prompt-independent image side of the decoder's first block, for one image.

    Attributes:
        tokens: ``(N, C)`` image tokens (image embedding + the "no mask" dense embedding), row-major over the
            ``(h, w)`` feature grid.
        pe: ``(N, C)`` SAM's positional encoding of the feature grid.
        keys: ``(H, N, d)`` first block's token-to-image key projection of ``tokens + pe``, split in heads.
        values: ``(H, N, d)`` its value projection of ``tokens``.
        queries: ``(H, N, d)`` first block's image-to-token query projection of ``tokens + pe``.
        grid: ``(h, w)`` of the feature grid.
    """

    tokens: torch.Tensor
    pe: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor
    grid: Tuple[int, int]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(..., L, H * d)`` -> ``(..., H, L, d)``."""
    *lead, length, dim = x.shape
    return x.reshape(*lead, length, num_heads, dim // num_heads).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(..., H, L, d)`` -> ``(..., L, H * d)``."""
    *lead, heads, length, dim = x.shape
    return x.transpose(-3, -2).reshape(*lead, length, heads * dim)


def _tokens_to_shared_image(attn, queries: torch.Tensor, shared: SharedImageTokens) -> torch.Tensor:
    """Prompt tokens ``(B, T, C)`` attend to the cached first-block image tokens; returns ``(B, T, C)``."""
    q = _heads(attn.q_proj(queries), attn.num_heads)  # (B, H, T, d)
    weights = torch.softmax(q @ shared.keys.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return attn.out_proj(_merge_heads(weights @ shared.values))


def _tokens_to_image(attn, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Prompt tokens ``(B, T, C)`` attend to per-prompt image tokens (``keys`` with positional encoding and
    ``values`` without, both ``(B, N, C)``), with the image-side key and value projections folded into the
    tokens. Returns ``(B, T, C)``."""
    heads = attn.num_heads
    q = _heads(attn.q_proj(queries), heads)  # (B, H, T, d)
    b, _, t, d = q.shape
    c = keys.shape[-1]
    w_k = attn.k_proj.weight.view(heads, d, c)
    w_v = attn.v_proj.weight.view(heads, d, c)
    # k_proj's bias adds a constant per query, which softmax ignores; the 1/sqrt(d) scale goes on the small side
    q_in_image_space = (q @ w_k).reshape(b, heads * t, c) / math.sqrt(d)
    # scores as (B, N, H*T) = keys @ small^T: a transposed (B, C, N) operand would be copied first
    weights = torch.softmax(keys @ q_in_image_space.transpose(1, 2), dim=1).transpose(1, 2)  # (B, H*T, N)
    pooled = (weights @ values).view(b, heads, t, c)
    out = pooled @ w_v.transpose(1, 2) + attn.v_proj.bias.view(heads, 1, d)  # (B, H, T, d)
    return attn.out_proj(_merge_heads(out))


def _image_to_tokens(attn, image: torch.Tensor, tokens: torch.Tensor, values: torch.Tensor,
                     shared_queries: torch.Tensor = None) -> torch.Tensor:
    """Image tokens attend to the prompt tokens; returns the ``(B, N, C)`` update of the image tokens.

    Arguments:
        image: ``(B, N, C)`` image tokens with positional encoding (ignored when ``shared_queries`` is given).
        tokens: ``(B, T, C)`` prompt tokens with positional encoding (attention keys).
        values: ``(B, T, C)`` prompt tokens without it (attention values).
        shared_queries: ``(H, N, d)`` the image tokens' query projection when it is the same for every prompt.
    """
    heads = attn.num_heads
    k = _heads(attn.k_proj(tokens), heads)  # (B, H, T, d)
    v = _heads(attn.v_proj(values), heads)
    b, _, t, d = k.shape
    c = attn.out_proj.weight.shape[0]
    k = k / math.sqrt(d)
    # scores in (B, H, T, N) layout: softmax over T then runs across N, which vectorises (T is about 7)
    if shared_queries is not None:
        scores = k @ shared_queries.transpose(1, 2)  # (B, H, T, N)
    else:
        w_q = attn.q_proj.weight.view(heads, d, c)
        k_in_image_space = (k @ w_q).reshape(b, heads * t, c)
        bias = (k @ attn.q_proj.bias.view(heads, d, 1)).reshape(b, heads * t, 1)
        scores = torch.baddbmm(bias, k_in_image_space, image.transpose(1, 2)).view(b, heads, t, -1)
    weights = torch.softmax(scores, dim=2).reshape(b, heads * t, -1)  # (B, H*T, N)
    w_out = attn.out_proj.weight.view(c, heads, d).permute(1, 2, 0)  # (H, d, C)
    values_out = (v @ w_out).reshape(b, heads * t, c)
    return torch.baddbmm(attn.out_proj.bias.expand(b, 1, c), weights.transpose(1, 2), values_out)

class PromptBatchDecoder:
    """Decodes batches of sparse prompts (points, boxes) on one image with a ``segment_anything`` MaskDecoder.

    Arguments:
        mask_decoder: the SAM model's ``MaskDecoder`` (weights are read from it; see :meth:`for_model` for a
            bfloat16 copy).
        no_mask_embed: ``(C,)`` the prompt encoder's dense embedding for "no mask input".

    The decoder computes in the dtype of ``mask_decoder``'s weights: inputs are cast to it, and the logits and
    predicted IoU come back as float32 whatever it is.
    """

    UPSCALE_ROWS = 1024  # image tokens per chunk of the upscaling head

    def __init__(self, mask_decoder, no_mask_embed: torch.Tensor):
        self.decoder = mask_decoder
        self.dtype = mask_decoder.iou_token.weight.dtype
        self.no_mask_embed = no_mask_embed.to(self.dtype)
        self._pe = None  # (N, C) positional encoding, the same for every image

    @classmethod
    def for_model(cls, sam, dtype: torch.dtype = torch.float32) -> Optional["PromptBatchDecoder"]:
        """The decoder for a ``segment_anything`` ``Sam`` whose mask decoder has the original layout (SAM,
        MobileSAM, ...); None for another decoder, which then runs as it is.

        ``dtype`` bfloat16 decodes with a bfloat16 copy of the decoder's weights (about 4 M parameters): on
        CPUs with bf16 matrix units (AMX, AVX512-BF16) about twice as fast as float32, where autocast gains
        little (its casts cost as much as they save); masks agree with float32's on all but about 0.3% of
        pixels of random weights' (ambiguous) logits. The copy is a snapshot: weights changed on the model later
        are not seen (samtext never changes SAM's weights after building its segmenter). On CUDA this matches how
        Meta runs SAM 2 (the whole model under bf16 autocast)."""
        from segment_anything.modeling import MaskDecoder, TwoWayTransformer
        from segment_anything.modeling.common import LayerNorm2d

        dec = getattr(sam, "mask_decoder", None)
        if type(dec) is not MaskDecoder or type(dec.transformer) is not TwoWayTransformer:
            return None
        up = list(dec.output_upscaling)
        kinds = [torch.nn.ConvTranspose2d, LayerNorm2d, None, torch.nn.ConvTranspose2d, None]
        if len(up) != 5 or any(k is not None and type(m) is not k for m, k in zip(up, kinds)):
            return None
        if any(m.kernel_size != (2, 2) or m.stride != (2, 2) or m.padding != (0, 0) for m in (up[0], up[3])):
            return None
        if dtype != dec.iou_token.weight.dtype:
            dec = copy.deepcopy(dec).to(dtype)
        return cls(dec, sam.prompt_encoder.no_mask_embed.weight[0])

    @torch.no_grad()
    def share(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> SharedImageTokens:
        """The cacheable image side for ``image_embedding`` ``(1, C, h, w)`` and ``image_pe`` ``(1, C, h, w)``."""
        _, c, h, w = image_embedding.shape
        image_embedding, image_pe = image_embedding.to(self.dtype), image_pe.to(self.dtype)
        tokens = (image_embedding[0] + self.no_mask_embed.view(c, 1, 1)).flatten(1).T.contiguous()  # (N, C)
        pe = image_pe[0].flatten(1).T.contiguous()
        if self._pe is not None and self._pe.shape == pe.shape and torch.equal(self._pe, pe):
            pe = self._pe  # one copy for every image
        self._pe = pe
        first = self.decoder.transformer.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        with_pe = tokens + pe
        return SharedImageTokens(
            tokens=tokens, pe=pe, grid=(h, w),
            keys=_heads(t2i.k_proj(with_pe), t2i.num_heads).contiguous(),
            values=_heads(t2i.v_proj(tokens), t2i.num_heads).contiguous(),
            queries=_heads(i2t.q_proj(with_pe), i2t.num_heads).contiguous(),
        )

    @torch.no_grad()
    def __call__(self, shared: SharedImageTokens, sparse: torch.Tensor, multimask: bool,
                 min_iou: Optional[float] = None):
        """Masks for ``sparse`` ``(B, K, C)`` prompt embeddings (the prompt encoder's sparse output).

        Arguments:
            multimask: SAM's three masks per prompt (True) or its single mask (False).
            min_iou: when given, the upscaling head (about half the cost) runs only for the prompts with at
                least one mask whose predicted IoU is above it; the other prompts' logits are
                :data:`SKIPPED_LOGIT` everywhere (an empty mask).

        Returns:
            ``(B, M, 4h, 4w)`` float32 low-res mask logits and ``(B, M)`` float32 predicted IoU, where M is 3
            with ``multimask`` and 1 without, as ``MaskDecoder.forward``.
        """
        masks, iou = self._decode(shared, sparse.to(self.dtype), multimask, min_iou)
        return masks.float(), iou.float()

    def _decode(self, shared: SharedImageTokens, sparse: torch.Tensor, multimask: bool, min_iou: Optional[float]):
        dec = self.decoder
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        prompt = torch.cat([out_tokens.expand(len(sparse), -1, -1), sparse], dim=1)  # (B, T, C)
        queries, image = self._transformer(shared, prompt)
        wanted = slice(1, dec.num_mask_tokens) if multimask else slice(0, 1)
        iou = dec.iou_prediction_head(queries[:, 0])[:, wanted]
        hyper = torch.stack([mlp(queries[:, 1 + i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)],
                            dim=1)[:, wanted]
        h, w = shared.grid
        if min_iou is None:
            return self._upscaled_masks(image, hyper, shared.grid), iou
        masks = image.new_full((len(image), hyper.shape[1], 4 * h, 4 * w), SKIPPED_LOGIT)
        live = (iou.float() > min_iou).any(dim=1).nonzero()[:, 0]  # as callers filter: in fp32, not bf16-rounded
        if len(live):
            masks[live] = self._upscaled_masks(image[live], hyper[live], shared.grid)
        return masks, iou

    def _transformer(self, shared: SharedImageTokens, prompt: torch.Tensor):
        """The two-way transformer: ``(B, T, C)`` prompt tokens -> updated tokens ``(B, T, C)`` and image
        tokens ``(B, N, C)``."""
        transformer = self.decoder.transformer
        queries, image = prompt, None  # image None: still the shared tokens
        for block in transformer.layers:
            if block.skip_first_layer_pe:
                queries = block.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + prompt
                queries = queries + block.self_attn(q=q, k=q, v=queries)
            queries = block.norm1(queries)
            if image is None:
                queries = queries + _tokens_to_shared_image(block.cross_attn_token_to_image, queries + prompt, shared)
            else:
                image_pe = image + shared.pe
                queries = queries + _tokens_to_image(block.cross_attn_token_to_image, queries + prompt, image_pe,
                                                     image)
            queries = block.norm2(queries)
            queries = block.norm3(queries + block.mlp(queries))
            if image is None:
                update = _image_to_tokens(block.cross_attn_image_to_token, None, queries + prompt, queries,
                                          shared_queries=shared.queries)
                image = shared.tokens + update
            else:
                image = image + _image_to_tokens(block.cross_attn_image_to_token, image_pe, queries + prompt,
                                                 queries)
            image = block.norm4(image)
        queries = queries + _tokens_to_image(transformer.final_attn_token_to_image, queries + prompt,
                                             image + shared.pe, image)
        return transformer.norm_final_attn(queries), image

    def _upscaled_masks(self, image: torch.Tensor, hyper: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """SAM's upscaling head and hypernetwork product: image tokens ``(B, N, C)`` and mask weights
        ``(B, M, C/8)`` -> mask logits ``(B, M, 4h, 4w)``.

        Each transposed convolution (kernel 2, stride 2) maps one pixel to a 2x2 block: a matrix product in
        token layout, sub-pixel offsets kept as extra axes until the end."""
        up1, norm, act1, up2, act2 = self.decoder.output_upscaling
        b, n, _ = image.shape
        c1, c2 = up1.out_channels, up2.out_channels
        w1 = up1.weight.permute(2, 3, 1, 0).reshape(4 * c1, up1.in_channels)  # ((a, b, out), in)
        w2 = up2.weight.permute(2, 3, 1, 0).reshape(4 * c2, c1)
        b1, b2 = up1.bias.repeat(4), up2.bias.repeat(4)
        hyper_t = hyper.transpose(1, 2)
        masks = image.new_empty(b, n, 16, hyper.shape[1], dtype=hyper.dtype)
        # a few rows at a time, so that the 16x larger intermediates stay in the CPU's cache
        for start in range(0, n, self.UPSCALE_ROWS):
            rows = image[:, start:start + self.UPSCALE_ROWS]
            x = F.linear(rows, w1, b1).view(b, rows.shape[1], 4, c1)
            x = act1(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
            x = act2(F.linear(x, w2, b2).view(b, -1, c2))  # rows: (pixel, a, b, c, d)
            masks[:, start:start + self.UPSCALE_ROWS] = (x @ hyper_t).view(b, -1, 16, hyper.shape[1])
        h, w = grid
        m = hyper.shape[1]
        # output row 4i + 2a + c, column 4j + 2b + d for feature cell (i, j) and offsets (a, b), (c, d)
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, m, 4 * h, 4 * w)
