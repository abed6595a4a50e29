"""`sfvq explore`: the static explorer page, its files against the generator's own
renders, and the page driven in a real browser (Debian's chromium through Playwright)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sfvq_ext
from sfvq_ext import cli
from sfvq_ext.adapters import StyleGAN2Generator, load_rosinality, save_rosinality
from sfvq_ext.explore import frame_coordinates, write_explorer
from sfvq_ext.interpret import edit_grid, image_grid, to_uint8

pytestmark = pytest.mark.usefixtures("no_network")

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None)
PROBE_MODULE = '''
import torch

class ChannelMeans:
    names = ["red", "green", "blue"]
    def __call__(self, images):
        return images.mean(dim=(2, 3))

def make():
    return ChannelMeans()
'''


def read_png(path):
    return torch.from_numpy(np.array(Image.open(path).convert("RGB")))


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """A tiny random StyleGAN2 (16 px, 6 W+ layers), a curve of 8 fitted on it through the
    CLI, and `sfvq explore` with a probe from the user's own module."""
    tmp = tmp_path_factory.mktemp("explore")
    torch.manual_seed(0)
    g = StyleGAN2Generator(16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 8})
    g.set_w_avg()
    save_rosinality(g, tmp / "g.pt")
    run = tmp / "run"
    assert cli.main(["fit", "--generator", f"stylegan2:{tmp / 'g.pt'}", "--bits", "3", "--out", str(run),
                     "--epochs", "1", "--batch-size", "64", "--samples-per-epoch", "256", "--quiet"]) == 0
    (tmp / "my_probe_module.py").write_text(PROBE_MODULE)
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(tmp))
    try:
        assert cli.main(["explore", str(run), "--out", str(tmp / "page"), "--top", "3", "--latents", "2",
                         "--probe", "my_probe_module:make", "--quiet"]) == 0
        assert cli.main(["atlas", str(run), "--probe", "my_probe_module:make", "--quiet"]) == 0
    finally:
        mp.undo()
    adapter = load_rosinality(tmp / "g.pt")
    curve = sfvq_ext.load(run / "curve.safetensors")
    return tmp / "page", adapter, curve.codebook.detach()


def test_explorer_files_are_the_generators_renders(explored):
    page, adapter, codebook = explored
    data = json.loads((page / "explore.json").read_text())
    K = codebook.shape[0]
    assert K == 8 and len(data["frames"]) == 4 * (K - 1) + 1 and len(data["strip"]) == K
    rendered = to_uint8(adapter.render(codebook, progress=False))
    for i in range(K):  # vertex i is frame 4i; frame and thumbnail both show c_i (16 px: kept as rendered)
        assert data["strip"][i]["frame"] == 4 * i and data["frames"][4 * i]["u"] == i
        assert torch.equal(read_png(page / data["frames"][4 * i]["file"]), rendered[i])
        assert torch.equal(read_png(page / data["strip"][i]["file"]), rendered[i])
    middle = sfvq_ext.decode(torch.tensor([2.5], dtype=torch.float64), codebook.double()).float()
    assert torch.equal(read_png(page / data["frames"][10]["file"]), to_uint8(adapter.render(middle, progress=False))[0])
    # every grid variant is the edit grid of its segment on its layers
    latents = adapter.sample_latents(2, seed=0)
    strength = data["strength"]
    direction = sfvq_ext.directions(codebook)
    seg = data["segments"][0]
    for v in seg["variants"]:
        images = edit_grid(adapter, latents, direction[seg["segment"]], [s * strength for s in data["steps"]], None,
                           layers=range(v["layers"][0], v["layers"][1] + 1), progress=False)
        assert torch.equal(read_png(page / v["file"]), image_grid(images, 5, scale=6))
    assert [v["group"] for v in seg["variants"]] == ["suggested", "all", "coarse", "middle", "fine"]
    assert len(data["segments"]) == 3 and seg["probe_top"] in ("red", "green", "blue")
    assert "probe-table" in (page / "index.html").read_text()


