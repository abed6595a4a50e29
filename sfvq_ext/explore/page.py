"""The explorer's HTML: one static page, its data embedded as JSON, a few lines of
inline JavaScript (no network, no server, no external scripts)."""

from __future__ import annotations

import html
import json


def _esc(value) -> str:
    return html.escape(str(value))


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _probe_table(segments: list[dict]) -> str:
    rows = [s for s in segments if s.get("probe_changes")]
    if not rows:
        return ""
    names = list(rows[0]["probe_changes"])
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    body = ""
    for s in rows:
        top = max(s["probe_changes"].values()) or 1.0
        cells = "".join(f'<td style="background: rgba(40, 110, 220, {0.6 * v / top:.2f})">{v:.3f}</td>'
                        for v in s["probe_changes"].values())
        body += (f'<tr><td><a href="#seg{s["segment"]}">segment {s["segment"]}</a></td><td>{_esc(s["probe_top"])}</td>'
                 f'<td>{s["exclusivity"]:.0%}</td>{cells}</tr>')
    return (f'<h2>What the probe reads in each segment\'s edit</h2>'
            f'<p>Mean absolute change of every probe score when the images move one step along the segment, '
            f'on its suggested layers; exclusivity: the share of the largest.</p>'
            f'<table id="probe-table"><tr><th>segment</th><th>moves most</th><th>exclusivity</th>{head}</tr>'
            f'{body}</table>')


TRACK_PX = 22  # width of one codebook vector in the atlas (thumbnail and track column)


def _atlas(data: dict) -> str:
    """The panoptic atlas: one row of codebook thumbnails and, under it on the same
    columns, one track per probe score (an SVG step line, each scaled to its own range)."""
    atlas = data.get("atlas")
    if not atlas:
        return ""
    K, w, h = data["K"], TRACK_PX, 30
    thumbs = "".join(f'<img class="athumb" loading="lazy" src="{_esc(c["file"])}" data-frame="{c["frame"]}" '
                     f'title="c{i}" alt="c{i}">' for i, c in enumerate(data["strip"]))
    tracks = ""
    for f, name in enumerate(atlas["names"]):
        points = " ".join(f"{k * w},{h - 2 - (h - 4) * row[f]:.1f} {(k + 1) * w},{h - 2 - (h - 4) * row[f]:.1f}"
                          for k, row in enumerate(atlas["values"]))
        tracks += (f'<svg class="track" width="{K * w}" height="{h}" data-factor="{_esc(name)}">'
                   f'<polygon points="0,{h} {points} {K * w},{h}" fill="rgba(40,110,220,.25)"/>'
                   f'<polyline points="{points}" fill="none" stroke="#2860c0" stroke-width="1.5"/></svg>')
    labels = "".join(
        f'<div class="alabel" style="height: 30px">{_esc(n)} <small>{"" if p is None else f"{p:.2f}"}</small></div>'
        for n, p in zip(atlas["names"], atlas["panoptic"]))
    return (f'<h2>The panoptic atlas</h2><p>Every score the probe reads, for every codebook vector in curve order '
            f'(each track scaled to its own range; click a thumbnail to move the slider). Beside each name: its '
            f'panoptic score, the mean change between neighbouring vectors over that between random pairs '
            f'(1: no order; lower: the curve sweeps this factor in order).</p>'
            f'<div id="atlas"><div class="alabels"><div style="height: {w + 4}px"></div>{labels}</div>'
            f'<div class="ascroll"><div class="athumbs">{thumbs}</div>{tracks}</div></div>')


def _segment(s: dict, steps: list[float]) -> str:
    buttons = "".join(
        f'<button class="toggle" data-file="{_esc(v["file"])}" data-group="{_esc(v["group"])}" '
        f'aria-pressed="{"true" if i == 0 else "false"}">{_esc(v["group"])} '
        f'(W{v["layers"][0]}{"" if v["layers"][0] == v["layers"][1] else "-W" + str(v["layers"][1])})</button>'
        for i, v in enumerate(s["variants"]))
    bars = "".join(f'<span class="bar" title="W{l}: {c:.4f}" style="height: {4 + 40 * c / (max(s["profile"]) or 1):.0f}px'
                   f'{"; background: #2a6" if s["layers"][0] <= l <= s["layers"][1] else ""}"></span>'
                   for l, c in enumerate(s["profile"]))
    probe = (f'; the probe reads mostly <b>{_esc(s["probe_top"])}</b> ({s["exclusivity"]:.0%})'
             if s.get("probe_top") else "")
    return f"""<section class="segment" id="seg{s['segment']}">
<h3>Segment {s['segment']} (c<sub>{s['segment']}</sub> &rarr; c<sub>{s['segment'] + 1}</sub>)
 <button class="goto" data-frame="{s['frame']}">show on the curve</button></h3>
<p>Suggested layers <b>{_esc(s['label'])}</b> ({s['share']:.0%} of the layer profile); image change {s['change']:.3f},
layer concentration {s['concentration']:.2f}{probe}. Rows: latents; columns: {', '.join(f'{x:+g}' for x in steps)} steps.</p>
<div class="profile" title="image change when only one layer is edited (green: the suggested range)">{bars}</div>
<div class="toggles">{buttons}</div>
<img class="grid" src="{_esc(s['variants'][0]['file'])}" alt="edit grid of segment {s['segment']}">
</section>"""


