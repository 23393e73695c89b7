"""Every knob of every action, in one place: its name, its default, its check and what the run record keeps.

One dataclass per action. The SDK functions take their knobs as keyword arguments and build the settings with
:meth:`Settings.from_kwargs` (an unknown name is an error that lists the knobs); the operators' forms take their
defaults from here and pass on only what the user set; the CLI (``python -m samtext run ACTION --help``) lists
them from here. Defaults are written once, in this module (models: :mod:`samtext.models.registry`; shared names:
:mod:`samtext.names`).

This module imports no FiftyOne; it reads the model registry (:mod:`samtext.models`, which imports torch).
"""

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple, Union

from . import names
from .errors import SamtextError
from .models.registry import (DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM, DEFAULT_SEGNET, checkpoint_name,
                              sam_spec)

AUTO = "auto"
Gate = Union[str, float, None]  # "auto" (calibrated), a number, or None (off)


def _meta(internal: bool = False, recorded: bool = True) -> dict:
    return dict(internal=internal, recorded=recorded)


def internal(default):
    """A knob the forms do not show (the SDK takes it); recorded only when it differs from its default, so that a
    record written before the knob existed still matches."""
    return field(default=default, metadata=_meta(internal=True))


def not_recorded(default=None):
    """A knob that changes how a run goes, not what it writes (speed, hardware, bookkeeping)."""
    return field(default=default, metadata=_meta(recorded=False))


def number(settings, name: str, kind=float, low=None, high=None, low_open=False, allow_none=False):
    """Checks and converts the knob ``name`` of ``settings`` in place: a number of ``kind`` (int: a whole number)
    in ``[low, high]`` (``low_open``: above ``low``). Booleans and NaN are refused.

    Raises:
        ValueError: naming the knob, the bad value and the range.
    """
    value = getattr(settings, name)
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
            raise TypeError
        converted = float(value)
        if math.isnan(converted):
            raise TypeError
        if kind is int:
            if not converted.is_integer():
                raise TypeError
            converted = int(converted)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise SamtextError("%s must be %s%s, got %r" % (name, what, " or None" if allow_none else "", value)) from None
    below = converted <= low if (low is not None and low_open) else (low is not None and converted < low)
    if below or (high is not None and converted > high):
        if low is not None and high is not None:
            span = ("in (%g, %g]" % (low, high)) if low_open else "between %g and %g" % (low, high)
        elif low is not None:
            span = "above %s" % low if low_open else "at least %s" % low
        else:
            span = "at most %s" % high
        raise SamtextError("%s must be %s, got %r" % (name, span, value))
    setattr(settings, name, converted)
    return converted


def sam3_model(settings, name: str, why: str) -> None:
    """Refuses the knob ``name`` unless it names a SAM 3 model; ``why`` (what needs SAM 3) opens the message.

    Raises:
        ValueError: naming the knob, its value and the fix.
    """
    value = getattr(settings, name)
    if sam_spec(value).family != "sam3":
        raise SamtextError("%s: set %s='sam3' (%s must be a SAM 3 model, got %r)" % (why, name, name, value))


def one_of(settings, name: str, choices: Sequence, allow_none=False, what: Optional[str] = None):
    """Checks that the knob ``name`` is one of ``choices`` (``what``: how the message calls it)."""
    value = getattr(settings, name)
    if (value is None and allow_none) or value in choices:
        return value
    raise SamtextError("unknown %s %r: %s must be one of %s%s" % (what or name, value, name, ", ".join(map(str, choices)),
                                                                 ", or None" if allow_none else ""))


def flag(settings, name: str) -> bool:
    value = getattr(settings, name)
    if not isinstance(value, bool):
        raise SamtextError("%s must be True or False, got %r" % (name, value))
    return value


def optional_tag(settings, name: str, allow_none: bool = True) -> Optional[str]:
    """Checks that the knob ``name`` is a non-empty tag (or None when ``allow_none``)."""
    value = getattr(settings, name)
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SamtextError("%s must be a non-empty tag%s, got %r" % (name, " or None" if allow_none else "", value))
    return value


