"""The shared-image mask decoder (samtext.models.sam_decoder) gives SAM's decoder module's answers.

Checked on the real ViT-B/L/H decoder architecture (random weights with every bias and norm perturbed, so that a
dropped bias or a misplaced norm would show) and through SamSegmenter on the tiny SAM.
"""

import types

import numpy as np
import pytest
import torch

from samtext.models import SamSegmenter
from samtext.models.sam_decoder import SKIPPED_LOGIT, PromptBatchDecoder
from samtext.models.tiny import build_tiny_sam


@pytest.fixture(scope="module")
def vit_decoder():
    """SAM's decoder and prompt encoder at the sizes every released SAM uses (256 channels, 64x64 grid)."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    with torch.random.fork_rng():
        torch.manual_seed(1)
        prompts = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                mask_in_chans=16).eval()
        decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                              transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                            num_heads=8)).eval()
        with torch.no_grad():
            for module in decoder.modules():
                if isinstance(module, (torch.nn.LayerNorm, torch.nn.Linear, torch.nn.ConvTranspose2d)) \
                        or type(module).__name__ == "LayerNorm2d":
                    module.bias.normal_(0, 0.2)
                    if not isinstance(module, (torch.nn.Linear, torch.nn.ConvTranspose2d)):
                        module.weight.uniform_(0.5, 1.5)
        image = torch.randn(1, 256, 64, 64)
    return decoder, prompts, image


def _sparse(prompts, n, points_per_prompt=1, boxes=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, points_per_prompt, 2, generator=g) * 1024
    labels = torch.randint(0, 2, (n, points_per_prompt), generator=g).int()
    labels[:, 0] = 1
    box = torch.sort(torch.rand(n, 2, 2, generator=g) * 1024, dim=1).values.reshape(n, 4) if boxes else None
    with torch.no_grad():
        return prompts(points=(coords, labels), boxes=box, masks=None)


@pytest.mark.parametrize("n,points,boxes,multimask", [
    (1, 1, False, True), (4, 1, False, True), (3, 1, False, False), (5, 3, False, False), (2, 0, True, False),
    (2, 2, True, True),
])
def test_equals_sam_decoder_module(vit_decoder, n, points, boxes, multimask):
    decoder, prompts, image = vit_decoder
    if points == 0:
        with torch.no_grad():
            box = torch.tensor([[100.0, 200.0, 600.0, 700.0], [0.0, 0.0, 1023.0, 1023.0]])
            sparse, dense = prompts(points=None, boxes=box, masks=None)
    else:
        sparse, dense = _sparse(prompts, n, points, boxes)
    with torch.no_grad():
        want_masks, want_iou = decoder(image, prompts.get_dense_pe(), sparse, dense, multimask)
    fast = PromptBatchDecoder(decoder, prompts.no_mask_embed.weight[0])
    masks, iou = fast(fast.share(image, prompts.get_dense_pe()), sparse, multimask)
    assert masks.shape == want_masks.shape == (len(sparse), 3 if multimask else 1, 256, 256)
    assert iou.shape == want_iou.shape
    scale = want_masks.abs().max().item()
    assert scale > 0.1  # the comparison means something
    assert torch.allclose(masks, want_masks, atol=1e-5 * scale, rtol=0)
    assert torch.allclose(iou, want_iou, atol=1e-5, rtol=0)
    assert ((masks > 0) == (want_masks > 0)).float().mean() > 0.9999


def test_min_iou_skips_the_masks_of_prompts_that_nothing_passes(vit_decoder):
    decoder, prompts, image = vit_decoder
    sparse, _ = _sparse(prompts, 8, seed=3)
    fast = PromptBatchDecoder(decoder, prompts.no_mask_embed.weight[0])
    shared = fast.share(image, prompts.get_dense_pe())
    all_masks, iou = fast(shared, sparse, True)
    threshold = float(iou.max(dim=1).values.median())  # about half the prompts have a mask above it
    masks, gated_iou = fast(shared, sparse, True, min_iou=threshold)
    live = (iou > threshold).any(dim=1)
    assert 0 < int(live.sum()) < len(live)
    assert torch.equal(gated_iou, iou)
    assert torch.allclose(masks[live], all_masks[live], atol=1e-5, rtol=0)
    assert bool((masks[~live] == SKIPPED_LOGIT).all())


def test_bfloat16_copy_agrees_with_the_module_and_returns_float32(vit_decoder):
    """At precision "bf16" the segmenter decodes with a bfloat16 copy of the decoder (about twice as fast on
    CPUs with bf16 units): the masks agree with SAM's fp32 module on all but a few random-weight pixels, the
    outputs are float32, skipped prompts still read SKIPPED_LOGIT exactly, and the model's own decoder is
    untouched."""
    decoder, prompts, image = vit_decoder
    sparse, dense = _sparse(prompts, 6, seed=5)
    with torch.no_grad():
        want_masks, want_iou = decoder(image, prompts.get_dense_pe(), sparse, dense, True)
    sam = types.SimpleNamespace(mask_decoder=decoder, prompt_encoder=prompts)
    fast = PromptBatchDecoder.for_model(sam, torch.bfloat16)
    assert fast.decoder is not decoder and fast.dtype == torch.bfloat16
    assert decoder.iou_token.weight.dtype == torch.float32
    shared = fast.share(image, prompts.get_dense_pe())
    masks, iou = fast(shared, sparse, True)
    assert masks.dtype == iou.dtype == torch.float32 and masks.shape == want_masks.shape
    assert ((masks > 0) == (want_masks > 0)).float().mean() > 0.99
    assert torch.allclose(iou, want_iou, atol=0.05, rtol=0)
    gated, _ = fast(shared, sparse, True, min_iou=float(iou.max()) + 1)
    assert bool((gated == SKIPPED_LOGIT).all())
    # the skip follows the callers' fp32 filter: a threshold just below a prompt's (bf16) best IoU keeps that
    # prompt's masks, though the threshold rounded to bf16 would equal it
    best = iou.max(dim=1).values
    threshold = float(np.nextafter(np.float32(best.median()), np.float32(-1)))
    gated, _ = fast(shared, sparse, True, min_iou=threshold)
    live = (iou > threshold).any(dim=1)
    assert bool(live[best == best.median()].all())
    assert torch.equal(gated[live], masks[live]) and bool((gated[~live] == SKIPPED_LOGIT).all())


def test_segmenter_at_bf16_decodes_in_bf16():
    seg = SamSegmenter(build_tiny_sam(), device="cpu", precision="bf16", name="tiny")
    assert seg.decoder.dtype == torch.bfloat16
    emb = seg.embed(np.random.default_rng(1).integers(0, 255, (90, 140, 3), dtype=np.uint8))
    pred = seg.predict(emb, np.array([[[30, 40]]], dtype=np.float32), np.ones((1, 1)), multimask=True)
    assert pred.low_res_logits.dtype == torch.float32 and pred.masks.shape == (1, 3, 90, 140)


def test_segmenter_uses_it_and_matches_the_module_path():
    seg = SamSegmenter(build_tiny_sam(), device="cpu", precision="fp32", name="tiny")
    assert seg.decoder is not None
    image = np.random.default_rng(0).integers(0, 255, (120, 170, 3), dtype=np.uint8)
    emb = seg.embed(image)
    points = np.array([[[10, 20]], [[100, 60]], [[160, 110]]], dtype=np.float32)
    labels = np.ones((3, 1), dtype=np.int64)
    fast = seg.predict(emb, points, labels, multimask=True)
    assert emb.shared_tokens is not None  # cached for the next prompts of this image
    decoder, seg.decoder = seg.decoder, None
    try:
        slow = seg.predict(emb, points, labels, multimask=True)
    finally:
        seg.decoder = decoder
    assert np.allclose(fast.scores, slow.scores, atol=1e-5)
    assert torch.allclose(fast.low_res_logits, slow.low_res_logits, atol=1e-4)
    assert (fast.masks == slow.masks).mean() > 0.9999
    # a mask prompt goes through SAM's module (its dense embedding differs per prompt) and still works
    refined = seg.predict(emb, points[:1], labels[:1], mask_logits=fast.low_res_logits[:1, :1])
    assert refined.masks.shape == (1, 1, 120, 170)


def test_other_decoders_run_as_they_are():
    sam = build_tiny_sam()
    sam.mask_decoder.output_upscaling = torch.nn.Sequential(*list(sam.mask_decoder.output_upscaling)[:3],
                                                            torch.nn.Upsample(scale_factor=2),
                                                            torch.nn.Conv2d(8, 4, 1), torch.nn.GELU())
    seg = SamSegmenter(sam, device="cpu", precision="fp32", name="custom")
    assert seg.decoder is None
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    pred = seg.predict(seg.embed(image), np.array([[[5, 5]]]), np.array([[1]]), multimask=True)
    assert pred.masks.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("factor,frame", [(4, (952, 1000)), (4, (1024, 1024)), (4, (1021, 333)), (3, (100, 59)),
                                          (2, (64, 64))])
def test_upsampled_areas_count_what_interpolation_gives(factor, frame):
    """The stability score's areas, counted in the low-res frame, equal thresholding F.interpolate's output."""
    import torch.nn.functional as F

    from samtext.models.upsampled_area import upsampled_areas

    side = -(-max(frame) // factor)
    g = torch.Generator().manual_seed(factor)
    yy, xx = torch.meshgrid(torch.arange(side * 1.0), torch.arange(side * 1.0), indexing="ij")
    centres = torch.rand(6, 2, 1, 1, generator=g) * side
    radius = (0.1 + torch.rand(6, 1, 1, generator=g) * 0.4) * side
    blobs = (radius - ((xx - centres[:, 0]) ** 2 + (yy - centres[:, 1]) ** 2).sqrt()) / 2
    logits = torch.cat([blobs + torch.randn(6, side, side, generator=g) * 0.3,  # smooth masks, noisy edges
                        torch.randn(2, side, side, generator=g) * 3,  # noise: every cell is a boundary
                        torch.full((1, side, side), 5.0), torch.full((1, side, side), -5.0)])
    thresholds = (1.0, -1.0, 0.0)
    up = F.interpolate(logits[:, None], scale_factor=factor, mode="bilinear", align_corners=False)
    up = up[:, 0, :frame[0], :frame[1]]
    want = torch.stack([(up > t).flatten(1).sum(1) for t in thresholds], dim=1)
    got = upsampled_areas(logits, factor, frame, thresholds)
    assert got.shape == (10, 3) and got.dtype == torch.int64
    assert torch.equal(got, want)
    assert got[8].tolist() == [frame[0] * frame[1]] * 3 and got[9].tolist() == [0, 0, 0]
    assert upsampled_areas(logits[:0], factor, frame, thresholds).shape == (0, 3)