def render_page(data: dict) -> str:
    strip = "".join(f'<img class="thumb" loading="lazy" src="{_esc(c["file"])}" data-index="{i}" '
                    f'data-frame="{c["frame"]}" title="c{i}" alt="c{i}">' for i, c in enumerate(data["strip"]))
    segments = "".join(_segment(s, data["steps"]) for s in data["segments"])
    jumps = ", ".join(f'{j["segment"]} (length {j["length"]:.2f})' for j in data["jumps"]) or "none"
    ranking = "".join(
        f'<tr><td>{r["segment"]}</td><td>{_num(r["score"])}</td>'
        f'<td>{r["change"]:.4f}</td><td>{_esc(r["layers"] or "")}</td><td>{_esc(r["probe_top"] or "")}</td>'
        f'<td>{"jump" if r["jump"] else ""}</td></tr>' for r in data["ranking"][:64])
    payload = json.dumps({"frames": data["frames"]}).replace("</", "<\\/")
    first = data["frames"][0]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(data['title'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1150px; margin: 1.5em auto; padding: 0 1em; color: #222; }}
img {{ image-rendering: pixelated; }}
#viewer {{ display: flex; gap: 1.5em; align-items: center; }}
#frame {{ width: 256px; height: 256px; border: 1px solid #aaa; }}
#slider {{ width: 100%; }}
#strip {{ display: flex; flex-wrap: wrap; gap: 2px; max-height: 300px; overflow-y: auto; border: 1px solid #ddd; padding: 2px; }}
.thumb {{ width: 48px; height: 48px; cursor: pointer; border: 2px solid transparent; }}
.thumb.current {{ border-color: #e33; }}
#atlas {{ display: flex; border: 1px solid #ddd; }}
.alabels {{ flex: none; padding-right: .5em; font-size: 12px; text-align: right; }}
.alabel {{ display: flex; align-items: center; justify-content: flex-end; gap: .3em; }}
.ascroll {{ overflow-x: auto; }}
.athumbs {{ display: flex; height: {TRACK_PX + 4}px; }}
.athumb {{ width: {TRACK_PX}px; height: {TRACK_PX}px; flex: none; cursor: pointer; border-bottom: 4px solid transparent; }}
.athumb.current {{ border-bottom-color: #e33; }}
.track {{ display: block; }}
.segment {{ border-top: 1px solid #ccc; margin-top: 1.5em; }}
.grid {{ max-width: 100%; border: 1px solid #ccc; }}
.toggle[aria-pressed="true"] {{ background: #2a6; color: white; }}
.profile {{ display: flex; align-items: flex-end; gap: 3px; height: 46px; margin: .3em 0; }}
.bar {{ width: 14px; background: #999; display: inline-block; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .15em .5em; text-align: left; }}
</style></head><body>
<h1>{_esc(data['title'])}</h1>
<p>{data['K']} codebook vectors, {data['num_layers']} W+ layer(s). Move the slider along the curve coordinate
u &isin; [0, {data['K'] - 1}], or click a codebook thumbnail. Below: segments ranked by how much and how locally they
change the image, each with its edit grid on the suggested layers and on other layer groups.</p>
<div id="viewer"><img id="frame" src="{_esc(first['file'])}" alt="the image at the slider's point">
<div style="flex: 1"><input id="slider" type="range" min="0" max="{len(data['frames']) - 1}" step="1" value="0"
aria-label="curve coordinate"><p id="where">u = 0.000</p></div></div>
<h2>The codebook in curve order</h2>
<div id="strip">{strip}</div>
{_atlas(data)}
<h2>Ranked segments</h2>
<p>Jump segments (longer than 3&times; the median, crossing between regions; not offered as directions): {jumps}.</p>
{segments}
{_probe_table(data['segments'])}
<h2>The ranking</h2>
<table><tr><th>segment</th><th>score</th><th>image change</th><th>layers</th><th>probe</th><th></th></tr>{ranking}</table>
<script id="data" type="application/json">{payload}</script>
<script>
const data = JSON.parse(document.getElementById("data").textContent);
const slider = document.getElementById("slider"), frame = document.getElementById("frame");
const where = document.getElementById("where"), thumbs = document.querySelectorAll(".thumb, .athumb");
function show(k) {{
  const f = data.frames[k];
  slider.value = k;
  frame.src = f.file;
  where.textContent = "u = " + f.u.toFixed(3) + "  (segment " + f.segment + ", t = " + f.t.toFixed(2) + ")";
  thumbs.forEach(t => t.classList.toggle("current", +t.dataset.frame === k));
}}
slider.addEventListener("input", () => show(+slider.value));
thumbs.forEach(t => t.addEventListener("click", () => show(+t.dataset.frame)));
document.querySelectorAll(".goto").forEach(b => b.addEventListener("click", () => {{
  show(+b.dataset.frame); window.scrollTo(0, 0); }}));
document.querySelectorAll(".segment").forEach(sec => {{
  const grid = sec.querySelector(".grid");
  sec.querySelectorAll(".toggle").forEach(b => b.addEventListener("click", () => {{
    sec.querySelectorAll(".toggle").forEach(o => o.setAttribute("aria-pressed", String(o === b)));
    grid.src = b.dataset.file;
  }}));
}});
show(0);
</script>
</body></html>
"""
