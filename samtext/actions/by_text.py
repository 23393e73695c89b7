"""SDK: "Annotate by text": a prompt such as "car blinker", or several ("car; pedestrian; traffic sign").

Example::

    summary = samtext.annotate_by_text(dataset, "car; pedestrian; traffic sign", out_field="street")
    summary = samtext.annotate_by_text(dataset, "car blinker", localizer="patches", clip_model="RN50")
    summary = samtext.annotate_by_text(dataset, "car", negative_prompts="window", out_field="cars")

Each prompt is a class: the output field is a multi-class ``fo.Segmentation`` (``mask_targets``
``{1: "car", 2: "pedestrian", ...}``, overlaps going to the more confident object) and every object found is a
``fo.Detection`` with its confidence in ``<out_field>_instances``. An image where no prompt is found comes out
empty, with the reason in the label's ``empty_reason``. The pipelines are :mod:`samtext.pipelines.text`; the run
itself (targets, resume, errors, writes, records) is :func:`samtext.run.driver.iter_run`'s.
"""

import functools
from typing import Callable, Optional, Sequence, Union

import fiftyone as fo

from ..run import driver
from ..models import (DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM, check_model_options, checkpoint_name,
                     load_clip, load_sam, sam_record)
from ..pipelines.text import TextLabeller, TextSettings, negative_subject, parse_prompts
from ..pipelines.text_boxes import BoxLocalizer, BoxSettings
from ..pipelines.text_patches import PatchLocalizer, PatchSettings

ACTION = "annotate_by_text"
LOCALIZERS = ("boxes", "patches")
CLIP_CONTEXT_TOKENS = 75  # CLIP reads 77 tokens, two of them the start and end markers


@functools.lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def uses_clip_bpe(clip_model: str) -> bool:
    """Whether ``clip_model`` tokenizes with CLIP's own BPE (OpenAI-style ViT-* and RN*, and the tiny presets), not a
    Hugging Face tokenizer of its own."""
    import open_clip

    from ..models import TINY_CLIPS

    if clip_model in TINY_CLIPS:
        return True
    config = open_clip.get_model_config(clip_model) or {}
    return not (config.get("text_cfg") or {}).get("hf_tokenizer_name")


def check_prompt_lengths(texts: Sequence[str], what: str = "prompt") -> None:
    """Raises ValueError naming the first prompt that CLIP's 77-token context cannot hold (the template "a
    photo of a ..." included); CLIP's tokenizer would silently cut it. Counted with CLIP's BPE (see
    :func:`uses_clip_bpe`)."""
    from ..models.clip import PROMPT_TEMPLATE

    for text in texts:
        n = len(_bpe().encode(PROMPT_TEMPLATE.format(text)))
        if n > CLIP_CONTEXT_TOKENS:
            raise ValueError("%s %r is %d CLIP tokens with its template %r; CLIP reads at most %d: shorten it"
                             % (what, text[:60] + ("..." if len(text) > 60 else ""), n, PROMPT_TEMPLATE,
                                CLIP_CONTEXT_TOKENS))


def build_labeller(classes, negatives, localizer, settings: TextSettings, boxes: BoxSettings,
                   patches: PatchSettings, sam_model=DEFAULT_SAM, sam_checkpoint=None, clip_model=DEFAULT_CLIP,
                   clip_pretrained=DEFAULT_CLIP_PRETRAINED, clip_checkpoint=None, device="auto",
                   precision="auto") -> TextLabeller:
    """Loads SAM and CLIP and builds the ``image -> MaskResult`` labeller."""
    sam = load_sam(sam_model, sam_checkpoint, device, precision)
    clip = load_clip(clip_model, clip_pretrained, device, precision, clip_checkpoint)
    if localizer == "boxes":
        where = BoxLocalizer(clip, settings, boxes)
    else:
        from ..models.gradcam import target_layer

        target_layer(clip.model.visual)  # a tower Grad-CAM cannot explain fails here, once, not on every sample
        where = PatchLocalizer(clip, settings, patches)
    return TextLabeller(sam, clip, classes, where, negatives, settings)


