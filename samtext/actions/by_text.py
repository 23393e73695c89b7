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

from .. import names
from ..models import load_clip, load_sam, sam_record
from ..pipelines.text import TextLabeller, negative_subject, parse_prompts
from ..pipelines.text_boxes import BoxLocalizer
from ..pipelines.text_patches import PatchLocalizer
from ..run import driver
from ..settings import RunOptions, TextSettings, signature_with
from ..errors import SamtextError

ACTION = TextSettings.action
CLIP_CONTEXT_TOKENS = 75  # CLIP reads 77 tokens, two of them the start and end markers


@functools.lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def uses_clip_bpe(clip_model: str) -> bool:
    """Whether ``clip_model`` tokenizes with CLIP's own BPE (OpenAI-style ViT-* and RN*, and the tiny presets), not a
    Hugging Face tokenizer of its own."""
    import open_clip

    from ..models import CLIP_PRESETS

    if clip_model in CLIP_PRESETS:
        return True
    config = open_clip.get_model_config(clip_model) or {}
    return not (config.get("text_cfg") or {}).get("hf_tokenizer_name")


def check_prompt_lengths(texts: Sequence[str], what: str = "prompt", template: Optional[str] = None,
                         limit: int = CLIP_CONTEXT_TOKENS, reader: str = "CLIP") -> None:
    """Raises ValueError naming the first prompt that its reader's context cannot hold: CLIP's 77 tokens with the
    template "a photo of a ..." (default), or SAM 3's (``template="{}"``, ``limit`` its tokens less two); the
    tokenizer would silently cut it. Counted with CLIP's BPE, which both read (see :func:`uses_clip_bpe`)."""
    from ..models.clip import PROMPT_TEMPLATE

    template = PROMPT_TEMPLATE if template is None else template
    for text in texts:
        n = len(_bpe().encode(template.format(text)))
        if n > limit:
            raise SamtextError("%s %r is %d %s tokens%s; %s reads at most %d: shorten it"
                               % (what, text[:60] + ("..." if len(text) > 60 else ""), n, reader,
                                  " with its template %r" % template if template != "{}" else "", reader, limit))


def build_labeller(classes, negatives, settings: TextSettings) -> TextLabeller:
    """Loads SAM and CLIP and builds the ``image -> MaskResult`` labeller."""
    s = settings
    if s.localizer == "sam3":  # SAM 3 reads the prompts itself: no CLIP, no separate localizer
        from ..models.sam3_concepts import load_sam3_concepts
        from ..pipelines.text_sam3 import ConceptLabeller

        concepts = load_sam3_concepts(s.sam_model, s.sam_checkpoint, s.device, s.precision)
        return ConceptLabeller(concepts, classes, negatives, s)
    sam = load_sam(s.sam_model, s.sam_checkpoint, s.device, s.precision)
    clip = load_clip(s.clip_model, s.clip_pretrained, s.device, s.precision, s.clip_checkpoint)
    if s.localizer == "boxes":
        where = BoxLocalizer(clip, s)
    else:
        from ..models.gradcam import target_layer

        target_layer(clip.model.visual)  # a tower Grad-CAM cannot explain fails here, once, not on every sample
        where = PatchLocalizer(clip, s)
    return TextLabeller(sam, clip, classes, where, negatives, s)


def text_action(dataset: fo.Dataset, prompts: Union[str, Sequence[str]],
                settings: Optional[TextSettings] = None) -> driver.Action:
    """Checks every argument; returns the :class:`samtext.run.driver.Action` (models load only when the driver
    builds it). Raises ValueError naming the problem; creates nothing."""
    settings = (settings or TextSettings()).check()
    classes = parse_prompts(prompts)
    negatives = parse_prompts(settings.negative_prompts, what="negative prompts", allow_none=True)
    clash = sorted({negative_subject(n).lower() for n in negatives} & {c.lower() for c in classes})
    if clash:
        raise SamtextError("%r is both a prompt and a negative prompt" % clash[0])
    if settings.localizer == "sam3":  # SAM 3 reads 32 tokens, its start and end markers included
        from ..models.sam3_concepts import TEXT_TOKENS as SAM3_TEXT_TOKENS

        for texts, what in ((classes, "prompt"), ([negative_subject(n) for n in negatives], "negative prompt")):
            check_prompt_lengths(texts, what, template="{}", limit=SAM3_TEXT_TOKENS - 2, reader="SAM 3")
    elif uses_clip_bpe(settings.clip_model):
        check_prompt_lengths(classes)
        check_prompt_lengths([negative_subject(n) for n in negatives], "negative prompt")
    recorded = dict(settings.record(), prompts=classes, negative_prompts=negatives)
    def info(labeller):
        return dict(models=dict(sam_record(labeller.segmenter), clip=getattr(labeller.clip, "name", None)))

    hint = {"boxes": "CLIP scored no region above threshold=%s; lower 'threshold', or try localizer='patches' "
                     "(small objects)",
            "patches": "CLIP scored no region above threshold=%%s; lower 'threshold' or 'peak_threshold' (%s)"
                       % settings.peak_threshold,
            "sam3": "SAM 3 scored no instance at threshold=%s; lower 'threshold'"}[settings.localizer] % (
        settings.threshold,)
    return driver.Action(ACTION, classes, recorded, lambda: build_labeller(classes, negatives, settings), info,
                         empty_hint=hint)


def _action(samples, prompts, kwargs):
    run, options = driver.split_run_options(kwargs, out_field=names.TEXT_FIELD)
    settings = TextSettings.from_kwargs(options, "annotate_by_text")
    dataset, _ = driver.sample_collection(samples)
    return text_action(dataset, prompts, settings), run


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
        **kwargs: the action's settings (:class:`samtext.settings.TextSettings`: ``negative_prompts``,
            ``localizer`` ("boxes" or "patches"), ``threshold``, ``max_instances``, the models, ...) and the run
            options (:class:`samtext.settings.RunOptions`; ``out_field`` defaults to "samtext_text").

    Returns:
        a :class:`samtext.run.driver.RunSummary`.
    """
    return driver.run_with_progress_option(iter_annotate_by_text(samples, prompts, **kwargs), progress)


signature_with(annotate_by_text, TextSettings, RunOptions)
