"""The fast path of SAM's image encoder, the one cost every action pays per image.

What it changes, each within a tolerance of the plain fp32 encoder that ``bench/bench_encoder.py`` measures:

- **Fused attention.** Every attention block of SAM's ViT runs ``torch.nn.functional.scaled_dot_product_attention``
  with SAM's decomposed relative-position terms passed as its additive mask, instead of materialising the
  attention matrix, adding the terms and taking a softmax in separate passes. The 4 global blocks of a 1024-px
  image (4096 tokens) are cut into chunks of query rows so that the mask holds at most ``MASK_BUDGET`` numbers
  (or one row's, when a row alone is more: a batch of 8 on CUDA).
- **bf16 weights** where the hardware runs bf16 fast (precision "bf16", see :mod:`samtext.models.precision`):
  patch embedding and transformer blocks hold and compute in bfloat16; the neck (two convolutions and their
  layer norms) stays fp32, and the output is fp32.
- **Compilation** (``torch.compile``) only for a run that plans enough images to pay for it: the driver says how
  many images a run will encode (:func:`encoder_workload`), and the encoder compiles on its first call when
  that is at least ``COMPILE_MIN_IMAGES`` for its device (on a CPU, never by default: it did not pay on the
  CPUs measured); once per process and input shape. The first call's
  cost is logged and kept in :attr:`FastEncoder.compile_seconds`. A compiler that fails leaves the eager path.

Other encoders (MobileSAM's TinyViT) get compilation only; they keep bf16 autocast where precision is bf16.

Switch: ``SAMTEXT_FAST_ENCODER=0`` in the environment, or ``load_sam(..., fast_encoder=False)``, gives the plain
encoder under bf16 autocast (or fp32), as samtext ran before. ``SAMTEXT_COMPILE_ENCODER`` = ``auto`` (default),
``always`` or ``never`` overrides the compilation policy.
"""

import contextlib
import functools
import logging
import os
import threading
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from ..errors import SamtextError

logger = logging.getLogger(__name__)

# Numbers in one chunk of the additive attention mask (B * heads * queries * keys): 2^24 is 64 MB in fp32.
MASK_BUDGET = 1 << 24

# A run compiles the encoder when it plans at least this many images; None: never by default. On a 2-core AMD EPYC
# (AVX2) compiling ViT-B took 95 s and the compiled passes were no faster than the eager fast path (9.3-10.9 s
# against 8.5-8.8 s, bench/results/encoder.md), so CPUs do not compile unless told to. On CUDA the anchor
# (segment-anything-fast) gains a few hundredths of a second per image from a compile of about a minute: it pays
# after some thousands of images (an estimate; no GPU was at hand to measure it).
COMPILE_MIN_IMAGES = {"cpu": None, "cuda": 2000}

_workloads = {}  # process-wide (the encoder may run on a loader thread): run token -> planned images
_workload_lock = threading.Lock()


def fast_encoder_default() -> bool:
    """Whether the fast path is on by default: unless ``SAMTEXT_FAST_ENCODER`` is 0, false, off or no."""
    return os.environ.get("SAMTEXT_FAST_ENCODER", "1").strip().lower() not in ("0", "false", "off", "no")


def compile_policy() -> str:
    """``SAMTEXT_COMPILE_ENCODER``: "auto" (default), "always" or "never"."""
    value = os.environ.get("SAMTEXT_COMPILE_ENCODER", "auto").strip().lower()
    if value not in ("auto", "always", "never"):
        raise SamtextError("SAMTEXT_COMPILE_ENCODER must be auto, always or never, got %r" % value)
    return value


@contextlib.contextmanager
def encoder_workload(num_images: int):
    """Tells encoders how many images the run inside the block will encode (the run driver says it), so that
    compilation happens only where it pays. Runs at once (nested, or on several threads) count as the largest."""
    token = object()
    with _workload_lock:
        _workloads[id(token)] = int(num_images)
    try:
        yield
    finally:
        with _workload_lock:
            _workloads.pop(id(token), None)