def text_action(
    dataset: fo.Dataset,
    prompts: Union[str, Sequence[str]],
    negative_prompts: Union[str, Sequence[str], None] = None,
    localizer: str = "boxes",
    threshold: float = 0.5,
    region_threshold: Optional[float] = None,
    max_instances: int = 10,
    nms_iou: float = 0.3,
    search_mode: str = "fast",
    max_proposals: int = 48,
    patch_sizes: Optional[Sequence[int]] = None,
    top_k_patches: int = 4,
    peak_threshold: float = 0.5,
    sam_model: str = DEFAULT_SAM,
    sam_checkpoint: Optional[str] = None,
    clip_model: str = DEFAULT_CLIP,
    clip_pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    clip_checkpoint: Optional[str] = None,
    device: str = "auto",
    precision: str = "auto",
) -> driver.Action:
    """Checks every argument; returns the :class:`samtext.run.driver.Action` (models load only when the driver
    builds it). Raises ValueError naming the problem; creates nothing."""
    classes = parse_prompts(prompts)
    negatives = parse_prompts(negative_prompts, what="negative prompts", allow_none=True)
    clash = sorted({negative_subject(n).lower() for n in negatives} & {c.lower() for c in classes})
    if clash:
        raise ValueError("%r is both a prompt and a negative prompt" % clash[0])
    check_model_options(sam_model, clip_model, device, precision)
    if uses_clip_bpe(clip_model):
        check_prompt_lengths(classes)
        check_prompt_lengths([negative_subject(n) for n in negatives], "negative prompt")
    if localizer not in LOCALIZERS:
        raise ValueError("unknown localizer %r; choose 'boxes' (selective search + CLIP) or 'patches' (sliding "
                         "patches + Grad-CAM, for small objects)" % (localizer,))
    settings = TextSettings(threshold=threshold, region_threshold=region_threshold, max_instances=max_instances,
                            nms_iou=nms_iou).check()
    boxes = BoxSettings(mode=search_mode, max_proposals=max_proposals).check()
    patches = PatchSettings(sizes=list(patch_sizes) if patch_sizes else None, top_k=top_k_patches,
                            peak_threshold=peak_threshold).check()
    recorded = dict(
        prompts=classes, negative_prompts=negatives, localizer=localizer, threshold=settings.threshold,
        region_threshold=settings.region_threshold, max_instances=settings.max_instances, nms_iou=settings.nms_iou,
        sam_model=sam_model,
        sam_checkpoint=checkpoint_name(sam_checkpoint), clip_model=clip_model,
        clip_pretrained=clip_pretrained, clip_checkpoint=checkpoint_name(clip_checkpoint),
    )
    if localizer == "boxes":
        recorded.update(search_mode=search_mode, max_proposals=boxes.max_proposals)
    else:
        recorded.update(patch_sizes=patches.sizes, top_k_patches=patches.top_k,
                        peak_threshold=patches.peak_threshold)
    built = {}

    def build():
        built["labeller"] = build_labeller(
            classes, negatives, localizer, settings, boxes, patches, sam_model=sam_model,
            sam_checkpoint=sam_checkpoint, clip_model=clip_model, clip_pretrained=clip_pretrained,
            clip_checkpoint=clip_checkpoint, device=device, precision=precision)
        return built["labeller"]

    def info():
        labeller = built["labeller"]
        return dict(models=dict(sam_record(labeller.segmenter), clip=getattr(labeller.clip, "name", None)))

    return driver.Action(ACTION, classes, recorded, build, info)


def _action(samples, prompts, kwargs):
    run, options = driver.split_run_options(kwargs, out_field="samtext_text")
    dataset, _ = driver.sample_collection(samples)
    return text_action(dataset, prompts, **options), run


def iter_annotate_by_text(samples, prompts, **kwargs) -> driver.Progress:
    """The work of :func:`annotate_by_text`, as a generator of ``(done, total)`` progress that returns the
    :class:`samtext.run.driver.RunSummary`."""
    action, run = _action(samples, prompts, kwargs)
    return (yield from driver.iter_run(samples, action, **run))


def prepare_annotate_by_text(samples, prompts, **kwargs) -> int:
    """Checks a run of :func:`annotate_by_text` and creates its fields and record, labelling nothing (before a
    run split into shards is queued). Returns the number of samples to label."""
    action, run = _action(samples, prompts, kwargs)
    return driver.prepare_outputs(samples, action, **run)


def annotate_by_text(
    samples,
    prompts: Union[str, Sequence[str]],
    progress: Union[bool, Callable[[int, int], None], None] = None,
    **kwargs,
) -> driver.RunSummary:
    """Labels every sample of ``samples`` with what the text ``prompts`` name, found by CLIP and drawn by SAM.

    Arguments:
        samples: a ``fo.Dataset`` or ``fo.DatasetView``.
        prompts: one prompt ("car blinker"), several separated by ``;`` or line breaks, or a list. Each is a
            class of the output mask (its name in ``mask_targets``), at most 255; CLIP reads it as "a photo of
            a <prompt>." (at most 75 tokens).
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: ``negative_prompts`` (things not to label, e.g. "window" or "not the window": they compete
            with the prompts for every region and mask, and give SAM negative points where they win),
            ``localizer`` ("boxes": selective search + CLIP, the default; "patches": sliding patches + Grad-CAM,
            for small objects), ``threshold`` (0.5: the least CLIP probability of the class, against the other
            prompts and background prompts, on an object's masked crop; the decision to keep it),
            ``region_threshold`` (None: SAM looks at the best ``max_instances`` regions of each class; a number: only
            at regions whose crop reaches it), ``max_instances`` (10 per class and image), ``nms_iou`` (0.3),
            ``search_mode`` ("fast" or "quality"), ``max_proposals`` (48 boxes CLIP scores per image),
            ``patch_sizes`` (pixels; default a third of the short side), ``top_k_patches`` (4), ``peak_threshold``
            (0.5 of the map's maximum), ``out_field`` ("samtext_text"), the models (``sam_model``,
            ``sam_checkpoint``, ``clip_model`` such as "ViT-B-32" or "RN50", ``clip_pretrained``,
            ``clip_checkpoint``, ``device``, ``precision``) and the run options ``overwrite``, ``save_instances``,
            ``save_prompts``, ``mask_dir``, ``batch_size``, ``fail_fast``, ``shard`` (see
            :func:`samtext.annotate_by_reference`).

    Returns:
        a :class:`samtext.run.driver.RunSummary`.
    """
    return driver.run_with_progress_option(iter_annotate_by_text(samples, prompts, **kwargs), progress)
