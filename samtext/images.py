"""Robust image and mask loading.

Every image comes out as an ``(H, W, 3)`` uint8 RGB array, upright (EXIF orientation applied), whatever
its file mode: grayscale, palette, RGBA (alpha dropped), CMYK, 16-bit or float. Every mask comes out as
an ``(H, W)`` bool array of the chosen class.
"""

import io
import os
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps

from .errors import SamtextError

# Masks with more distinct values than this are treated as soft (antialiased or JPEG) binary masks and
# thresholded at half their maximum; fewer distinct values mean class ids.
MAX_CLASS_VALUES = 16

# Mask and image sizes may differ by this relative aspect error and still be matched by resizing.
ASPECT_TOLERANCE = 0.02


class InputError(SamtextError):
    """Bad input for one sample: a missing or unreadable file, an unusable mask. The message says what."""


def _open(path: Union[str, bytes]) -> Image.Image:
    """Opens a file path, or the bytes of an image file (uploads), EXIF-upright."""
    if isinstance(path, bytes):
        source, path = io.BytesIO(path), "<uploaded image>"
    elif not os.path.isfile(path):
        raise InputError("file not found: %s" % path)
    else:
        source = path
    try:
        img = Image.open(source)
        img.load()
    except Image.DecompressionBombError as e:
        raise InputError("image too large to decode safely: %s (%s)" % (path, e)) from e
    except Exception as e:  # PIL raises many types for truncated or non-image files
        raise InputError("cannot read image %s: %s" % (path, e)) from e
    return ImageOps.exif_transpose(img)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scales 16-bit, 32-bit or float pixel values into 0..255."""
    if arr.dtype == np.uint8:
        return arr
    is_float = np.issubdtype(arr.dtype, np.floating)
    arr = arr.astype(np.float64)
    if is_float and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0
    else:
        top = arr.max(initial=0)
        arr = arr * (255.0 / top) if top > 255 else arr
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def load_image(path: str) -> np.ndarray:
    """Reads ``path`` as an upright ``(H, W, 3)`` uint8 RGB array.

    Raises:
        InputError: the file is missing, unreadable or not an image.
    """
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        gray = _to_uint8(np.asarray(img))
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def image_size(path: str) -> Tuple[int, int]:
    """``(H, W)`` of an image file as :func:`load_image` returns it (EXIF orientation applied), read from its
    header without decoding the pixels.

    Raises:
        InputError: the file is missing or not an image.
    """
    if not os.path.isfile(path):
        raise InputError("file not found: %s" % path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception as e:  # PIL raises many types for non-image files
        raise InputError("cannot read image %s: %s" % (path, e)) from e
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_mask_values(source: Union[str, bytes, np.ndarray]) -> np.ndarray:
    """Reads a mask's raw values (from a path, an image file's bytes, or an array) as a 2-D integer array: palette indices for "P" images, gray levels for
    "L"/"I;16", and values for arrays. RGB masks are reduced to one channel when the channels agree, and
    otherwise to a colour id (0 stays black)."""
    if isinstance(source, np.ndarray):
        values = source
    else:
        img = _open(source)
        values = np.asarray(img)
    if values.ndim == 3 and values.shape[2] not in (1, 2, 3, 4):
        raise InputError("a mask must be 2-D (H, W) class values, or an image of 1-4 channels; got %d channels "
                         "(shape %s)" % (values.shape[2], values.shape))
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim == 3:
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.mod(values, 1) == 0):
            raise InputError("a colour mask must hold whole numbers; got %s values with fractions (shape %s)"
                             % (values.dtype, values.shape))
        if values.shape[2] in (2, 4):  # drop alpha (LA, RGBA)
            values = values[..., :-1]
        if np.all(values == values[..., :1]):
            values = values[..., 0]
        else:
            rgb = values.astype(np.int64)
            values = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    if values.ndim != 2:
        raise InputError("a mask must be 2-D (or RGB), got shape %s" % (values.shape,))
    if values.dtype == bool:
        values = values.astype(np.uint8)
    return values


def mask_from_values(values: np.ndarray, class_value: Optional[int] = None) -> np.ndarray:
    """Turns raw mask values into a bool foreground mask.

    - ``class_value`` given: foreground is ``values == class_value``.
    - one nonzero value (0/255, 0/1, a palette with one object): foreground is nonzero.
    - many values (antialiased or JPEG-compressed binary masks): foreground is ``values >= max / 2``.
    - a few distinct nonzero values: a multi-class mask; the class value must be chosen.

    Raises:
        InputError: a multi-class mask with no ``class_value``, or a ``class_value`` not in the mask.
    """
    if class_value is not None:
        mask = values == class_value
        if not mask.any():
            present = np.unique(values)[:20].tolist()
            raise InputError("reference_class_value %s does not occur in the mask (values: %s)" % (class_value, present))
        return mask
    nonzero = np.unique(values[values != 0])
    if len(nonzero) <= 1:
        return values != 0
    if len(nonzero) > MAX_CLASS_VALUES or _is_noisy_binary(values, nonzero):
        return values >= values.max() / 2.0
    raise InputError(
        "the mask has several classes (values %s); choose which one is the object with reference_class_value"
        % nonzero.tolist()
    )


def _is_noisy_binary(values: np.ndarray, nonzero: np.ndarray, band: float = 0.1, edge_px: int = 8) -> bool:
    """True for a binary mask blurred by compression (a 0/255 mask saved as JPEG): every value lies within
    ``band`` of 0 or of the maximum, and the in-between values sit only along the object's edge. A
    multi-class mask (e.g. classes 1, 2 inside a 255 border) fails the second test."""
    from scipy import ndimage

    top = float(values.max())
    if len(nonzero) < 3 or not np.all((nonzero <= band * top) | (nonzero >= (1 - band) * top)):
        return False
    fg = values >= top / 2.0
    edge = fg ^ ndimage.binary_erosion(fg)
    near_edge = ndimage.binary_dilation(edge, np.ones((3, 3), bool), iterations=edge_px)
    odd = (values != 0) & (values != values.max())
    return not np.any(odd & ~near_edge)


def fit_mask(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resizes a bool mask to ``size = (H, W)`` by nearest neighbour when only the resolution differs.

    Raises:
        InputError: the aspect ratios differ (the mask belongs to another image, or was cropped).
    """
    if mask.shape == tuple(size):
        return mask
    (mh, mw), (h, w) = mask.shape, size
    if abs((mw / mh) / (w / h) - 1.0) > ASPECT_TOLERANCE:
        raise InputError("mask is %dx%d (WxH) but its image is %dx%d; they do not match" % (mw, mh, w, h))
    rows = np.minimum((np.arange(h) + 0.5) * mh / h, mh - 1).astype(int)
    cols = np.minimum((np.arange(w) + 0.5) * mw / w, mw - 1).astype(int)
    return mask[rows[:, None], cols[None, :]]


def load_mask(
    source: Union[str, bytes, np.ndarray],
    class_value: Optional[int] = None,
    size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Reads a reference mask (file path, file bytes or array) as an ``(H, W)`` bool array, optionally fitted to
    ``size = (H, W)``. See :func:`mask_from_values` for how values become foreground."""
    mask = mask_from_values(read_mask_values(source), class_value)
    return fit_mask(mask, size) if size is not None else mask
