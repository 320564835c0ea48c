"""Image fitting end to end: reading every supported kind of picture, fitting, rendering, and the bad inputs."""

import json

import numpy as np
import pytest
from PIL import Image

from fieldstudio.api import Request, fit_job, render_job, resolve
from fieldstudio.data import images
from fieldstudio.data.images import read_image, write_image
from fieldstudio.errors import FieldStudioError

from conftest import run_cli

QUICK = {"train.batch_size": 4096}


def analytic(h: int = 96, w: int = 128) -> np.ndarray:
    """Smooth gradients plus a sharp-edged disc, (h, w, 3) float in [0, 1]."""
    v, u = np.mgrid[0:h, 0:w] + 0.5
    r = 0.5 + 0.4 * np.sin(u / w * 2 * np.pi) * np.cos(v / h * np.pi)
    g = u / w
    b = (((u - w / 2) ** 2 + (v - h / 2) ** 2) < (0.3 * h) ** 2) * 0.8 + 0.1
    return np.stack([r, g, b], -1)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "analytic.png"
    write_image(path, (analytic() * 255 + 0.5).astype(np.uint8))
    return path


def test_analytic_picture_is_fitted_above_35_db_in_seconds(picture, tmp_path):
    result = fit_job(Request(picture, steps=400, overrides=QUICK), tmp_path / "run").run()
    m = result.metrics
    assert m["psnr"] > 35.0, m["psnr"]
    assert 0.9 < m["ssim"] <= 1.0
    assert m["train_seconds"] < 20
    recon = read_image(result.files["reconstruction"])
    assert recon.pixels.shape == (96, 128, 3) and recon.bits == 8
    # the file's PSNR is the one reported (up to 8-bit rounding of the written file)
    original = read_image(picture).as_float()
    written = 10 * np.log10(1 / np.mean((recon.as_float() - original) ** 2))
    assert abs(written - m["psnr"]) < 0.5
    assert read_image(tmp_path / "run" / "error.png").pixels.shape == (96, 128, 3)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["frame"] == {"kind": "image", "width": 128, "height": 96, "channels": 3, "bits": 8}
    assert saved["input"]["kind"] == "image"