def check_targets(settings, name: str) -> Optional[Dict[int, str]]:
    """Checks the knob ``name``, a ``{pixel value: class name}`` dict (values 0-255; keys that spell a whole
    number, as JSON gives them, are accepted), or None; converts its keys to ints.

    Raises:
        SamtextError: not a dict, a map the other way round (``{"horse": 255}``), a value out of 0-255, an empty
            name; naming the knob and the entry.
    """
    value = getattr(settings, name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SamtextError("%s must be a dict {pixel value: class name}, e.g. {255: 'cat'}, got %r" % (name, value))
    out = {}
    for key, cls in value.items():
        try:
            if isinstance(key, bool) or not float(key).is_integer():
                raise ValueError
            pixel = int(float(key))
        except (TypeError, ValueError):
            hint = (" (the other way round: {%r: %r})" % (cls, key)) if isinstance(cls, (int, float)) else ""
            raise SamtextError("%s maps pixel values to class names, e.g. {255: 'horse'}; got the key %r%s"
                               % (name, key, hint)) from None
        if not 0 <= pixel <= 255:
            raise SamtextError("%s: pixel value %r is outside 0-255" % (name, key))
        if not isinstance(cls, str) or not cls.strip():
            raise SamtextError("%s: the class name of pixel value %r must be a non-empty string, got %r"
                               % (name, key, cls))
        out[pixel] = cls
    setattr(settings, name, out)
    return out


def _writable_parent(path: str) -> Optional[str]:
    """The nearest existing folder at or above ``path``, or None when a file stands in the way."""
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent if os.path.isdir(parent) else None


def _path_knob(settings, name: str, what: str) -> Optional[str]:
    """The knob ``name`` as an absolute path (None when unset). Raises SamtextError when it is not a path."""
    value = getattr(settings, name)
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise SamtextError("%s must be a %s path, got %r" % (name, what, value))
    return os.path.abspath(os.path.expanduser(str(value)))


def check_folder(settings, name: str) -> Optional[str]:
    """Checks the knob ``name``, a folder samtext writes into (made when missing), or None; makes it absolute.

    Raises:
        SamtextError: not a path; a file, or under one; not writable. Naming the knob and the path.
    """
    path = _path_knob(settings, name, "folder")
    if path is None:
        return None
    parent = _writable_parent(path)
    if parent is None or (os.path.exists(path) and not os.path.isdir(path)):
        raise SamtextError("%s %s is (or is under) a file, not a folder: give a folder" % (name, path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SamtextError("%s %s cannot be written (permission denied on %s): give a folder you can write"
                           % (name, path, parent))
    setattr(settings, name, path)
    return path


def check_file_path(settings, name: str) -> Optional[str]:
    """Checks the knob ``name``, a file samtext writes (its folder made when missing), or None; makes it absolute.

    Raises:
        SamtextError: a folder; under a file; not writable. Naming the knob and the path.
    """
    path = _path_knob(settings, name, "file")
    if path is None:
        return None
    if os.path.isdir(path):
        raise SamtextError("%s %s is a folder; give the file's name" % (name, path))
    parent = _writable_parent(os.path.dirname(path))
    if parent is None:
        raise SamtextError("%s %s is under a file, not a folder" % (name, path))
    if (os.path.exists(path) and not os.access(path, os.W_OK)) or not os.access(parent, os.W_OK | os.X_OK):
        raise SamtextError("%s %s cannot be written (permission denied): give a path you can write" % (name, path))
    setattr(settings, name, path)
    return path


def check_gate(value: Gate, name: str = "min_similarity") -> Gate:
    """``value`` as a gate: "auto", a number, or None (off)."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, bool):
        raise SamtextError("%s must be 'auto', a number or None, got %r" % (name, value))
    try:
        gate = float(value)
    except (TypeError, ValueError):
        raise SamtextError("%s must be 'auto', a number or None, got %r" % (name, value)) from None
    if math.isnan(gate):
        raise SamtextError("%s must be 'auto', a number or None, got %r" % (name, value))
    return gate


class Settings:
    """What every settings dataclass shares: its knobs, their defaults, building from keyword arguments, the check
    and the run record's dict. A subclass is a dataclass whose fields are the knobs, each with its default."""

    action = ""  # the action's name, for messages

    @classmethod
    def knobs(cls, shown_only: bool = False) -> Tuple[str, ...]:
        """The knobs' names (``shown_only``: without the internal ones the forms do not show)."""
        return tuple(f.name for f in dataclasses.fields(cls) if not (shown_only and f.metadata.get("internal")))

    @classmethod
    def default(cls, name: str):
        """The default of the knob ``name``."""
        f = cls.__dataclass_fields__[name]
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default

    @classmethod
    def from_kwargs(cls, kwargs: dict, what: Optional[str] = None):
        """The settings of ``kwargs`` (every other knob at its default), checked.

        Raises:
            ValueError: a name that is no knob of the action (the knobs listed), or a bad value (see :meth:`check`).
        """
        unknown = sorted(set(kwargs) - set(cls.knobs()))
        if unknown:
            raise SamtextError("unknown option %r for %s; its options are %s (see samtext.settings.%s)"
                             % (unknown[0], what or cls.action, ", ".join(cls.knobs()), cls.__name__))
        return cls(**kwargs).check()

    def check(self):
        """Raises ValueError naming the first bad knob, its value and what it must be; converts numbers to their
        types. Returns self."""
        return self

    def record(self) -> dict:
        """The knobs that shape the labels, as the run record keeps them (a resumed run must have the same)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.metadata.get("recorded", True):
                continue
            if f.metadata.get("internal") and value == self.default(f.name):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


# ------------------------------------------------------------------------------------------- shared blocks


@dataclass
class Hardware(Settings):
    """Where models run. ``device``: "auto" (CUDA when available), "cpu", "cuda", "cuda:1"; ``precision``: "auto"
    (bf16 where the hardware runs it fast), "fp32" or "bf16"."""

    device: str = not_recorded(AUTO)
    precision: str = not_recorded(AUTO)

    def check(self):
        from .models import check_hardware

        check_hardware(self.device, self.precision)
        return super().check()


@dataclass
class ModelSettings(Hardware):
    """The models an action runs: ``sam_model`` (a name of :data:`samtext.models.registry.SAM_MODELS`),
    ``sam_checkpoint`` (a weights file; default: found or downloaded), ``clip_model`` (an open_clip name such as
    "ViT-B-32" or "RN50", or a tiny preset), ``clip_pretrained`` (an open_clip weights tag or a file path),
    ``clip_checkpoint`` (a local file of the tag's weights)."""

    sam_model: str = DEFAULT_SAM
    sam_checkpoint: Optional[str] = None
    clip_model: str = DEFAULT_CLIP
    clip_pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED
    clip_checkpoint: Optional[str] = None

    def uses_clip(self) -> bool:
        """Whether the action runs CLIP with these settings (its CLIP knobs are checked and recorded only then)."""
        return True

    def check(self):
        from .models import check_model_options

        check_model_options(self.sam_model, self.clip_model if self.uses_clip() else None, self.device, self.precision)
        return self

    def record(self) -> dict:
        out = super().record()
        out["sam_checkpoint"] = checkpoint_name(self.sam_checkpoint)
        if self.uses_clip():
            out["clip_checkpoint"] = checkpoint_name(self.clip_checkpoint)
        else:
            for name in ("clip_model", "clip_pretrained", "clip_checkpoint"):
                out.pop(name, None)
        return out


@dataclass
class RunOptions(Settings):
    """How the run driver labels a view (:func:`samtext.run.driver.iter_run`): ``out_field`` (default: the
    action's own field), ``overwrite`` (relabel samples that have it, and allow other settings than the run that
    wrote it), ``save_prompts``/``save_instances`` (write ``<out_field>_prompts``/``_instances`` too), ``mask_dir`` (PNG files there instead of masks in the database), ``batch_size`` (samples
    per database write), ``fail_fast`` (stop when the first this many samples all fail; 0: never), ``shard``
    (``(index, count)``: label only that shard), ``ray_address`` (label on a Ray cluster: "local" starts one in
    this process, "auto" joins this machine's, "ray://host:10001" a remote one; None: here), ``ray_actors`` (actors
    there; default: the cluster's GPUs, else its CPUs) and ``ray_gpus_per_actor`` (default 1 where it has GPUs).
    See :mod:`samtext.run.ray_labeller`."""

    out_field: Optional[str] = None
    overwrite: bool = False
    save_prompts: bool = False
    save_instances: bool = True
    mask_dir: Optional[str] = None
    batch_size: int = 16
    fail_fast: int = 10
    shard: Optional[Sequence[int]] = None
    ray_address: Optional[str] = None
    ray_actors: Optional[int] = None
    ray_gpus_per_actor: Optional[float] = None

    def check(self):
        number(self, "batch_size", int, low=1)  # out_field is checked with the other fields (run.fields)
        number(self, "fail_fast", int, low=0)
        number(self, "ray_actors", int, low=1, allow_none=True)
        number(self, "ray_gpus_per_actor", float, low=0.0, allow_none=True)
        if self.ray_address is not None:
            if not isinstance(self.ray_address, str) or not self.ray_address.strip():
                raise SamtextError("ray_address must be 'local', 'auto' or a Ray address such as "
                                   "'ray://host:10001', got %r" % (self.ray_address,))
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise SamtextError("ray_address=%r needs Ray: pip install 'samtext[ray]' (ray 2.x)"
                                   % (self.ray_address,))
        check_folder(self, "mask_dir")
        for name in ("overwrite", "save_prompts", "save_instances"):
            setattr(self, name, bool(getattr(self, name)))
        if self.shard is not None:
            try:
                index, count = (int(v) for v in self.shard)
            except (TypeError, ValueError):
                raise SamtextError("shard must be (index, count), got %r" % (self.shard,)) from None
            if count < 1 or not 0 <= index < count:
                raise SamtextError("shard (index, count) needs 0 <= index < count, got %r" % (self.shard,))
            self.shard = (index, count)
        return self


# ------------------------------------------------------------------------------------------------ actions

REFERENCE_METHODS = ("prior", "stitch", "sam3")
STITCH_CLIP_THRESHOLD = 0.5  # stitch runs CLIP anyway, and its window gate alone lets look-alikes through


@dataclass
class ReferenceSettings(ModelSettings):
    """"Annotate by reference mask" (:func:`samtext.annotate_by_reference`).

    Attributes:
        method: "prior" (PerSAM-style: SAM features pooled under the mask, matched on each target), "stitch"
            (reference and target side by side, CLIP-scored windows as SAM's points) or "sam3" (reference and
            target on one canvas, the reference's box as SAM 3's visual exemplar; needs ``sam_model="sam3"``).
        reference_class_value: the object's pixel value in a multi-class reference mask.
        refine: prior: a second SAM pass with each mask's box.
        min_similarity: the absent-object gate: "auto" (calibrated on the references; sam3: SAM 3's own instance
            threshold 0.5), a number (sam3: SAM 3's score in [0, 1]), or None (off: always label the best match).
        max_instances: the most objects per image.
        clip_threshold: drop each object whose masked crop CLIP does not see as the class (a fraction of the
            reference's own CLIP score); "auto": 0.5 for stitch, off for prior; None: off.
        num_prompt_sets: stitch: the prompt sets SAM tries per image.
    """

    action = "annotate_by_reference"
    method: str = "prior"
    reference_class_value: Optional[int] = None
    refine: bool = True
    min_similarity: Gate = AUTO
    max_instances: int = 10
    clip_threshold: Union[str, float, None] = AUTO
    num_prompt_sets: int = 4

    def uses_clip(self) -> bool:
        return self.method == "stitch" or self.clip_threshold is not None

    def check(self):
        one_of(self, "method", REFERENCE_METHODS)
        if self.method == "sam3":
            sam3_model(self, "sam_model", "method='sam3' finds the reference's object with SAM 3")
        if self.clip_threshold == AUTO:
            self.clip_threshold = STITCH_CLIP_THRESHOLD if self.method == "stitch" else None
        number(self, "clip_threshold", float, 0.0, 1.0, allow_none=True)
        given, self.min_similarity = self.min_similarity, check_gate(self.min_similarity)
        if self.method == "sam3" and isinstance(self.min_similarity, float) and not 0.0 <= self.min_similarity <= 1.0:
            raise SamtextError("min_similarity with method='sam3' is SAM 3's score, in [0, 1]; got %r" % (given,))
        number(self, "max_instances", int, low=1)
        number(self, "num_prompt_sets", int, low=1)
        self.reference_class_value = check_class_value(self.reference_class_value)
        self.refine = bool(self.refine)
        return super().check()

    def record(self) -> dict:
        out = super().record()
        if self.method != "stitch":
            out.pop("num_prompt_sets")
        return out


def check_class_value(value) -> Optional[int]:
    """A pixel value (``reference_class_value``, ``mask_class``) as an int (a string that spells one is accepted),
    or None.

    Raises:
        ValueError: not a whole non-negative pixel value.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        converted = float(value)
    except (TypeError, ValueError):
        converted = None
    if isinstance(value, bool) or converted is None or not converted.is_integer() or converted < 0:
        raise SamtextError("reference_class_value must be a non-negative whole pixel value such as 255, got %r"
                         % (value,))
    return int(converted)


TEXT_LOCALIZERS = ("boxes", "patches", "sam3")
SEARCH_MODES = ("fast", "quality")


@dataclass
class TextSettings(ModelSettings):
    """"Annotate by text" (:func:`samtext.annotate_by_text`) and its pipelines (:mod:`samtext.pipelines.text`).

    Attributes:
        negative_prompts: what not to label ("window; reflection", or "not the window"): they compete with the
            prompts for every region and mask, and give SAM negative points where they win.
        localizer: "boxes" (selective search + CLIP: objects of any size), "patches" (sliding patches +
            Grad-CAM: small objects) or "sam3" (SAM 3's concept prompts: every instance of the phrase; needs
            ``sam_model="sam3"``, no CLIP).
        threshold: the least CLIP probability of its class (softmax against the other prompts, the negatives and
            the background prompts) on an object's masked crop for the object to be kept; with "sam3", the least
            SAM 3 score (query probability times the concept's presence in the image).
        region_threshold: the least probability a region's crop needs for SAM to look there (None: at the best
            ``max_instances`` regions of each class).
        max_instances: the most objects per class and image.
        nms_iou: regions of one class overlapping a better one by more than this box IoU are the same object.
        search_mode: boxes: selective search's "fast" or "quality" mode.
        max_proposals: boxes: the regions CLIP scores per image.
        patch_sizes: patches: their sides in pixels (None: a third of the short side, at least ``min_patch``).
        top_k_patches: patches: the most patches per class that Grad-CAM explains.
        peak_threshold: patches: a peak must reach this fraction of its class map's maximum.
        mask_iou: masks of one class overlapping a better one by more than this mask IoU are dropped.
        context: the margin of CLIP's crops, a fraction of the box's size.
        max_side, min_box, dedupe_iou: boxes: selective search runs on the image scaled to at most ``max_side``
            pixels; boxes under ``min_box`` pixels a side are dropped, and boxes overlapping a kept one by more
            than ``dedupe_iou`` too.
        overlap, min_patch, min_distance, map_side: patches: the fraction of a patch its neighbour overlaps, the
            smallest default patch, pixels between two peaks (None: a twentieth of the long side, at least 8), the
            long side of the saliency maps.
    """

    action = "annotate_by_text"
    negative_prompts: Union[str, Sequence[str], None] = None
    localizer: str = "boxes"
    threshold: float = 0.5
    region_threshold: Optional[float] = None
    max_instances: int = 10
    nms_iou: float = 0.3
    search_mode: str = "fast"
    max_proposals: int = 48
    patch_sizes: Optional[Sequence[int]] = None
    top_k_patches: int = 4
    peak_threshold: float = 0.5
    mask_iou: float = internal(0.6)
    context: float = internal(0.1)
    max_side: int = internal(384)
    min_box: int = internal(4)
    dedupe_iou: float = internal(0.8)
    overlap: float = internal(0.5)
    min_patch: int = internal(64)
    min_distance: Optional[int] = internal(None)
    map_side: int = internal(512)

    def uses_clip(self) -> bool:
        return self.localizer != "sam3"

    def check(self):
        one_of(self, "localizer", TEXT_LOCALIZERS)
        if self.localizer == "sam3":
            sam3_model(self, "sam_model", "localizer='sam3' reads the prompt with SAM 3")
        one_of(self, "search_mode", SEARCH_MODES, what="selective search mode")
        for name in ("threshold", "nms_iou", "mask_iou", "context"):
            number(self, name, float, 0.0, 1.0)
        number(self, "region_threshold", float, 0.0, 1.0, allow_none=True)
        number(self, "max_instances", int, low=1)
        number(self, "max_proposals", int, low=1)
        number(self, "max_side", int, low=32)
        number(self, "min_box", int, low=0)
        number(self, "dedupe_iou", float, 0.0, 1.0, low_open=True)
        number(self, "top_k_patches", int, low=1)
        number(self, "min_patch", int, low=1)
        number(self, "map_side", int, low=1)
        number(self, "min_distance", int, low=1, allow_none=True)
        number(self, "peak_threshold", float, 0.0, 1.0, low_open=True)
        number(self, "overlap", float, 0.0, 1.0)
        if self.overlap >= 1.0:
            raise SamtextError("overlap must be in [0, 1), got %r" % (self.overlap,))
        if self.patch_sizes is not None:
            given = [self.patch_sizes] if isinstance(self.patch_sizes, (int, float)) else list(self.patch_sizes)
            whole = [v for v in given if not isinstance(v, bool) and isinstance(v, (int, float)) and float(v).is_integer()]
            if not given or len(whole) < len(given) or min(whole) < 8:
                raise SamtextError("patch_sizes: patch sizes must be whole pixels of at least 8, got %r" % (self.patch_sizes,))
            self.patch_sizes = [int(v) for v in whole]
        return super().check()

    def record(self) -> dict:
        out = super().record()
        out.pop("negative_prompts")  # the action records them parsed
        drop = {"boxes": ("patch_sizes", "top_k_patches", "peak_threshold"),
                "patches": ("search_mode", "max_proposals"),
                "sam3": ("patch_sizes", "top_k_patches", "peak_threshold", "search_mode", "max_proposals",
                         "region_threshold", "nms_iou")}[self.localizer]
        for name in drop:
            out.pop(name, None)
        return out


EMBEDDERS = ("clip", "sam")


@dataclass
class ProposalSettings(ModelSettings):
    """"Compute mask proposals" (:func:`samtext.compute_mask_proposals`) and its generator
    (:class:`samtext.pipelines.proposals.ProposalGenerator`, SAM's automatic mask generator's names and defaults,
    except the grid, whose default depends on the device).

    Attributes:
        points_per_side: the prompt grid is ``points_per_side x points_per_side`` points over the image
            (None: 32 on CUDA, 16 on CPU).
        points_per_batch: prompts decoded per decoder call, each giving 3 masks (None: 64 on CUDA; on a CPU 8 at
            bf16 and 2 at fp32, where the decoder costs less per prompt in small batches that stay in the cache).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0: no filter, not even of negative ones).
        stability_score_thresh: keep masks whose stability score is at least this (0: no filter).
        stability_score_offset: the logit offset of the stability score.
        box_nms_thresh: box IoU above which the lower-scored of two masks is dropped.
        min_area: drop proposals smaller than this, in pixels of the image.
        max_proposals: keep at most this many per image, the best by predicted IoU (None: all).
        embedder: "clip" (CLIP on each proposal's masked crop), "sam" (SAM's features pooled under it) or None.
        crop_context: the margin of the CLIP crops, a fraction of the box.
        embeddings_dir: the folder of the embedding store (default: beside the dataset, under ~/.samtext).
        fill_gaps: a second pass prompts the points of a grid twice as dense that no mask of the first covers
            ("auto": on the device's default grid when it is coarser than 32 a side, i.e. CPU's 16).
    """

    action = "compute_mask_proposals"
    points_per_side: Optional[int] = None
    points_per_batch: Optional[int] = not_recorded(None)
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_area: int = 100
    max_proposals: Optional[int] = 200
    embedder: Optional[str] = "clip"
    crop_context: float = 0.1
    embeddings_dir: Optional[str] = None
    fill_gaps: Union[str, bool] = internal(AUTO)

    def uses_clip(self) -> bool:
        return self.embedder == "clip"

    def fills_gaps(self, side: int) -> bool:
        """Whether a second pass prompts the uncovered points of a grid twice as dense: ``fill_gaps`` True/False,
        or "auto": when the grid is the device's default and coarser than 32 points a side (CPU's 16); a grid the
        caller set is used as SAM's generator would."""
        if self.fill_gaps == AUTO:
            return self.points_per_side is None and side < 32
        return bool(self.fill_gaps)

    def check(self):
        number(self, "points_per_side", int, 1, 128, allow_none=True)
        number(self, "points_per_batch", int, low=1, allow_none=True)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            number(self, name, float, 0.0, 1.0)
        number(self, "stability_score_offset", float, low=0.0, low_open=True)
        number(self, "min_area", int, low=0)
        number(self, "max_proposals", int, low=1, allow_none=True)
        one_of(self, "embedder", EMBEDDERS, allow_none=True)
        number(self, "crop_context", float, 0.0, 1.0)
        check_folder(self, "embeddings_dir")
        if self.fill_gaps != AUTO:
            flag(self, "fill_gaps")
        return super().check()

    def record(self) -> dict:
        out = super().record()
        out["embeddings_dir"] = os.path.abspath(os.path.expanduser(self.embeddings_dir)) if self.embeddings_dir else None
        if not self.uses_clip():
            out.pop("crop_context")
        return out

    def grid_side(self, device) -> int:
        if self.points_per_side is not None:
            return int(self.points_per_side)
        return 32 if str(device).startswith("cuda") else 16

    def batch_size(self, device, precision: str = "fp32") -> int:
        """Prompts per decoder call: ``points_per_batch``, or the device's default (64 on CUDA; on a CPU 8 at
        bf16, whose matrix units want larger products, and 2 at fp32, where small batches stay in the cache;
        bench/results/proposals_fill.md)."""
        if self.points_per_batch is not None:
            return int(self.points_per_batch)
        if str(device).startswith("cuda"):
            return 64
        return 8 if precision == "bf16" else 2


FIT_CAP = 20000  # vectors a clustering or a map is fit on; the rest are assigned or placed


@dataclass
class MapSettings(Settings):
    """"Compute proposal map" (:func:`samtext.compute_proposal_map`): ``brain_key`` (default
    ``<field>_map``), ``num_clusters`` (k of k-means, or "auto": by silhouette score), ``cluster_attribute`` (the
    proposals' attribute that gets the cluster id), ``fit_cap`` (the most proposals the clusters and the map are fit
    on; the rest are assigned and placed), ``seed``, ``overwrite`` (replace an existing brain run of that key)."""

    action = "compute_proposal_map"
    brain_key: Optional[str] = None
    num_clusters: Union[int, str] = AUTO
    cluster_attribute: str = "cluster"
    fit_cap: int = FIT_CAP
    seed: int = 51
    overwrite: bool = False

    def check(self):
        if self.num_clusters != AUTO:
            number(self, "num_clusters", int, low=1)
        number(self, "fit_cap", int, low=1)
        number(self, "seed", int)
        flag(self, "overwrite")
        return self


EXAMPLE_SCORINGS = ("max", "prototype")
EXAMPLE_METHODS = ("embeddings", "sam3")


@dataclass
class ExamplesSettings(Hardware):
    """"Annotate by few-shot examples" (:func:`samtext.annotate_by_examples`): ``proposals_field``, ``method``
    ("embeddings": each target's stored proposals matched to the exemplars' embeddings, no model run; "sam3": the
    exemplars shown to SAM 3 on a collage beside each target, :mod:`samtext.pipelines.examples_sam3`),
    ``threshold`` (embeddings: the least cosine similarity to the exemplars), ``scoring`` ("max": the closest
    exemplar; "prototype": their mean), ``top_k`` (the most objects per class and image; None: all),
    ``sam3_model`` and ``sam3_threshold`` (sam3: the model and the least SAM 3 score; ``sam_checkpoint`` is then its
    weights folder). For exemplars given as
    masks, which are embedded as the proposals were: the proposals' weights files when they were given as files
    (``sam_checkpoint``, ``clip_checkpoint``), ``device`` and ``precision``."""

    action = "annotate_by_examples"
    proposals_field: str = names.PROPOSALS_FIELD
    method: str = "embeddings"
    threshold: float = 0.85
    scoring: str = "max"
    top_k: Optional[int] = None
    sam3_model: str = "sam3"
    sam3_threshold: float = 0.5
    sam_checkpoint: Optional[str] = not_recorded(None)
    clip_checkpoint: Optional[str] = not_recorded(None)

    def check(self):
        one_of(self, "method", EXAMPLE_METHODS)
        if self.method == "sam3":
            sam3_model(self, "sam3_model", "method='sam3' shows the exemplars to SAM 3")
            number(self, "sam3_threshold", float, 0.0, 1.0)
        if self.threshold is None:
            raise SamtextError("threshold is needed: the least cosine similarity to the exemplars, e.g. 0.85")
        number(self, "threshold", float, -1.0, 1.0)
        one_of(self, "scoring", EXAMPLE_SCORINGS)
        number(self, "top_k", int, low=1, allow_none=True)
        return super().check()

    def record(self) -> dict:
        out = super().record()
        for name in (("threshold", "scoring") if self.method == "sam3" else ("sam3_model", "sam3_threshold")):
            out.pop(name, None)
        return out


REVIEW_FLAGS = ("low_confidence", "empty", "tiny", "whole_image", "fragments", "disagreement")


@dataclass
class ReviewSettings(Settings):
    """"Review pseudo-labels" (:func:`samtext.review`).

    Attributes:
        min_confidence: below it, ``low_confidence`` (None: no confidence check).
        min_area, max_area: a label covering less (but more than nothing) / more than this fraction of the image
            is ``tiny`` / ``whole_image``.
        max_fragments: more pieces than this is ``fragments``; pieces under ``min_fragment_pixels`` do not count.
        compare_field: another field labelling the same classes; their IoU is ``agreement``, below
            ``min_agreement`` it is ``disagreement``.
        targets, compare_targets: ``{value: name}`` naming the masks of the field / ``compare_field``.
        reject: the flags that tag a label ``reject_tag``.
        approved_tag: labels (or samples) with this tag are reviewed but never rejected.
        view_name: the saved view of flagged, unapproved samples, worst first (None: none saved).
    """

    action = "review"
    min_confidence: Optional[float] = 0.5
    min_area: float = 0.001
    max_area: float = 0.95
    max_fragments: int = 5
    min_fragment_pixels: int = 64
    compare_field: Optional[str] = None
    min_agreement: float = 0.5
    targets: Optional[Dict] = None
    compare_targets: Optional[Dict] = None
    reject: Sequence[str] = ("low_confidence", "tiny", "whole_image", "fragments", "disagreement")
    reject_tag: str = names.REJECT_TAG
    approved_tag: str = names.APPROVED_TAG
    view_name: Optional[str] = names.REVIEW_VIEW

    def check(self):
        self.reject = [self.reject] if isinstance(self.reject, str) else list(self.reject or ())
        unknown = [f for f in self.reject if f not in REVIEW_FLAGS]
        if unknown:
            raise SamtextError("unknown review flag %r; flags are %s" % (unknown[0], ", ".join(REVIEW_FLAGS)))
        number(self, "min_area", float, 0.0, 1.0)
        number(self, "max_area", float, 0.0, 1.0)
        if not self.min_area < self.max_area:
            raise SamtextError("need 0 <= min_area < max_area <= 1, got %r and %r" % (self.min_area, self.max_area))
        number(self, "min_confidence", float, 0.0, 1.0, allow_none=True)
        number(self, "max_fragments", int, low=1)
        number(self, "min_fragment_pixels", int, low=0)
        number(self, "min_agreement", float, 0.0, 1.0)
        if not self.reject_tag or not isinstance(self.reject_tag, str):
            raise SamtextError("reject_tag must be a non-empty label tag")
        check_targets(self, "targets")
        check_targets(self, "compare_targets")
        return self


@dataclass
class RerunSettings(Settings):
    """"Rerun from approved labels" (:func:`samtext.rerun_from_approved`): ``approved_tag`` (the label or sample
    tag of an approved label) and ``max_approved`` (use at most this many approved labels, a seeded sample of them
    when there are more: each costs an image read, and as a reference an encoder pass). Other keyword arguments
    change the action's own settings (:class:`ReferenceSettings`, :class:`ExamplesSettings`)."""

    action = "rerun_from_approved"
    approved_tag: str = names.APPROVED_TAG
    max_approved: int = 32

    def check(self):
        number(self, "max_approved", int, low=1)
        if not self.approved_tag or not isinstance(self.approved_tag, str):
            raise SamtextError("approved_tag must be a non-empty tag")
        return self


@dataclass
class TrainRecipe(Settings):
    """What shapes a trained network (a resumed training must have the same): ``arch`` (a name of
    :data:`samtext.models.registry.SEGNETS`), ``image_size`` (the square input side; images are letterboxed to it),
    ``epochs``, ``batch_size``, ``lr`` (peak AdamW learning rate), ``weight_decay``, ``warmup`` (the fraction of
    steps over which the learning rate rises to ``lr``; cosine decay to ``lr * final_lr`` follows),
    ``scale_range``, ``flip``, ``jitter`` (augmentation), ``seed`` (the split, the initial weights, the data order
    and augmentation), ``backbone_weights`` ("auto": ImageNet weights when torchvision's file is cached, else from
    scratch; "imagenet": downloaded when missing; None or "none": from scratch)."""

    arch: str = DEFAULT_SEGNET
    image_size: int = 320
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = internal(1e-4)
    warmup: float = internal(0.1)
    final_lr: float = internal(0.01)
    scale_range: Tuple[float, float] = internal((0.75, 1.25))
    flip: bool = internal(True)
    jitter: float = internal(0.2)
    seed: int = 0
    backbone_weights: Optional[str] = AUTO

    def check(self):
        from .models.segnets import check_arch, check_backbone_weights

        check_arch(self.arch)
        self.backbone_weights = check_backbone_weights(self.backbone_weights)
        number(self, "image_size", int, low=32)
        number(self, "epochs", int, low=1)
        number(self, "batch_size", int, low=1)
        number(self, "seed", int)
        if self.arch.startswith("deeplabv3") and self.batch_size < 2:
            raise SamtextError("%s needs batch_size >= 2 (its pooling branch normalises over the batch)" % self.arch)
        number(self, "lr", float, low=0.0, low_open=True)
        for name in ("weight_decay", "warmup", "final_lr", "jitter"):
            number(self, name, float, low=0.0)
        try:
            lo, hi = (float(v) for v in self.scale_range)
        except (TypeError, ValueError):
            lo = hi = -1.0
        if not 0 < lo <= hi:
            raise SamtextError("scale_range must be (low, high) with 0 < low <= high, got %r" % (self.scale_range,))
        self.scale_range = (lo, hi)
        return self


@dataclass
class TrainSettings(TrainRecipe):
    """"Train a segmentation model" (:func:`samtext.train`): the recipe (:class:`TrainRecipe`) and
    ``model_path`` (the checkpoint; default ``~/.samtext/models/<dataset>_<field>.pt``), ``classes`` (default:
    every class the field names), ``label_targets`` (``{value: name}`` naming the field's mask values),
    ``val_fraction`` (held out for validation mIoU), ``device``, ``resume`` (continue a checkpoint trained the
    same way), ``restart`` (replace it), ``allow_running`` (train on a field a samtext run still writes),
    ``skip_tag`` (leave out labels with this tag unless they carry ``approved_tag``; None: train on all)."""

    action = "train"
    model_path: Optional[str] = not_recorded(None)
    classes: Optional[Sequence[str]] = not_recorded(None)
    label_targets: Optional[Dict] = not_recorded(None)
    val_fraction: float = 0.1
    device: str = not_recorded(AUTO)
    resume: bool = not_recorded(True)
    restart: bool = not_recorded(False)
    allow_running: bool = not_recorded(False)
    skip_tag: Optional[str] = not_recorded(names.REJECT_TAG)
    approved_tag: str = not_recorded(names.APPROVED_TAG)

    def check(self):
        optional_tag(self, "skip_tag")
        optional_tag(self, "approved_tag", allow_none=False)
        number(self, "val_fraction", float, 0.0, 1.0)
        if self.val_fraction >= 1.0:
            raise SamtextError("val_fraction must be in [0, 1), got %r" % (self.val_fraction,))
        if isinstance(self.classes, str):
            self.classes = [self.classes]
        check_targets(self, "label_targets")
        check_file_path(self, "model_path")
        return super().check()

    def recipe(self) -> dict:
        """The :class:`TrainRecipe` knobs' values."""
        return {name: getattr(self, name) for name in TrainRecipe.knobs()}


@dataclass
class PredictSettings(Settings):
    """"Predict with a trained model" (:func:`samtext.predict`): ``device``."""

    action = "predict"
    device: str = not_recorded(AUTO)

    def check(self):
        from .models import check_hardware

        check_hardware(self.device)
        return self


@dataclass
class EvaluateSettings(Settings):
    """"Evaluate" (:func:`samtext.evaluate`): ``eval_key`` (None: report only, store nothing), ``classes`` (the
    class names to compare; default every class both fields name), ``gt_targets``/``pred_targets``
    (``{mask value: class name}`` overriding a Segmentation field's ``mask_targets``)."""

    action = "evaluate"
    eval_key: Optional[str] = names.EVAL_KEY
    classes: Optional[Sequence[str]] = None
    gt_targets: Optional[Dict] = None
    pred_targets: Optional[Dict] = None

    def check(self):
        check_targets(self, "gt_targets")
        check_targets(self, "pred_targets")
        if self.eval_key is not None and (not isinstance(self.eval_key, str) or not self.eval_key.isidentifier()):
            raise SamtextError("eval_key %r is not a valid key (letters, digits and _), or None to store nothing"
                               % (self.eval_key,))
        if isinstance(self.classes, str):
            self.classes = [self.classes]
        return self


EXPORT_FORMATS = ("segmentation", "coco")


@dataclass
class ExportSettings(Settings):
    """"Export labels" (:func:`samtext.export_labels`): ``format`` ("segmentation": images and PNG class masks;
    "coco": COCO instances JSON), ``skip_tag`` (leave out labels with this tag; None: all), ``export_media``
    (copy the images too), ``overwrite`` (replace an existing export folder)."""

    action = "export_labels"
    format: str = "segmentation"
    skip_tag: Optional[str] = names.REJECT_TAG
    approved_tag: str = names.APPROVED_TAG
    export_media: bool = True
    overwrite: bool = False

    def check(self):
        one_of(self, "format", EXPORT_FORMATS, what="export format")
        optional_tag(self, "skip_tag")
        optional_tag(self, "approved_tag", allow_none=False)
        flag(self, "export_media")
        flag(self, "overwrite")
        return self


def signature_with(function, *settings_classes, drop=("kwargs",)):
    """Sets ``function.__signature__`` to its own parameters (less ``**kwargs``) plus a keyword-only parameter for
    each knob of ``settings_classes`` at its default, so that ``help()`` and editors show every knob. The function
    still takes them through ``**kwargs``. Returns ``function``."""
    sig = inspect.signature(function)
    params = [p for name, p in sig.parameters.items() if name not in drop]
    seen = {p.name for p in params}
    for cls in settings_classes:
        for name in cls.knobs():
            if name not in seen:
                seen.add(name)
                params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=cls.default(name)))
    function.__signature__ = sig.replace(parameters=params)
    return function
