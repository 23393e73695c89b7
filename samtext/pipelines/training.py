"""Training a segmentation network on class maps, checkpoints and resume, and prediction. Pure torch + numpy.

Data: a :class:`PairDataset` gives ``(image, class map)`` for an index, read only when asked for by a loader
callable: ``image`` is ``(H, W, 3)`` uint8 RGB, ``class map`` is ``(H, W)`` uint8 where 0 is background, ``k``
is ``classes[k - 1]`` and :data:`IGNORE` (255) is left out of the loss and of the scores.

Sizes: the network sees square ``image_size`` x ``image_size`` inputs. For validation and prediction each
image is *letterboxed*: scaled so that its longer side is ``image_size`` (aspect kept), padded at the bottom
and right; the logits of the image's part are upsampled bilinearly to its own ``(H, W)``. For training it is
scaled to that size times a random factor (``scale_range``), flipped left-right half the time, its brightness,
contrast and saturation jittered, then placed at a random offset in (or cropped to) the square; class maps
are resized by nearest neighbour and padded with :data:`IGNORE`. The default ``image_size`` of 320 is a CPU
choice: pets-like photos (~500 px) keep their objects' shapes at 320 px, and a MobileNetV3 step costs about
a sixth of what it costs at 800 px.

Training: cross-entropy (:data:`IGNORE` ignored), AdamW, a linear warm-up then cosine decay of the learning
rate per step, and per epoch the training loss and the validation IoU of each class (intersection and union
summed over the validation images at their own size) and their mean (mIoU, background included). After every
epoch a checkpoint (a plain dict, see :func:`save_checkpoint`) is written atomically; a later call with the
same checkpoint path and configuration continues after its last completed epoch.
"""

import hashlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Generator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import run_events
from ..settings import TrainRecipe
from ..errors import SamtextError

logger = logging.getLogger(__name__)

IGNORE = 255
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, RGB, of images scaled to [0, 1]
STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "samtext-segnet/1"
MAX_CLASSES = 254  # class map values 1..254; 255 is IGNORE
BN_MOMENTUM = 0.1  # see set_bn_momentum

