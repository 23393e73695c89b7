"""Where model weights come from: explicit paths, environment, caches, or a download.

Resolution order for a SAM checkpoint (first hit wins):

1. an explicit ``checkpoint`` path given by the caller;
2. the environment variable ``SAMTEXT_SAM_<NAME>_CHECKPOINT`` (e.g. ``SAMTEXT_SAM_VIT_B_CHECKPOINT``);
3. samtext's cache folder (``$SAMTEXT_CACHE_DIR``, default ``~/.cache/samtext``);
4. FiftyOne's model-zoo folder, if it already holds the very same checkpoint file (for SAM 2.1, Meta's file,
   converted on loading: :mod:`samtext.models.meta_checkpoints`);
5. a download from the publisher (Meta's servers; the MobileSAM repository at a pinned commit), with a
   progress bar and a checksum (MD5 for SAM; for MobileSAM the file's git blob id in that commit).

CLIP weights are resolved by open_clip itself (which verifies SHA-256 where its registry has one), but
into samtext's cache folder, so that ``python -m samtext download-weights`` fills one folder that can
be copied to machines without internet.
"""

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from typing import Optional

from .registry import Checkpoint, checkpoint_env_var, sam_spec
from ..errors import SamtextError

logger = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    """Raised when a checkpoint is neither on disk nor downloadable."""


def cache_dir() -> str:
    """samtext's weights folder: ``$SAMTEXT_CACHE_DIR`` or ``~/.cache/samtext``."""
    return os.path.expanduser(os.environ.get("SAMTEXT_CACHE_DIR", "~/.cache/samtext"))


def _fiftyone_zoo_candidates(filename: str):
    """Paths where FiftyOne's model zoo may already keep the same SAM checkpoint."""
    zoo_dir = os.environ.get("FIFTYONE_MODEL_ZOO_DIR") or os.path.expanduser("~/fiftyone/__models__")
    if not os.path.isdir(zoo_dir):
        return
    for root, _, files in os.walk(zoo_dir):
        if filename in files:
            yield os.path.join(root, filename)


def file_digest(path: str, algorithm: str = "md5", chunk: int = 1 << 20) -> str:
    """The hex digest of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def md5sum(path: str) -> str:
    return file_digest(path, "md5")


def git_blob_sha1(path: str, chunk: int = 1 << 20) -> str:
    """The id git gives the file's content (``git hash-object``): SHA-1 of ``b"blob <size>\\0"`` + content."""
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_sam_checkpoint(model_name: str, checkpoint: Optional[str] = None, download: bool = True) -> str:
    """Returns a local path to the SAM checkpoint of ``model_name`` ("vit_b", "vit_l", "vit_h", "mobile_sam").

    Raises:
        WeightsUnavailableError: the file is missing and could not be downloaded; the message names
            the file, its URL and the folder to put it in.
    """
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise WeightsUnavailableError("SAM checkpoint %r does not exist" % checkpoint)
        return checkpoint
    ckpt = sam_spec(model_name).checkpoint
    if ckpt is None:
        raise SamtextError("SAM model %r has no published weights; pass a checkpoint file" % (model_name,))
    env_path = os.environ.get(checkpoint_env_var(model_name))
    if env_path:
        if not os.path.isfile(env_path):
            raise WeightsUnavailableError("%s=%r does not exist" % (checkpoint_env_var(model_name), env_path))
        return env_path
    cached = os.path.join(cache_dir(), "sam", ckpt.filename)
    if os.path.isfile(cached):
        return cached
    for path in _fiftyone_zoo_candidates(ckpt.filename):
        logger.info("Using FiftyOne zoo copy of %s at %s", ckpt.filename, path)
        return path
    if not download:
        raise WeightsUnavailableError(_missing_message(ckpt, cached, model_name))
    return download_checkpoint(ckpt, cached, model_name)


HF_FILES = ("*.json", "*.safetensors")  # a transformers model's config, processor config and weights


def _hf_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        f.endswith((".safetensors", ".bin")) for f in os.listdir(path))


def meta_checkpoint_names(model_name: str):
    """File names of Meta's own checkpoint of a SAM 2.1 / SAM 3 model, as Meta publishes it and as FiftyOne's zoo
    stores it (``sam2.1_hiera_tiny.pt``, ``sam2.1_hiera_tiny_image.pt``, ...; ``sam3.pt``); none for other models."""
    family = sam_spec(model_name).family
    if family == "sam3":
        return ("sam3.pt",)
    if family != "sam2":
        return ()
    return tuple(model_name + suffix for suffix in (".pt", "_image.pt", "_video.pt"))


