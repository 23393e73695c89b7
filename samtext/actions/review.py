"""SDK: review pseudo-labels before training on them.

Example::

    report = samtext.review(dataset, "cat_masks", min_confidence=0.6, compare_field="cat_text")
    view = dataset.load_saved_view(report.view_name)          # "to review", worst first
    train_view = dataset.match_labels(tags=report.reject_tag, fields="cat_masks", bool=False)

Each label of ``field`` gets review attributes (on the ``fo.Segmentation`` itself, so the App's sidebar filters
them and the grid sorts by them):

- ``fg_fraction``: the share of the image its objects cover; ``fragments``: its connected pieces (8-connected,
  pieces under ``min_fragment_pixels`` not counted);
- ``agreement``: with ``compare_field`` (another field labelling the same classes, e.g. the text action beside
  the reference action), the IoU of the two labels over their shared classes (1.0 when both are empty);
- ``review_flags``: what looks wrong: ``low_confidence``, ``empty``, ``tiny``, ``whole_image``, ``fragments``,
  ``disagreement``;
- ``review_score``: in [0, 1], lower is worse: the label's confidence times its agreement, halved for each
  sanity flag (empty excepted: "absent" is a valid answer).

Labels with a flag in ``reject`` get the label tag ``reject_tag`` (default "samtext:reject"; a previous review's
tag is taken off first); approved labels (label tag ``approved_tag``) are never rejected. The saved view
``view_name`` lists the flagged, unapproved samples, worst first.
"""

from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

import fiftyone as fo

from ..images import InputError
from ..names import APPROVED_TAG, REJECT_TAG
from ..run import class_maps as lm
from ..run import driver
from ..run import fields as sds
from ..run import records
from ..settings import REVIEW_FLAGS, ReviewSettings, signature_with
from ..errors import SamtextError

CHUNK = 256  # samples read per database query (masks stay out of memory but for one chunk)


@dataclass
class ReviewReport:
    """What a review found. ``flagged`` counts each flag; ``rejected`` the labels tagged ``reject_tag``."""

    field: str
    reviewed: int = 0
    flagged: Dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    approved: int = 0
    without_label: int = 0
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    reject_tag: str = REJECT_TAG
    view_name: Optional[str] = None
    compare_field: Optional[str] = None
    mean_agreement: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def approved_expression(field: str, approved_tag: str = APPROVED_TAG):
    """A FiftyOne expression true for samples whose ``field`` label a person approved: the label carries
    ``approved_tag``, or its sample does."""
    from fiftyone import ViewField as F

    return F(field + ".tags").contains(approved_tag) | F("tags").contains(approved_tag)


def rejected_expression(field: str, reject_tag: str = REJECT_TAG, approved_tag: str = APPROVED_TAG):
    """A FiftyOne expression true for samples whose ``field`` label is rejected: it carries ``reject_tag`` and no
    person approved it since (an approval, :func:`approved_expression`, overrides a review's rejection)."""
    from fiftyone import ViewField as F

    return F(field + ".tags").contains(reject_tag) & ~approved_expression(field, approved_tag)


def is_rejected(label_tags, sample_tags, reject_tag: Optional[str] = REJECT_TAG,
                approved_tag: str = APPROVED_TAG) -> bool:
    """:func:`rejected_expression` for one label's and its sample's tags, in Python."""
    label_tags, sample_tags = list(label_tags or ()), list(sample_tags or ())
    return bool(reject_tag) and reject_tag in label_tags and approved_tag not in label_tags + sample_tags