def test_default_budget_follows_the_pixel_count(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    write_image(small, np.zeros((64, 64, 3), np.uint8))
    write_image(large, np.zeros((800, 1000, 3), np.uint8))
    assert resolve(Request(small)).field.params == 20_000  # the floor: 10 % would be 1,229
    cfg = resolve(Request(large))
    assert cfg.field.params == 240_000 and (cfg.field.dim, cfg.field.out_dim) == (2, 3)
    assert cfg.task == "image"


@pytest.mark.parametrize("kind", ["hybrid", "neurbf", "grid", "mlp"])
def test_every_field_kind_fits_a_picture(picture, tmp_path, kind):
    m = fit_job(Request(picture, field=kind, steps=100, overrides=QUICK), tmp_path / kind).run().metrics
    assert m["psnr"] > 22.0, (kind, m["psnr"])
    assert abs(m["params"] - 20_000) < 2_000


def test_16_bit_picture_round_trips_and_is_written_back_in_16_bit(tmp_path):
    values = (analytic(48, 64) * 65535).astype(np.uint16)
    path = tmp_path / "deep.png"
    write_image(path, values)
    back = read_image(path)
    assert back.bits == 16 and np.array_equal(back.pixels, values)  # pypng keeps all 16 bits (Pillow would not)
    result = fit_job(Request(path, steps=30, overrides=QUICK), tmp_path / "run").run()
    recon = read_image(result.files["reconstruction"])
    assert recon.bits == 16 and recon.pixels.shape == (48, 64, 3)
    assert len(np.unique(recon.pixels)) > 256  # really 16-bit values, not 8-bit ones scaled up


def test_rgba_and_grey_pictures_keep_their_channels(tmp_path):
    rgba = np.concatenate([analytic(40, 40), np.linspace(0, 1, 40)[None, :, None].repeat(40, 0)], -1)
    path = tmp_path / "rgba.png"
    write_image(path, (rgba * 255).astype(np.uint8))
    assert read_image(path).channels == 4
    result = fit_job(Request(path, steps=20, overrides=QUICK), tmp_path / "rgba").run()
    assert read_image(result.files["reconstruction"]).channels == 4
    grey = tmp_path / "grey.jpg"
    Image.fromarray((analytic(40, 40)[:, :, 0] * 255).astype(np.uint8)).save(grey)
    assert resolve(Request(grey)).field.out_dim == 1


def test_exr_and_float_tiff_are_read_as_float(tmp_path):
    values = analytic(32, 32).astype(np.float32) * 4.0  # HDR: above 1
    for name in ("hdr.exr", "hdr.tif"):
        write_image(tmp_path / name, values)
        back = read_image(tmp_path / name)
        assert back.bits == 32 and np.allclose(back.pixels, values)


def test_render_at_scale_size_and_crop(picture, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fit_job(Request(picture, steps=30, overrides=QUICK), run).run()
    code, _, err = run_cli(["render", run, "-o", tmp_path / "x2.png", "--scale", "2"], monkeypatch, capsys)
    assert code in (0, None), err
    assert read_image(tmp_path / "x2.png").pixels.shape == (192, 256, 3)
    written = render_job(run, tmp_path / "crop.png", size="50x30", crop="10,20,100,60").run()
    assert (written["width"], written["height"]) == (50, 30)
    written = render_job(run, tmp_path / "part.png", crop="10,20,40,30", error=True, bits=16).run()
    assert read_image(written["image"]).bits == 16
    assert read_image(written["error_map"]).pixels.shape == (30, 40, 3)
    assert written["psnr"] > 10
    # the crop at scale 1 is the same picture as the whole render's pixels there
    whole = read_image(render_job(run, tmp_path / "whole.png", bits=16).run()["image"]).pixels
    assert np.abs(whole[20:50, 10:50].astype(int) - read_image(written["image"]).pixels.astype(int)).max() <= 2


@pytest.mark.parametrize("args, words", [
    (["--crop", "100,80,50,50"], "inside"),
    (["--crop", "1,2,3"], "x,y,w,h"),
    (["--scale", "2", "--size", "10x10"], "not both"),
    (["--size", "ten"], "WIDTHxHEIGHT"),
    (["--scale", "2", "--error"], "pixel for pixel"),
    (["--bits", "12"], "8, 16 or 32"),
])
def test_render_refuses_bad_options_in_one_line(picture, tmp_path, monkeypatch, capsys, args, words):
    run = tmp_path / "run"
    fit_job(Request(picture, steps=5, overrides=QUICK), run).run()
    code, out, err = run_cli(["render", run, "-o", tmp_path / "o.png", *args], monkeypatch, capsys)
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_mesh_of_an_image_run_says_to_render(picture, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fit_job(Request(picture, steps=5, overrides=QUICK), run).run()
    code, _, err = run_cli(["mesh", run, "-o", tmp_path / "m.ply"], monkeypatch, capsys)
    assert code == 2 and "render" in err


def test_time_budget_covers_the_whole_fit(picture, tmp_path):
    m = fit_job(Request(picture, time_budget=6.0, overrides=QUICK), tmp_path / "run").run().metrics
    assert m["ended_by"] == "time_budget"
    assert m["total_seconds"] < 6.0 + 1.0, m["total_seconds"]


# ------------------------------------------------------------------------------------------------ bad input

def _frames_gif(path, n=3):
    frames = [Image.fromarray((np.full((20, 20, 3), 80 * i)).astype(np.uint8)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def test_animated_gif_and_multi_page_tiff_say_which_frame_is_used(tmp_path):
    gif = tmp_path / "anim.gif"
    _frames_gif(gif)
    picture = read_image(gif)
    assert picture.frames == 3 and any("frame 0 is fitted" in n for n in picture.notes)
    assert read_image(gif, frame=2).pixels.mean() > read_image(gif, frame=1).pixels.mean()
    with pytest.raises(FieldStudioError, match="has 3 frame"):
        read_image(gif, frame=5)
    import tifffile

    tif = tmp_path / "pages.tif"
    tifffile.imwrite(tif, np.stack([np.full((20, 20), i, np.uint8) for i in range(4)]), photometric="minisblack")
    picture = read_image(tif)
    assert picture.frames == 4 and any("page 0 is fitted" in n for n in picture.notes)
    assert read_image(tif, frame=3).pixels.max() == 3


def test_palette_picture_is_fitted_in_its_colours(tmp_path):
    path = tmp_path / "palette.png"
    rgb = (analytic(32, 32) * 255).astype(np.uint8)
    Image.fromarray(rgb).quantize(16).save(path)
    picture = read_image(path)
    assert picture.channels == 3 and any("palette" in n for n in picture.notes)


def _file(name, data):
    def make(d):
        path = d / name
        path.write_bytes(data)
        return path
    return make


def _picture(name, h=64, w=64):
    return lambda d: write_image(d / name, (analytic(h, w) * 255).astype(np.uint8))


def _truncated(name):
    def make(d):
        path = _picture(name)(d)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    return make


@pytest.mark.parametrize("make, words", [
    (_picture("one.png", 1, 1), "at least 16 x 16"),
    (_file("empty.png", b""), "empty"),
    (_file("text.png", b"not a picture at all, just text"), "not a PNG"),
    (_file("noise.jpg", b"\xff\xd8\xff" + bytes(range(256)) * 4), "truncated or corrupt"),
    (_truncated("cut.png"), "truncated or corrupt"),
    (_truncated("cut.tif"), "truncated or corrupt"),
    (_file("x.psd", b"8BPS"), "unsupported picture format"),
])
def test_bad_pictures_get_one_clear_line(tmp_path, make, words):
    with pytest.raises(FieldStudioError) as err:
        read_image(make(tmp_path))
    message = str(err.value)
    assert words in message and "\n" not in message


def test_a_picture_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    write_image(path, np.zeros((600, 800, 3), np.uint8))
    monkeypatch.setattr(images, "_free_memory", lambda: 10 * 2**20)  # 10 MB free
    with pytest.raises(FieldStudioError, match="GB of memory.*crop or downscale"):
        read_image(path)


def test_cli_fit_of_a_picture_prints_psnr(picture, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(["fit", picture, "-o", tmp_path / "run", "--steps", "30"], monkeypatch, capsys)
    assert code in (0, None), err
    assert "PSNR" in err and "reconstruction" in err
    code, _, err = run_cli(["fit", tmp_path / "missing.png", "-o", tmp_path / "r2"], monkeypatch, capsys)
    assert code == 2 and "not found" in err


def test_a_picture_with_fewer_pixels_than_rbfs_is_fitted(tmp_path):
    # The smallest budget (20,000) has more RBFs than the smallest picture (16 x 16) has pixels: they are placed
    # inside pixels too.
    from fieldstudio.api import Request, fit_job

    rgb = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "tiny.png")
    result = fit_job(Request(tmp_path / "tiny.png", steps=20), tmp_path / "run").run()
    assert result.finished and result.config.field.rbf.n_rbf > 256 and result.metrics["psnr"] > 5