def hf_sam_weights(spec, checkpoint: Optional[str]) -> Optional[str]:
    """Where registry entry ``spec`` (a SAM 2.1 / SAM 3 model) takes its weights from: None for a tiny test preset
    built at random, ``checkpoint`` for a tiny preset given weights, else :func:`resolve_hf_sam`'s answer."""
    if spec.for_tests:
        return checkpoint or None
    return resolve_hf_sam(spec.name, checkpoint)


def resolve_hf_sam(model_name: str, checkpoint: Optional[str] = None, download: bool = True) -> str:
    """Where the weights of the SAM 2.1 / SAM 3 model ``model_name`` are: a folder of transformers weights, or one of
    Meta's own ``.pt`` checkpoints, which :mod:`samtext.models.meta_checkpoints` (SAM 2.1) and
    :mod:`samtext.models.meta_sam3` (SAM 3's ``sam3.pt``) convert on loading.

    Resolution order: an explicit ``checkpoint`` (a folder with ``config.json`` + ``model.safetensors``, as
    ``save_pretrained`` writes or a Hugging Face snapshot holds, or Meta's ``.pt`` file);
    ``SAMTEXT_SAM_<NAME>_CHECKPOINT``; the Hugging Face cache (``$HF_HOME/hub``, where ``hf download`` and
    FiftyOne's transformers models put them); FiftyOne's model-zoo folder (its ``segment-anything-2.1-hiera-*``
    and ``segment-anything-3-*`` models keep Meta's files); a download of the repository's json and
    safetensors files into the Hugging Face cache (progress bars and file hashes are Hugging Face's), unless
    ``download`` is False or ``HF_HUB_OFFLINE`` is set.

    Raises:
        WeightsUnavailableError: one message saying what is missing and where to put it.
    """
    spec = sam_spec(model_name)
    repo = spec.detail[0]
    meta_names = meta_checkpoint_names(model_name)
    given = checkpoint or os.environ.get(checkpoint_env_var(model_name))
    if given:
        if os.path.isdir(given) and _hf_folder(given):
            return given
        if meta_names and os.path.isfile(given):
            return given  # Meta's format (or not: the loader says so)
        what = "sam_checkpoint" if checkpoint else checkpoint_env_var(model_name)
        raise WeightsUnavailableError(
            "%s=%r is not a folder of transformers weights (config.json and model.safetensors, as in the Hugging "
            "Face repository %s)%s" % (what, given, repo, " or Meta's %s checkpoint" % meta_names[0] if meta_names
                                       else ""))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    try:
        return snapshot_download(repo, allow_patterns=list(HF_FILES), local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    for name in meta_names:
        for path in _fiftyone_zoo_candidates(name):
            logger.info("Using FiftyOne zoo copy of %s at %s", name, path)
            return path
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    gated = " (a gated repository: accept the SAM License on its page and log in with `hf auth login`)" if (
        spec.family == "sam3") else ""
    where = "are not in the Hugging Face cache"
    if meta_names:
        zoo_name = meta_names[1] if len(meta_names) > 1 else meta_names[0]  # the name FiftyOne's zoo gives it
        where = "are in neither the Hugging Face cache nor FiftyOne's model zoo (%s)" % zoo_name
    meta = " or Meta's %s" % meta_names[0] if meta_names else ""
    hint = ("%s's weights %s. Run `hf download %s --include '*.json' '*.safetensors'` on a machine "
            "with internet%s and copy the cache (~/.cache/huggingface) here, or pass sam_checkpoint=<a folder with "
            "its config.json and model.safetensors%s>" % (model_name, where, repo, gated, meta))
    if not download or offline:
        raise WeightsUnavailableError(hint + (" (HF_HUB_OFFLINE is set)" if offline else ""))
    try:
        logger.info("Downloading %s from Hugging Face", repo)
        return snapshot_download(repo, allow_patterns=list(HF_FILES))
    except GatedRepoError as e:
        raise WeightsUnavailableError(hint + " (download refused: %s)" % str(e).splitlines()[0]) from e
    except (OSError, ValueError) as e:
        raise WeightsUnavailableError(hint + " (download failed: %s)" % str(e).splitlines()[0]) from e


def _missing_message(ckpt: Checkpoint, dest: str, model_name: str, reason: str = "") -> str:
    why = " (%s)" % reason if reason else ""
    return (
        "SAM checkpoint %s is not available%s. Download it from %s (%s) on a machine with "
        "internet and put it at %s, or set %s to its path, or pass sam_checkpoint=<path>."
        % (ckpt.filename, why, ckpt.url, ckpt.checksum, dest, checkpoint_env_var(model_name))
    )


def download_checkpoint(ckpt: Checkpoint, dest: str, model_name: str = "") -> str:
    """Downloads ``ckpt`` to ``dest`` with a progress bar; verifies its checksum before moving it in place."""
    from tqdm.auto import tqdm

    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), suffix=".part")
    os.close(fd)
    try:
        logger.info("Downloading %s to %s", ckpt.url, dest)
        with urllib.request.urlopen(ckpt.url, timeout=30) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=ckpt.filename) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        wrong = ckpt.verify(tmp)
        if wrong:
            raise WeightsUnavailableError(
                "downloaded %s has %s, expected %s; the file was discarded" % (ckpt.url, wrong, ckpt.checksum)
            )
        shutil.move(tmp, dest)
        return dest
    except (OSError, ValueError) as e:
        raise WeightsUnavailableError(_missing_message(ckpt, dest, model_name, "download failed: %s" % e)) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def clip_cache_dir() -> str:
    return os.path.join(cache_dir(), "clip")