def fragment_count(mask: np.ndarray, min_pixels: int) -> int:
    """The number of 8-connected pieces of the ``(H, W)`` bool ``mask`` with at least ``min_pixels`` pixels."""
    import cv2

    if not mask.any():
        return 0
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] >= max(1, min_pixels)))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The IoU of two class maps ``(H, W)`` (same classes, same size), pixels counted where both name the same
    foreground class, over pixels where either has one; "void" pixels (:data:`samtext.run.class_maps.IGNORE`) on
    either side are left out; 1.0 when both are empty."""
    scored = (a != lm.IGNORE) & (b != lm.IGNORE)
    union = np.count_nonzero(((a > 0) | (b > 0)) & scored)
    if union == 0:
        return 1.0
    return float(np.count_nonzero((a == b) & (a > 0) & scored)) / union


def review_score(confidence: Optional[float], agree: Optional[float], flags: Sequence[str]) -> float:
    """Lower is worse: confidence x agreement (each 1 when unknown), halved per sanity flag but ``empty``."""
    score = (1.0 if confidence is None else float(confidence)) * (1.0 if agree is None else float(agree))
    hard = [f for f in flags if f not in ("empty", "low_confidence", "disagreement")]
    return float(np.clip(score * 0.5 ** len(hard), 0.0, 1.0))


def review(
    samples,
    field: str,
    progress: Union[bool, Callable[[int, int], None], None] = None,
    **kwargs,
) -> ReviewReport:
    """Flags the labels of the ``fo.Segmentation`` field ``field`` on ``samples`` (see the module's docstring),
    tags the rejects and saves the "to review" view.

    Arguments:
        samples: a dataset or view.
        field: the pseudo-label field (``fo.Segmentation``).
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: the review's settings (:class:`samtext.settings.ReviewSettings`): ``min_confidence`` (a label
            without a confidence, drawn by a person, is never low), ``min_area``, ``max_area``, ``max_fragments``,
            ``min_fragment_pixels``, ``compare_field`` (``fo.Segmentation`` or ``fo.Detections``; samples where it
            is missing get no agreement), ``min_agreement``, ``targets``, ``compare_targets``, ``reject``,
            ``reject_tag``, ``approved_tag``, ``view_name``.

    Raises:
        ValueError: a bad argument or field, before anything is written.
    """
    s = ReviewSettings.from_kwargs(kwargs, "review")
    targets, compare_targets, compare_field = s.targets, s.compare_targets, s.compare_field
    dataset, samples = driver.sample_collection(samples)
    if lm.field_type(dataset, field) is not fo.Segmentation:
        raise SamtextError("review reads a fo.Segmentation field; %r holds fo.Detections (review the Segmentation "
                         "field the action wrote beside it)" % field)
    names = lm.field_classes(dataset, field, targets) or ["object"]
    reader = lm.ClassMapReader(dataset, field, names, targets)
    other = None
    if compare_field:
        if compare_field == field:
            raise SamtextError("compare_field is the reviewed field itself; give another field")
        lm.field_type(dataset, compare_field, "compare_field")
        shared = lm.match_classes(samples, field, compare_field, None, targets, compare_targets)
        reader = lm.ClassMapReader(dataset, field, shared, targets)
        other = lm.ClassMapReader(dataset, compare_field, shared, compare_targets)
    report = ReviewReport(field=field, reject_tag=s.reject_tag, compare_field=compare_field,
                          flagged={f: 0 for f in REVIEW_FLAGS})
    report.warnings = [n for n in (records.running_note(dataset, f) for f in (field, compare_field) if f) if n]
    events = _review_events(dataset, samples, field, reader, other, compare_field, report, s)
    driver.run_with_progress_option(events, progress)
    sds.declare_attributes(dataset, [field])
    if s.view_name:
        from fiftyone import ViewField as F

        flagged = samples.match(F(field + ".review_flags").length() > 0).match(
            ~approved_expression(field, s.approved_tag))
        dataset.save_view(s.view_name, flagged.sort_by(F(field + ".review_score")), overwrite=True,
                          description="samtext: %s labels flagged by review, worst first" % field)
        report.view_name = s.view_name
    return report


def _flags_of(label, cmap: np.ndarray, agree: Optional[float], limits: ReviewSettings):
    flags = []
    confidence = getattr(label, "confidence", None)
    if limits.min_confidence is not None and confidence is not None and confidence < limits.min_confidence:
        flags.append("low_confidence")
    fg = (cmap > 0) & (cmap != lm.IGNORE)
    fraction = float(fg.mean()) if fg.size else 0.0
    pieces = fragment_count(fg, limits.min_fragment_pixels)
    if fraction == 0.0:
        flags.append("empty")
    elif fraction < limits.min_area:
        flags.append("tiny")
    if fraction > limits.max_area:
        flags.append("whole_image")
    if pieces > limits.max_fragments:
        flags.append("fragments")
    if agree is not None and agree < limits.min_agreement:
        flags.append("disagreement")
    return flags, fraction, pieces, confidence


def _review_events(dataset, samples, field, reader, other, compare_field, report, limits: ReviewSettings):
    ids = samples.values("id")
    columns = ["id", "filepath", "metadata", "tags", field] + ([compare_field] if compare_field else [])
    agreements = []
    yield 0, len(ids)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        rows = zip(*dataset.select(chunk).values(columns))
        updates = {k: {} for k in ("review_flags", "review_score", "fg_fraction", "fragments", "agreement")}
        rejected, cleared = [], []
        for row in rows:
            sid, path, metadata, sample_tags, label = row[:5]
            if label is None:
                report.without_label += 1
                continue
            try:
                size = lm.frame_size(path, metadata, label)
                if size is None:
                    raise InputError("neither its image nor its mask can be read")
                cmap = reader(label, size)
                agree = None
                if other is not None and row[5] is not None:
                    agree = agreement(cmap, other(row[5], cmap.shape))
            except InputError as e:
                report.errors.append("sample %s (%s): %s" % (sid, path, e))
                continue
            flags, fraction, pieces, confidence = _flags_of(label, cmap, agree, limits)
            report.reviewed += 1
            for f in flags:
                report.flagged[f] += 1
            if agree is not None:
                agreements.append(agree)
            approved = limits.approved_tag in (label.tags or []) or limits.approved_tag in (sample_tags or [])
            report.approved += int(approved)
            cleared.append(label.id)
            if not approved and any(f in limits.reject for f in flags):
                rejected.append(label.id)
            for key, value in (("review_flags", flags), ("review_score", review_score(confidence, agree, flags)),
                               ("fg_fraction", fraction), ("fragments", pieces), ("agreement", agree)):
                updates[key][sid] = value
        for key, values in updates.items():
            if values:
                dataset.set_values("%s.%s" % (field, key), values, key_field="id")
        # per chunk, so that an interrupted review leaves each label's flags and tag in step
        if cleared:  # a previous review's verdict goes, then this one's is set
            dataset.select_labels(ids=cleared, fields=field).untag_labels(report.reject_tag, label_fields=[field])
        if rejected:
            dataset.select_labels(ids=rejected, fields=field).tag_labels(report.reject_tag, label_fields=[field])
        report.rejected += len(rejected)
        yield min(start + CHUNK, len(ids)), len(ids)
    report.mean_agreement = float(np.mean(agreements)) if agreements else None


signature_with(review, ReviewSettings)
