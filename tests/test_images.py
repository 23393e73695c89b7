"""Image and mask loading (samtext.images): every file mode comes out as upright uint8 RGB, every mask as
a bool array of the chosen class, and bad input as an InputError that says what is wrong."""

import io

import numpy as np
import pytest
from PIL import Image

from samtext.images import (
    InputError,
    fit_mask,
    load_image,
    load_mask,
    mask_from_values,
    read_mask_values,
)


def save(tmp_path, name, img: Image.Image, **kw) -> str:
    path = str(tmp_path / name)
    img.save(path, **kw)
    return path


def png_bytes(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_pattern(h=24, w=40):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.arange(w)[None, :] * 6
    a[..., 1] = np.arange(h)[:, None] * 10
    a[..., 2] = 77
    return a


def box_mask(h=30, w=50):
    m = np.zeros((h, w), bool)
    m[5:20, 10:35] = True
    return m


def check_rgb(arr, shape):
    assert isinstance(arr, np.ndarray)
    assert arr.shape == shape + (3,) and arr.dtype == np.uint8


# --------------------------------------------------------------------------------------------- images


def test_rgb_png_round_trips(tmp_path):
    a = rgb_pattern()
    out = load_image(save(tmp_path, "a.png", Image.fromarray(a)))
    check_rgb(out, a.shape[:2])
    assert np.array_equal(out, a)
    assert out.flags.writeable


def test_grayscale(tmp_path):
    g = (np.arange(24 * 40).reshape(24, 40) % 256).astype(np.uint8)
    out = load_image(save(tmp_path, "g.png", Image.fromarray(g, "L")))
    check_rgb(out, (24, 40))
    for c in range(3):
        assert np.array_equal(out[..., c], g)


def test_bilevel(tmp_path):
    b = box_mask()
    out = load_image(save(tmp_path, "b.png", Image.fromarray(b).convert("1")))
    check_rgb(out, b.shape)
    assert np.array_equal(out[..., 0] > 127, b)


def test_rgba_drops_alpha(tmp_path):
    a = rgb_pattern()
    rgba = np.dstack([a, np.full(a.shape[:2], 128, np.uint8)])
    rgba[0, 0, 3] = 0  # fully transparent pixel keeps its colour values
    out = load_image(save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    check_rgb(out, a.shape[:2])
    assert np.array_equal(out, a)


def test_palette(tmp_path):
    idx = np.zeros((10, 12), np.uint8)
    idx[2:6, 3:9] = 2
    p = Image.fromarray(idx, "P")
    p.putpalette([0, 0, 0, 255, 0, 0, 10, 200, 30] + [0] * (253 * 3))
    out = load_image(save(tmp_path, "p.png", p))
    check_rgb(out, (10, 12))
    assert out[3, 4].tolist() == [10, 200, 30] and out[0, 0].tolist() == [0, 0, 0]


def test_palette_with_transparency(tmp_path):
    idx = np.zeros((10, 12), np.uint8)
    idx[2:6, 3:9] = 1
    p = Image.fromarray(idx, "P")
    p.putpalette([0, 0, 0, 250, 100, 5] + [0] * (254 * 3))
    p.info["transparency"] = 0
    out = load_image(save(tmp_path, "p.png", p, transparency=0))
    check_rgb(out, (10, 12))
    assert out[3, 4].tolist() == [250, 100, 5]


def test_16bit_png_is_scaled(tmp_path):
    a = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)  # up to 59900
    path = save(tmp_path, "d.png", Image.fromarray(a))
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    check_rgb(out, (20, 30))
    assert out[..., 0].max() == 255 and out[0, 0, 0] == 0
    assert np.all(np.diff(out[..., 0].astype(int).ravel()) >= 0)  # order of the levels kept
    expected = np.round(a.astype(float) * 255 / a.max()).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 1], out[..., 2])