def _is_path(value: str) -> bool:
    return os.sep in value or os.path.isfile(value)


def resolve_clip_weights(model_name: str, pretrained: str, checkpoint: Optional[str] = None) -> str:
    """Returns a local file with the open_clip weights of ``model_name``.

    ``pretrained`` is an open_clip tag such as "openai" (downloaded by open_clip into samtext's cache
    folder, or found there) or a path to a weights file; ``checkpoint``, when given, is a local file of
    the weights that the tag names (no download).

    Raises:
        WeightsUnavailableError: a missing file, or a download that failed; the message says what to do.
        ValueError: a tag that open_clip does not know for this model.
    """
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise WeightsUnavailableError("CLIP checkpoint %r does not exist" % checkpoint)
        return checkpoint
    if os.path.isfile(pretrained):
        return pretrained
    if _is_path(pretrained):
        raise WeightsUnavailableError("CLIP weights file %r does not exist" % pretrained)
    import open_clip

    cfg = clip_tag_config(model_name, pretrained)
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=clip_cache_dir())
    except Exception as e:  # network errors arrive as many types (urllib, requests, huggingface_hub)
        path = ""
        reason = str(e)
    else:
        reason = "open_clip returned no file"
    if not path:
        where = cfg.get("hf_hub") or cfg.get("url") or "the open_clip registry"
        raise WeightsUnavailableError(
            "CLIP weights %s/%s are not available (%s). Fetch them on a machine with internet with "
            "`python -m samtext download-weights --clip %s:%s` (source: %s) and copy %s here, or pass "
            "clip_checkpoint=<path to the weights file>."
            % (model_name, pretrained, reason, model_name, pretrained, where, clip_cache_dir())
        )
    return path


def clip_tag_config(model_name: str, tag: str) -> dict:
    """open_clip's registry entry for the weights ``tag`` of ``model_name`` (download sources, QuickGELU,
    preprocessing).

    Raises:
        ValueError: open_clip knows no such tag for the model.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise SamtextError(
            "open_clip has no weights %r for %r; known tags: %s"
            % (tag, model_name, open_clip.list_pretrained_tags_by_model(model_name))
        )
    return cfg


def find_clip_tag(model_name: str, path: str) -> Optional[str]:
    """The open_clip tag of ``model_name`` whose weights the file ``path`` holds, when that can be told:
    the file sits in the Hugging Face cache folder of the tag's repository, or its SHA-256 matches the
    one open_clip checks for the tag's download URL. None otherwise."""
    import open_clip

    real = os.path.realpath(path)
    digest = None
    for tag in open_clip.list_pretrained_tags_by_model(model_name):
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        repo = (cfg.get("hf_hub") or "").strip("/").split("/")
        if len(repo) >= 2 and "models--%s--%s" % (repo[0], repo[1]) in real:
            return tag
        url = cfg.get("url") or ""
        if url and os.path.basename(url) == os.path.basename(path):
            expected = url.split("/")[-2] if "openaipublic" in url else os.path.splitext(os.path.basename(url))[0].split("-")[-1]
            digest = digest or file_digest(path, "sha256")
            if expected and digest.startswith(expected):
                return tag
    return None


def clip_tag_overrides(cfg: dict) -> dict:
    """``open_clip.create_model_and_transforms`` keyword arguments that build the model as the tag's weights
    expect: QuickGELU where the tag was trained with it (open_clip only warns about a mismatch), and the
    tag's own preprocessing (mean, std, interpolation, resize mode)."""
    keys = ("mean", "std", "interpolation", "resize_mode")
    overrides = {"image_" + k: cfg[k] for k in keys if cfg.get(k) is not None}
    return dict(overrides, force_quick_gelu=bool(cfg.get("quick_gelu", False)))