def test_the_atlas_in_the_page_and_from_the_cli_is_the_probe_on_each_vector(explored):
    """The explorer's atlas tracks and `sfvq atlas` (RUN/atlas.png + atlas.json) against
    rendering the codebook and applying the user's probe directly."""
    page, adapter, codebook = explored
    want = adapter.render(codebook, progress=False).mean(dim=(2, 3)).double()  # ChannelMeans on every vector
    atlas = json.loads((page / "explore.json").read_text())["atlas"]
    assert atlas["names"] == ["red", "green", "blue"]
    low, high = torch.tensor(atlas["low"], dtype=torch.float64), torch.tensor(atlas["high"], dtype=torch.float64)
    torch.testing.assert_close(low, want.min(0).values, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(atlas["values"], dtype=torch.float64) * (high - low) + low, want, rtol=0, atol=1e-6)
    html = (page / "index.html").read_text()
    assert html.count('class="track"') == 3 and html.count('class="athumb"') == codebook.shape[0]
    run = page.parent / "run"
    record = json.loads((run / "atlas.json").read_text())
    torch.testing.assert_close(torch.tensor(record["scores"], dtype=torch.float64), want, rtol=0, atol=1e-6)
    assert set(record["panoptic"]) == {"red", "green", "blue"}
    assert Image.open(run / "atlas.png").size[0] >= 800


def test_each_codebook_vector_is_rendered_once_for_its_thumbnail_and_probe_score(explored, tmp_path):
    """The strip's thumbnails and the atlas's probe scores come from one render of
    each codebook vector (each is also a frame of the slider, rendered at that
    coordinate): rendered twice in all, not three times."""
    _, adapter, codebook = explored
    rendered = []
    render = adapter.render

    def counting_render(latents, **kwargs):
        rendered.append(latents.detach().clone())
        return render(latents, **kwargs)

    adapter.render = counting_render
    try:
        write_explorer(adapter, codebook, tmp_path / "page", top=2, probe=lambda images: images.mean(dim=(2, 3)),
                       progress=False)
    finally:
        del adapter.render
    rows = torch.cat([w for w in rendered if w.dim() == 2]).to(codebook.dtype)  # W+ batches (n, L, D) are edits
    times = [int((rows == c).all(dim=1).sum()) for c in codebook]
    assert times == [2] * len(codebook), times


def test_frame_coordinates_cap():
    assert frame_coordinates(8).tolist() == [i / 4 for i in range(29)]
    c = frame_coordinates(1024, max_frames=256)
    assert len(c) == 256 and c[0] == 0 and c[-1] == 1023
    with pytest.raises(ValueError, match="max_frames"):
        frame_coordinates(8, max_frames=1)


def test_explore_refuses_bad_input(explored, tmp_path, capsys):
    page, adapter, codebook = explored
    run = page.parent / "run"
    for argv, message in ((["--top", "0"], "--top must be at least 1"), (["--probe", "nomodule"], "MODULE:FACTORY"),
                          (["--probe", "no_such_module_xyz:make"], "cannot import")):
        with pytest.raises(SystemExit) as info:
            cli.main(["explore", str(run), "--out", str(tmp_path / "x"), "--quiet", *argv])
        assert info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="width"):
        write_explorer(adapter, torch.zeros(4, 3), tmp_path / "y", progress=False)