def test_float_tiff_in_unit_range(tmp_path):
    f = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    out = load_image(save(tmp_path, "f.tif", Image.fromarray(f, "F")))
    check_rgb(out, (20, 30))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:6, :6] = (255, 0, 0)  # a red corner at the stored image's top left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(tmp_path, "r.jpg", Image.fromarray(a), exif=exif.tobytes(), quality=95)
    out = load_image(path)
    check_rgb(out, (40, 20))  # transposed
    assert out[:5, -5:, 0].mean() > 200 and out[:5, -5:, 1:].mean() < 40  # now at the top right
    assert out[:5, :5, 0].mean() < 40


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # red
    out = load_image(save(tmp_path, "c.jpg", img, quality=95))
    check_rgb(out, (10, 20))
    r, g, b = out[5, 10].astype(int)
    assert r > 230 and g < 25 and b < 25


def test_image_bytes():
    a = rgb_pattern()
    out = load_image(png_bytes(Image.fromarray(a)))
    assert np.array_equal(out, a)


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="bad.png"):
        load_image(str(path))


def test_truncated_jpeg(tmp_path):
    data = png_bytes(Image.fromarray(rgb_pattern(200, 300)), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.jpg"):
        load_image(str(path))


def test_missing_file(tmp_path):
    path = str(tmp_path / "nowhere" / "missing.jpg")
    with pytest.raises(InputError) as e:
        load_image(path)
    assert path in str(e.value) and "not found" in str(e.value)
    with pytest.raises(InputError, match="missing.jpg"):
        load_mask(path)


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


# ---------------------------------------------------------------------------------------------- masks


def test_mask_0_255(tmp_path):
    m = box_mask()
    out = load_mask(save(tmp_path, "m.png", Image.fromarray(m.astype(np.uint8) * 255)))
    assert out.dtype == bool and np.array_equal(out, m)


def test_mask_0_1(tmp_path):
    m = box_mask()
    out = load_mask(save(tmp_path, "m.png", Image.fromarray(m.astype(np.uint8))))
    assert out.dtype == bool and np.array_equal(out, m)


def test_mask_palette_with_one_object(tmp_path):
    m = box_mask()
    p = Image.fromarray(m.astype(np.uint8) * 3, "P")
    p.putpalette([0, 0, 0, 9, 9, 9, 50, 50, 50, 255, 0, 0] + [0] * (252 * 3))
    out = load_mask(save(tmp_path, "m.png", p))
    assert np.array_equal(out, m)


def test_mask_multiclass_needs_class_value(tmp_path):
    v = np.zeros((30, 50), np.uint8)
    v[2:10, 2:10] = 1
    v[15:25, 20:40] = 2
    path = save(tmp_path, "m.png", Image.fromarray(v))
    with pytest.raises(InputError, match="class_value") as e:
        load_mask(path)
    assert "[1, 2]" in str(e.value)
    out = load_mask(path, class_value=2)
    assert np.array_equal(out, v == 2)
    out = load_mask(path, class_value=1)
    assert np.array_equal(out, v == 1)


def test_mask_class_value_absent():
    v = np.zeros((30, 50), np.uint8)
    v[2:10, 2:10] = 1
    with pytest.raises(InputError, match="7") as e:
        mask_from_values(v, class_value=7)
    assert "does not occur" in str(e.value)


def test_mask_with_class_value_zero_is_the_background():
    v = np.zeros((8, 8), np.uint8)
    v[:2] = 5
    assert np.array_equal(mask_from_values(v, class_value=0), v == 0)


def test_antialiased_soft_mask():
    yy, xx = np.mgrid[:60, :80]
    d = np.sqrt((yy - 30) ** 2 + (xx - 40) ** 2)
    soft = np.clip((20.5 - d) * 64 + 128, 0, 255).astype(np.uint8)  # a disc with a ramp at its edge
    assert len(np.unique(soft)) > 20
    out = load_mask(png_bytes(Image.fromarray(soft)))
    assert np.array_equal(out, soft >= 127.5)
    assert abs(out.sum() - np.pi * 20.5**2) < 0.03 * np.pi * 20.5**2


def test_jpeg_binary_mask_low_quality():
    m = box_mask(64, 80)
    data = png_bytes(Image.fromarray(m.astype(np.uint8) * 255), "JPEG", quality=75)
    out = load_mask(data)
    assert (out != m).sum() <= 0.01 * m.size


def test_jpeg_binary_mask_high_quality():
    m = box_mask(64, 80)
    data = png_bytes(Image.fromarray(m.astype(np.uint8) * 255), "JPEG", quality=95)
    out = load_mask(data)
    assert (out != m).sum() <= 0.01 * m.size


def test_rgb_mask_gray_channels(tmp_path):
    m = box_mask()
    rgb = np.repeat((m.astype(np.uint8) * 255)[..., None], 3, axis=2)
    out = load_mask(save(tmp_path, "m.png", Image.fromarray(rgb)))
    assert np.array_equal(out, m)


def test_rgb_mask_one_colour(tmp_path):
    m = box_mask()
    rgb = np.zeros(m.shape + (3,), np.uint8)
    rgb[m] = (255, 0, 0)
    out = load_mask(save(tmp_path, "m.png", Image.fromarray(rgb)))
    assert np.array_equal(out, m)


def test_rgb_mask_two_colours_and_rgba():
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[2:10, 2:10] = (255, 0, 0)
    rgb[15:25, 20:40] = (0, 128, 0)
    with pytest.raises(InputError, match="class_value"):
        load_mask(png_bytes(Image.fromarray(rgb)))
    green = (0 << 16) | (128 << 8) | 0
    assert np.array_equal(load_mask(rgb, class_value=green), rgb[..., 1] == 128)
    rgba = np.dstack([rgb, np.full((30, 50), 255, np.uint8)])
    values = read_mask_values(rgba)
    assert values.shape == (30, 50)
    # a gray mask with an alpha channel: the alpha is dropped and the gray levels are the values
    gray = np.zeros((30, 50), np.uint8)
    gray[2:10, 2:10], gray[15:25, 20:40] = 100, 200
    gray_rgba = np.dstack([gray, gray, gray, np.full((30, 50), 255, np.uint8)])
    assert np.array_equal(read_mask_values(png_bytes(Image.fromarray(gray_rgba, "RGBA"))), gray)
    assert np.array_equal(load_mask(gray_rgba, class_value=200), gray == 200)
    assert np.array_equal(load_mask(png_bytes(Image.fromarray(rgba, "RGBA")), class_value=green), rgb[..., 1] == 128)


def test_gray_alpha_mask():
    m = box_mask()
    la = np.dstack([m.astype(np.uint8) * 255, np.full(m.shape, 255, np.uint8)])
    assert np.array_equal(load_mask(png_bytes(Image.fromarray(la, "LA"))), m)


def test_mask_from_arrays():
    m = box_mask()
    assert np.array_equal(load_mask(m), m)  # bool
    assert np.array_equal(load_mask(m.astype(np.uint16) * 1000), m)
    with pytest.raises(InputError, match="2-D"):
        read_mask_values(np.zeros((2, 3, 4, 5)))


def test_empty_mask_values_give_an_empty_mask():
    assert not mask_from_values(np.zeros((5, 5), np.uint8)).any()


def test_mask_bytes_and_size():
    m = box_mask(30, 50)
    data = png_bytes(Image.fromarray(m.astype(np.uint8) * 255))
    out = load_mask(data, size=(60, 100))
    assert out.shape == (60, 100) and out.dtype == bool
    assert np.array_equal(out, np.repeat(np.repeat(m, 2, axis=0), 2, axis=1))


def test_fit_mask_same_aspect_nearest():
    m = box_mask(30, 50)
    up = fit_mask(m, (90, 150))
    assert up.dtype == bool and up.shape == (90, 150)
    assert np.array_equal(up, np.repeat(np.repeat(m, 3, axis=0), 3, axis=1))
    down = fit_mask(up, (30, 50))
    assert np.array_equal(down, m)
    odd = fit_mask(m, (31, 51))  # within the aspect tolerance
    assert odd.shape == (31, 51) and odd.dtype == bool
    assert abs(int(odd.sum()) - int(m.sum()) * (31 * 51) / (30 * 50)) < 0.1 * m.sum()
    assert fit_mask(m, (30, 50)) is m


def test_fit_mask_other_aspect_names_both_sizes():
    m = box_mask(30, 50)
    with pytest.raises(InputError) as e:
        fit_mask(m, (50, 50))
    assert "50x30" in str(e.value) and "50x50" in str(e.value)
    with pytest.raises(InputError):
        load_mask(m, size=(30, 80))