Loader = Callable[[str], Tuple[np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------------------- data


class UnreadableItem(SamtextError):
    """A pair that cannot be read (a truncated image, a mask gone): training leaves it out and goes on."""


class PairDataset:
    """``(image (H, W, 3) uint8, class map (H, W) uint8)`` pairs, each read by ``loader(id)`` when indexed.

    Arguments:
        ids: one id per pair (sample ids); recorded in checkpoints.
        loader: ``id -> (image, class map)``; the class map must have the image's ``(H, W)``. It raises
            :class:`UnreadableItem` for a pair that cannot be read: :meth:`get` then returns None and remembers
            why in ``unreadable``.
    """

    def __init__(self, ids: Sequence[str], loader: Loader):
        self.ids = [str(i) for i in ids]
        self.loader = loader
        self.unreadable: Dict[str, str] = {}  # id -> why

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, index: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """The pair at ``index``, or None when it cannot be read (then and in later epochs)."""
        item_id = self.ids[index]
        if item_id in self.unreadable:
            return None
        try:
            return self[index]
        except UnreadableItem as e:
            logger.warning("samtext: training leaves out %s: %s", item_id, e)
            self.unreadable[item_id] = str(e)
            return None

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        image, cmap = self.loader(self.ids[index])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SamtextError("item %s: expected an (H, W, 3) uint8 image, got %s %s" % (
                self.ids[index], image.dtype, image.shape))
        if cmap.shape != image.shape[:2]:
            raise SamtextError("item %s: class map %s does not match its image %s" % (
                self.ids[index], cmap.shape, image.shape[:2]))
        return image, cmap


def split_ids(ids: Sequence[str], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """``(train ids, validation ids)``: a seeded random ``val_fraction`` of the ids (sorted first, so the split
    does not depend on their order) for validation, at least one when the fraction is above 0 and there are
    two ids or more; the training part is never empty."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise SamtextError("val_fraction must be in [0, 1), got %r" % (val_fraction,))
    ids = sorted(str(i) for i in ids)
    n_val = int(round(len(ids) * float(val_fraction)))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    order = np.random.default_rng(int(seed)).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def ids_digest(ids: Sequence[str]) -> str:
    """A short fingerprint of a set of ids (order ignored)."""
    return hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- transforms


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float in [0, 1]."""
    if not image.flags.writeable:
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def _normalise(t: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=t.dtype).view(3, 1, 1)
    std = torch.tensor(STD, dtype=t.dtype).view(3, 1, 1)
    return (t - mean) / std


def _resize_image(t: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``(3, H, W)`` float -> ``(3, h, w)``, bilinear, antialiased when shrinking."""
    if tuple(t.shape[1:]) == tuple(size):
        return t
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _resize_map(m: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` integer class map -> ``(h, w)`` by nearest neighbour."""
    if tuple(m.shape) == tuple(size):
        return m
    return F.interpolate(m[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(m.dtype)


def letterbox_size(shape: Tuple[int, int], image_size: int) -> Tuple[int, int]:
    """``(h, w)`` of an image of ``shape = (H, W)`` scaled so that its longer side is ``image_size``."""
    h, w = shape
    scale = image_size / max(h, w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def letterbox(image: np.ndarray, image_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """The normalised ``(3, S, S)`` network input of an ``(H, W, 3)`` uint8 image (``S = image_size``): scaled to
    a longer side of ``S``, padded with zeros (the mean colour) at the bottom and right. Also returns the
    ``(h, w)`` of the image's part."""
    h, w = letterbox_size(image.shape[:2], image_size)
    t = _normalise(_resize_image(_to_tensor(image), (h, w)))
    return F.pad(t, (0, image_size - w, 0, image_size - h)), (h, w)


def _jitter(t: torch.Tensor, rng: np.random.Generator, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in ``[1 - strength, 1 + strength]``."""
    if strength <= 0:
        return t
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    t = t * float(b)
    gray = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]
    t = (t - gray.mean()) * float(c) + gray.mean()
    gray = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]
    t = gray + (t - gray) * float(s)
    return t.clamp_(0.0, 1.0)


def train_transform(image: np.ndarray, cmap: np.ndarray, image_size: int, rng: np.random.Generator,
                    scale_range=(0.75, 1.25), flip: bool = True, jitter: float = 0.2):
    """One augmented training pair: ``(3, S, S)`` normalised float image and ``(S, S)`` int64 class map
    (:data:`IGNORE` where the square is padding). See the module's docstring."""
    lo, hi = scale_range
    base = letterbox_size(image.shape[:2], image_size)
    factor = float(rng.uniform(lo, hi))
    size = max(1, int(round(base[0] * factor))), max(1, int(round(base[1] * factor)))
    img = _resize_image(_to_tensor(image), size)
    m = _resize_map(torch.from_numpy(np.ascontiguousarray(cmap)).long(), size)
    if flip and rng.random() < 0.5:
        img, m = img.flip(-1), m.flip(-1)
    img = _normalise(_jitter(img, rng, jitter))
    (h, w), s = size, image_size
    # place the image at a random offset in an S x S canvas (when smaller), then crop S x S (when larger)
    top, left = int(rng.integers(0, max(s - h, 0) + 1)), int(rng.integers(0, max(s - w, 0) + 1))
    pad = (left, max(s - w - left, 0), top, max(s - h - top, 0))
    img, m = F.pad(img, pad, value=0.0), F.pad(m, pad, value=IGNORE)
    y0, x0 = int(rng.integers(0, m.shape[0] - s + 1)), int(rng.integers(0, m.shape[1] - s + 1))
    return img[:, y0:y0 + s, x0:x0 + s], m[y0:y0 + s, x0:x0 + s]


# ------------------------------------------------------------------------------------------- prediction


def logits_at_image_size(logits: torch.Tensor, part: Tuple[int, int], shape: Tuple[int, int]) -> torch.Tensor:
    """``(C, S, S)`` letterboxed logits -> ``(C, H, W)`` logits of the image itself: the image's ``part``
    ``(h, w)`` cut out and upsampled bilinearly to ``shape = (H, W)``."""
    h, w = part
    return F.interpolate(logits[None, :, :h, :w].float(), size=tuple(shape), mode="bilinear",
                         align_corners=False)[0]


@torch.no_grad()
def predict_images(model, images: Sequence[np.ndarray], image_size: int, device="cpu") -> List[Tuple[np.ndarray,
                                                                                                     np.ndarray]]:
    """Runs ``model`` (in eval mode) on a batch of ``(H, W, 3)`` uint8 images of any sizes: for each image,
    ``(class map (H, W) uint8, confidence (H, W) float32)``, the confidence being the softmax maximum.
    The upsampled logits of one image, ``(C, H, W)`` float32, are the peak memory per image."""
    if not len(images):
        return []
    batch, parts = zip(*(letterbox(img, image_size) for img in images))
    logits = model(torch.stack(batch).to(device))["out"].float().cpu()
    out = []
    for img, part, lg in zip(images, parts, logits):
        prob = torch.softmax(logits_at_image_size(lg, part, img.shape[:2]), dim=0)
        conf, cls = prob.max(dim=0)
        out.append((cls.to(torch.uint8).numpy(), conf.numpy().astype(np.float32)))
    return out


class SegPredictor:
    """A trained network ready to label images: ``predictor(image) -> (class map, confidence)``.

    Arguments:
        model: a segmentation network (``model(x)["out"]`` are logits at the input's size).
        classes: the class names (class map value ``k`` is ``classes[k - 1]``).
        image_size: the square input side it was trained at.
        device: where it runs.
    """

    def __init__(self, model, classes: Sequence[str], image_size: int, device="cpu"):
        self.model = model.to(device).eval()
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.device = device

    @classmethod
    def from_checkpoint(cls, checkpoint, device="cpu") -> "SegPredictor":
        """From a checkpoint path or the dict :func:`load_checkpoint` returned."""
        from ..models.segnets import build_segnet

        state = load_checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
        config = state["config"]
        model, _ = build_segnet(config["arch"], 1 + len(state["classes"]), backbone_weights=None)
        model.load_state_dict(state["model"])
        return cls(model, state["classes"], config["image_size"], device)

    def __call__(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(H, W, 3)`` uint8 RGB -> ``(class map (H, W) uint8, confidence (H, W) float32)``."""
        return predict_images(self.model, [image], self.image_size, self.device)[0]


# ---------------------------------------------------------------------------------------------- scoring


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 pixel counts, rows = target class, columns = predicted class; :data:`IGNORE` (and any
    target value ``>= num_classes``) left out."""
    valid = target < num_classes
    idx = target[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(conf: np.ndarray) -> Tuple[List[Optional[float]], Optional[float]]:
    """``(IoU per class, their mean)`` of a summed confusion matrix; a class with an empty union (absent from
    both) has IoU None and is left out of the mean."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    ious = [float(i / u) if u > 0 else None for i, u in zip(inter, union)]
    present = [v for v in ious if v is not None]
    return ious, (float(np.mean(present)) if present else None)


@torch.no_grad()
def validate(model, dataset: PairDataset, image_size: int, num_classes: int, device="cpu",
             batch_size: int = 8) -> np.ndarray:
    """The ``(C, C)`` confusion matrix of ``model`` on ``dataset``, each image scored at its own size."""
    model.eval()
    conf = np.zeros((num_classes, num_classes), np.int64)
    for start in range(0, len(dataset), batch_size):
        pairs = [p for p in (dataset.get(i) for i in range(start, min(start + batch_size, len(dataset))))
                 if p is not None]
        if not pairs:
            continue
        for (_, cmap), (pred, _) in zip(pairs, predict_images(model, [p[0] for p in pairs], image_size, device)):
            conf += confusion(pred, cmap, num_classes)
    return conf


# ------------------------------------------------------------------------------------------- checkpoint


@dataclass
class TrainConfig(TrainRecipe):
    """What shapes a training run; a resumed run must have the same: the recipe
    (:class:`samtext.settings.TrainRecipe`), the classes and the data.

    Attributes:
        classes: class names; the network has ``1 + len(classes)`` outputs (0 = background).
        data: what identifies the training data (the caller's: label field, a digest of the sample ids).
    """

    classes: List[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def check(self) -> "TrainConfig":
        super().check()
        self.classes = [str(c) for c in self.classes]
        if not self.classes or len(set(self.classes)) != len(self.classes) or len(self.classes) > MAX_CLASSES:
            raise SamtextError("classes must be 1 to %d distinct names, got %r" % (MAX_CLASSES, self.classes))
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale_range"] = list(d["scale_range"])
        return d


def config_differences(old: dict, new: dict) -> List[str]:
    keys = sorted(set(old) | set(new))
    return ["%s: %r -> %r" % (k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def save_checkpoint(path: str, state: dict) -> None:
    """Writes ``state`` (a plain dict of tensors, numbers, strings, lists and dicts) with ``torch.save`` to a
    temporary file beside ``path``, then renames it over ``path``: a reader or an interruption never sees a
    half-written checkpoint."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str) -> dict:
    """Reads a checkpoint written by training (``torch.load(weights_only=True)``, on the CPU).

    Raises:
        ValueError: missing, unreadable, or not a samtext checkpoint.
    """
    if not os.path.isfile(path):
        raise SamtextError("no model checkpoint at %s" % path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SamtextError("cannot read the model checkpoint %s: %s: %s" % (path, type(e).__name__, e)) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SamtextError("%s is not a samtext model checkpoint (format %r)" % (
            path, state.get("format") if isinstance(state, dict) else type(state).__name__))
    return state


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """``sha256:<first 16 hex digits>`` of a file's bytes: a checkpoint's identity."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- training


class TrainEvent(NamedTuple):
    """Progress: ``step`` of ``steps`` in ``epoch`` (1-based) of ``epochs``. ``metrics`` has ``loss`` and ``lr``
    after a step; at the end of an epoch (``metrics["end_of_epoch"]``, after its checkpoint is written) it has
    ``train_loss``, ``val_miou``, ``val_iou`` (class name -> IoU), ``seconds`` and ``backbone_start``."""

    epoch: int
    epochs: int
    step: int
    steps: int
    metrics: dict


@dataclass
class FitResult:
    """What :func:`iter_fit` did. ``start_epoch``: the epochs already done when it started (a resumed run);
    ``epochs_done``: the epochs in the checkpoint when it ended; ``history``: one dict per epoch."""

    checkpoint: str
    epochs: int
    start_epoch: int = 0
    epochs_done: int = 0
    best_val_miou: Optional[float] = None
    best_epoch: Optional[int] = None
    history: List[dict] = field(default_factory=list)
    backbone_start: str = ""
    device: str = "cpu"
    seconds: float = 0.0


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """The learning rate of (0-based) ``step`` of ``total``: linear warm-up from ``lr / 25`` over the first
    ``warmup`` of the steps, then cosine decay to ``lr * final_lr``."""
    warm = max(1, int(round(config.warmup * total))) if config.warmup > 0 else 0
    if step < warm:
        return config.lr * (0.04 + 0.96 * (step + 1) / warm)
    t = (step - warm) / max(1, total - warm)
    low = config.lr * config.final_lr
    return low + (config.lr - low) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> List[np.ndarray]:
    """Shuffled index batches of one epoch; the last, smaller one is dropped unless it is the only one
    (batch-norm layers need more than one image per batch in some heads)."""
    order = rng.permutation(n)
    if n <= batch_size:
        return [order]
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def set_bn_momentum(model, momentum: float) -> None:
    """Sets the running-statistics momentum of every batch-norm layer. torchvision's MobileNetV3 uses 0.01,
    which after a few hundred steps leaves the running statistics near their initial values when the network
    starts from scratch, so that it predicts background everywhere in eval mode while its training loss falls."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def _build_model(config: TrainConfig, state: Optional[dict]):
    from ..models.segnets import build_segnet

    with torch.random.fork_rng(devices=[]):  # seeded initial weights; the caller's RNG is left as it was
        torch.manual_seed(config.seed)
        if state is None:
            return build_segnet(config.arch, 1 + len(config.classes), config.backbone_weights)
        model, _ = build_segnet(config.arch, 1 + len(config.classes), backbone_weights=None)
    model.load_state_dict(state["model"])
    return model, state.get("backbone_start", "")


def _resume_state(path: str, config: TrainConfig, resume: bool, restart: bool) -> Optional[dict]:
    """The checkpoint to continue from, or None to start afresh.

    Raises:
        ValueError: a checkpoint exists and neither ``resume`` nor ``restart`` allow using or replacing it, or it
            was trained with another configuration (the differences are listed).
    """
    if restart or not os.path.exists(path):
        return None
    if not resume:
        raise SamtextError("a model checkpoint exists at %s; pass resume=True to continue it, restart=True to "
                         "train afresh and replace it, or choose another model_path" % path)
    state = load_checkpoint(path)
    diff = config_differences(state.get("config") or {}, config.to_dict())
    if diff:
        raise SamtextError(
            "the checkpoint at %s was trained with another configuration (%s); pass restart=True to train afresh "
            "and replace it, or choose another model_path" % (path, "; ".join(diff)))
    return state


def iter_fit(train_set: PairDataset, val_set: Optional[PairDataset], config: TrainConfig, checkpoint: str,
             device="cpu", resume: bool = True, restart: bool = False,
             extra: Optional[dict] = None) -> Generator[TrainEvent, None, FitResult]:
    """Trains a network on ``train_set`` (validating on ``val_set`` after every epoch), checkpointing every epoch to
    ``checkpoint``; a generator of :class:`TrainEvent` that returns the :class:`FitResult`.

    An existing checkpoint with the same configuration is continued from the epoch after its last completed one
    (``resume``); ``restart`` trains afresh and replaces it. Stopping the generator (``close()``, Ctrl-C, an
    exception in the consumer) loses only the epoch in progress. ``extra`` (plain values) is stored in every
    checkpoint.

    Raises (at the call, before the generator starts):
        ValueError: an empty ``train_set``, a bad configuration, a checkpoint that cannot be continued.
        samtext.models.segnets.BackboneWeightsError: ImageNet weights asked for and not to be had.
    """
    config.check()
    if len(train_set) == 0:
        raise SamtextError("nothing to train on: the training set is empty")
    if config.arch.startswith("deeplabv3") and len(train_set) < 2:
        raise SamtextError("%s needs at least 2 training images, got %d" % (config.arch, len(train_set)))
    state = _resume_state(checkpoint, config, resume, restart)
    result = FitResult(checkpoint=checkpoint, epochs=config.epochs, device=str(device))
    model = optimizer = None
    if state is not None:
        result.start_epoch = result.epochs_done = int(state["epoch"])
        result.best_val_miou, result.best_epoch = state.get("best_val_miou"), state.get("best_epoch")
        result.history = list(state.get("history") or [])
        result.backbone_start = state.get("backbone_start", "")
    if result.epochs_done < config.epochs:  # the network is built (weights found) before anything runs
        model, result.backbone_start = _build_model(config, state)
        set_bn_momentum(model, BN_MOMENTUM)
        model.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
    return _fit_events(train_set, val_set, config, checkpoint, device, model, optimizer, result, extra)


def _fit_events(train_set, val_set, config, checkpoint, device, model, optimizer, result, extra):
    start = time.time()
    if model is None:
        logger.info("samtext: %s has all %d epochs already", checkpoint, config.epochs)
        return result
    if result.epochs_done:
        logger.info("samtext: continuing %s after epoch %d of %d", checkpoint, result.epochs_done, config.epochs)
    num_classes = 1 + len(config.classes)
    steps = len(_batches(len(train_set), config.batch_size, np.random.default_rng(0)))
    total = steps * config.epochs
    for epoch in range(result.epochs_done + 1, config.epochs + 1):
        t0 = time.time()
        rng = np.random.default_rng([config.seed, epoch])
        model.train()
        losses = []
        for step, batch in enumerate(_batches(len(train_set), config.batch_size, rng), 1):
            lr = lr_at((epoch - 1) * steps + step - 1, total, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            items = [p for p in (train_set.get(int(i)) for i in batch) if p is not None]
            if not items:
                continue  # every pair of this batch is unreadable
            pairs = [train_transform(*p, config.image_size, rng, config.scale_range, config.flip, config.jitter)
                     for p in items]
            x = torch.stack([p[0] for p in pairs]).to(device)
            y = torch.stack([p[1] for p in pairs]).to(device)
            loss = F.cross_entropy(model(x)["out"], y, ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            yield TrainEvent(epoch, config.epochs, step, steps, dict(loss=losses[-1], lr=lr))
        entry = dict(epoch=epoch, train_loss=float(np.mean(losses)) if losses else None, val_miou=None, val_iou=None)
        if val_set is not None and len(val_set):
            ious, miou = iou_from_confusion(validate(model, val_set, config.image_size, num_classes, device,
                                                     config.batch_size))
            entry.update(val_miou=miou, val_iou=dict(zip(["background"] + config.classes, ious)))
            if miou is not None and (result.best_val_miou is None or miou > result.best_val_miou):
                result.best_val_miou, result.best_epoch = miou, epoch
        entry["seconds"] = time.time() - t0
        result.history.append(entry)
        result.epochs_done = epoch
        save_checkpoint(checkpoint, dict(
            format=CHECKPOINT_FORMAT, model=model.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=dict(kind="warmup_cosine", step=epoch * steps, total=total, steps_per_epoch=steps),
            epoch=epoch, config=config.to_dict(), classes=list(config.classes), best_val_miou=result.best_val_miou,
            best_epoch=result.best_epoch, history=result.history, backbone_start=result.backbone_start,
            train_ids=list(train_set.ids), val_ids=list(val_set.ids) if val_set is not None else [],
            seed=config.seed, torch_version=str(torch.__version__), extra=dict(extra or {})))
        result.seconds = time.time() - start
        yield TrainEvent(epoch, config.epochs, steps, steps, dict(entry, end_of_epoch=True,
                                                                  backbone_start=result.backbone_start))
    result.seconds = time.time() - start
    return result


def fit(train_set: PairDataset, val_set: Optional[PairDataset], config: TrainConfig, checkpoint: str,
        device="cpu", resume: bool = True, restart: bool = False, extra: Optional[dict] = None,
        progress: Optional[Callable[..., None]] = None) -> FitResult:
    """:func:`iter_fit` run to its end, calling ``progress(epoch, epochs, step, steps, metrics)`` per event."""
    return run_events(iter_fit(train_set, val_set, config, checkpoint, device, resume, restart, extra), progress)