def test_explorer_in_a_real_browser(explored):
    """Move the slider, click a thumbnail, toggle a layer group: the shown image is the right file."""
    assert CHROMIUM, "this test drives Debian's chromium: apt-get install chromium"
    from playwright import sync_api  # in the test extra
    page_dir, _, _ = explored
    data = json.loads((page_dir / "explore.json").read_text())
    requests = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto((page_dir / "index.html").as_uri())
            frame, slider = page.locator("#frame"), page.locator("#slider")

            def shown(locator):
                return Path(locator.evaluate("img => decodeURI(new URL(img.src).pathname)"))

            def loaded(locator):
                return locator.evaluate("img => img.complete && img.naturalWidth") > 0

            assert shown(frame) == page_dir / data["frames"][0]["file"]
            slider.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            assert slider.input_value() == "3"
            assert shown(frame) == page_dir / data["frames"][3]["file"]
            assert "u = 0.750" in page.locator("#where").inner_text()
            page.locator('.thumb[data-index="5"]').click()
            assert slider.input_value() == "20" and shown(frame) == page_dir / data["frames"][20]["file"]
            page.wait_for_function("() => document.getElementById('frame').complete")
            assert loaded(frame)
            assert "current" in page.locator('.thumb[data-index="5"]').get_attribute("class")
            seg = data["segments"][0]
            section = page.locator(f'#seg{seg["segment"]}')
            grid = section.locator(".grid")
            assert shown(grid) == page_dir / seg["variants"][0]["file"]
            coarse = next(v for v in seg["variants"] if v["group"] == "coarse")
            section.locator('.toggle[data-group="coarse"]').click()
            assert shown(grid) == page_dir / coarse["file"]
            assert section.locator('.toggle[data-group="coarse"]').get_attribute("aria-pressed") == "true"
            assert section.locator('.toggle[data-group="suggested"]').get_attribute("aria-pressed") == "false"
            page.wait_for_function(f"() => document.querySelector('#seg{seg['segment']} .grid').complete")
            assert loaded(grid)
            section.locator(".goto").click()
            assert slider.input_value() == str(seg["frame"])
            page.locator('.athumb[data-frame="8"]').click()  # the atlas strip: c2 is frame 8
            assert slider.input_value() == "8" and "current" in page.locator('.athumb[data-frame="8"]').get_attribute("class")
            assert page.locator("svg.track").count() == 3
        finally:
            browser.close()
    assert requests and all(u.startswith("file://") for u in requests), [u for u in requests if not u.startswith("file")]


def test_sizes_stay_sane_for_large_curves_and_images(tmp_path):
    """Large renders are downsampled (frames, thumbnails, grid tiles), frames are capped,
    thumbnails load lazily. A cheap 128 px generator with 3 layers stands in for 1024 px."""
    from sfvq_ext.adapters import CallableAdapter

    def render(w):
        w = w if w.dim() == 3 else w[:, None].expand(-1, 3, -1)
        colour = torch.tanh(w.mean(1))  # (n, 3)
        ramp = torch.linspace(-1, 1, 128)
        return (0.5 * colour[:, :, None, None] + 0.5 * ramp[None, None, :, None]).expand(-1, -1, -1, 128)

    adapter = CallableAdapter(lambda n, g: torch.randn(n, 3, generator=g), render, latent_dim=3, num_layers=3)
    codebook = torch.cumsum(0.1 * torch.randn(40, 3, generator=torch.Generator().manual_seed(0)), dim=0)
    page = write_explorer(adapter, codebook, tmp_path / "big", top=2, profile_top=4, max_frames=16, frame_px=32,
                          thumb_px=16, grid_px=24, strength=0.5, progress=False)
    data = json.loads((page.parent / "explore.json").read_text())
    assert len(data["frames"]) == 16 and len(data["strip"]) == 40
    assert Image.open(page.parent / data["frames"][7]["file"]).size == (32, 32)
    assert Image.open(page.parent / data["strip"][39]["file"]).size == (16, 16)
    grid = Image.open(page.parent / data["segments"][0]["variants"][0]["file"]).size
    assert grid == (2 + 5 * 26, 2 + 3 * 26)  # 5 strengths x 3 latents of 24 px tiles, 2 px gaps
    text = page.read_text()
    assert text.count('class="thumb" loading="lazy"') == 40
    # frames: the downsampled render of the point (area averaging of the 128 px image)
    u = data["frames"][7]["u"]
    point = sfvq_ext.decode(torch.tensor([u], dtype=torch.float64), codebook.double()).float()
    want = torch.nn.functional.interpolate(render(point), size=(32, 32), mode="area")
    assert torch.equal(read_png(page.parent / data["frames"][7]["file"]), to_uint8(want)[0])