def planned_images() -> int:
    """The most images a run in progress in this process plans to encode (0 when none says)."""
    with _workload_lock:
        return max(_workloads.values(), default=0)


def rel_pos_bias(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """SAM's decomposed relative-position terms as an additive attention mask.

    Arguments:
        q: ``(B, heads, Lq, C)`` queries (unscaled, as SAM uses them for these terms), ``Lq = q_h * q_w`` tokens
            of a ``(q_h, q_w)`` grid in row-major order (a chunk of whole rows of it).
        rel_h: ``(q_h, k_h, C)`` and rel_w: ``(q_w, k_w, C)``: the embeddings of each query row/column against
            each key row/column (``segment_anything``'s ``get_rel_pos``), rows already cut to the chunk.

    Returns:
        ``(B, heads, Lq, k_h * k_w)`` bias, in ``q``'s dtype. Without autograd it is a buffer this thread reuses:
        the next call of the same shape overwrites it (use it before then, as the attention below does).
    """
    b, heads, _, c = q.shape
    q_h, k_h, _ = rel_h.shape
    q_w, k_w, _ = rel_w.shape
    grid = q.reshape(b * heads, q_h, q_w, c)
    # einsum returns permuted strides; made contiguous, the sum below comes out contiguous too (no copy when it
    # is viewed as the mask)
    along_h = torch.einsum("bhwc,hkc->bhwk", grid, rel_h).contiguous()[:, :, :, :, None]
    along_w = torch.einsum("bhwc,wkc->bhwk", grid, rel_w).contiguous()[:, :, :, None, :]
    shape = (b * heads, q_h, q_w, k_h, k_w)
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        bias = along_h + along_w
    else:  # inference: a fresh mask of hundreds of MB costs more in page faults than the sum itself: reuse one
        bias = torch.add(along_h, along_w, out=_buffer(shape, q.dtype, q.device))
    return bias.view(b, heads, q_h * q_w, k_h * k_w)


_buffers = threading.local()  # per thread: an encoder may run on a loader thread and on the caller's at once


def _buffer(shape, dtype, device) -> torch.Tensor:
    """A tensor of ``shape`` kept for reuse by this thread (its contents are overwritten by each user)."""
    cache = getattr(_buffers, "tensors", None)
    if cache is None:
        cache = _buffers.tensors = {}
    key = (tuple(shape), dtype, torch.device(device), torch.is_inference_mode_enabled())
    if key not in cache:
        cache[key] = torch.empty(shape, dtype=dtype, device=device)
    return cache[key]


@functools.lru_cache(maxsize=None)
def _attention_class():
    from segment_anything.modeling.image_encoder import Attention, get_rel_pos

    class FusedRelPosAttention(Attention):
        """SAM's ``Attention`` computed by ``scaled_dot_product_attention``, the relative-position terms as its
        mask; same parameters, same state dict, same result up to rounding. Input and output ``(B, H, W, dim)``."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, h, w, _ = x.shape
            qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # (B, heads, h * w, C)
            if not self.use_rel_pos:
                out = F.scaled_dot_product_attention(q, k, v)
            else:
                rel_h = get_rel_pos(h, h, self.rel_pos_h).to(q.dtype)
                rel_w = get_rel_pos(w, w, self.rel_pos_w).to(q.dtype)
                rows = max(1, min(h, MASK_BUDGET // max(1, b * self.num_heads * w * h * w)))
                parts = []
                for r0 in range(0, h, rows):  # query rows in chunks: the mask stays within MASK_BUDGET
                    qc = q[:, :, r0 * w:(r0 + rows) * w]
                    bias = rel_pos_bias(qc, rel_h[r0:r0 + rows], rel_w)
                    parts.append(F.scaled_dot_product_attention(qc, k, v, attn_mask=bias))
                out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
            out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
            return self.proj(out)

    return FusedRelPosAttention


def fuse_attention(image_encoder: nn.Module) -> int:
    """Switches every ``segment_anything`` ``Attention`` inside ``image_encoder`` to the fused one, in place (the
    parameters and state dict are unchanged). Returns how many blocks were switched."""
    from segment_anything.modeling.image_encoder import Attention

    fused = _attention_class()
    count = 0
    for module in image_encoder.modules():
        if type(module) is Attention:
            module.__class__ = fused
            count += 1
    return count


class FastEncoder(nn.Module):
    """SAM's image encoder on the fast path. ``forward``: ``(B, 3, S, S)`` float32 normalised, padded input ->
    ``(B, C, h, w)`` float32 features (C=256, h=w=S/16 for SAM and MobileSAM).

    Arguments:
        encoder: SAM's ``ImageEncoderViT`` (fused attention; bf16 patch embedding and blocks at precision "bf16",
            the neck fp32) or another encoder with an ``img_size`` (MobileSAM's TinyViT: compilation only, under
            bf16 autocast at precision "bf16", as the plain path).
        precision: "fp32" or "bf16".
        device: where it runs (the compilation threshold depends on it).
    """

    def __init__(self, encoder: nn.Module, precision: str = "fp32", device="cpu"):
        super().__init__()
        from segment_anything.modeling import ImageEncoderViT

        self.encoder = encoder
        self.img_size = encoder.img_size
        self.precision = precision
        self.device_type = torch.device(device).type
        self.is_vit = isinstance(encoder, ImageEncoderViT)
        self.dtype = torch.bfloat16 if self.is_vit and precision == "bf16" else torch.float32
        self.fused_blocks = 0
        if self.is_vit:
            self.fused_blocks = fuse_attention(encoder)
            for part in (encoder.patch_embed, encoder.blocks):
                part.to(self.dtype)
            if encoder.pos_embed is not None:
                encoder.pos_embed.data = encoder.pos_embed.data.to(self.dtype)
        self._compiled = None
        self._compiled_shapes = set()
        self._compile_failed = False
        self._lock = threading.Lock()
        self.compile_seconds: Optional[float] = None

    def describe(self) -> str:
        """How it runs, for run records: e.g. "fused attention x12, bf16 weights, compiled"."""
        parts = ["fused attention x%d" % self.fused_blocks] if self.fused_blocks else []
        if self.is_vit:
            parts.append("bf16 weights" if self.dtype == torch.bfloat16 else "fp32 weights")
        else:
            parts.append("bf16 autocast" if self.precision == "bf16" else "fp32")
        if self._compiled is not None and not self._compile_failed:
            parts.append("compiled")
        return ", ".join(parts)

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        if not self.is_vit:
            from .precision import autocast

            with autocast(x.device, self.precision):
                return enc(x).float()
        x = enc.patch_embed(x.to(self.dtype))
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for block in enc.blocks:
            x = block(x)
        return enc.neck(x.permute(0, 3, 1, 2).float())

    def wants_compile(self) -> bool:
        policy = compile_policy()
        if policy == "never" or self._compile_failed:
            return False
        if policy == "always":
            return True
        threshold = COMPILE_MIN_IMAGES.get(self.device_type)
        return threshold is not None and planned_images() >= threshold

    def compiles(self) -> bool:
        """Whether calls run (or are about to run) compiled."""
        return not self._compile_failed and (self._compiled is not None or self.wants_compile())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.compiles():
            return self.eager(x)
        with self._lock:
            if self._compiled is None:
                self._compiled = torch.compile(self.eager, dynamic=False)
            shape = tuple(x.shape)
            if shape in self._compiled_shapes:
                compiled = self._compiled
            else:  # the first call of a shape compiles it: time it, fall back to eager when the compiler fails
                start = time.perf_counter()
                try:
                    out = self._compiled(x)
                except Exception as e:  # inductor needs a C++ compiler (CPU) or Triton (CUDA)
                    self._compile_failed = True
                    logger.warning("samtext: compiling the SAM encoder failed (%s: %s); it runs uncompiled",
                                   type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                    return self.eager(x)
                self.compile_seconds = time.perf_counter() - start
                self._compiled_shapes.add(shape)
                logger.info("samtext: compiled the SAM encoder for input %s in %.1f s (first call)", shape,
                            self.compile_seconds)
                return out
        return compiled(x)
