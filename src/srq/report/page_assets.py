"""The report page's inline CSS (laptop width and print) and plain JavaScript (sortable table, before/after
slider drawn on canvases from the crops already in the page, so no image is embedded twice)."""

__all__ = ["CSS", "JS"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1em 2em;max-width:1400px;
color:#222}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:1px solid #ccc;margin-top:1.6em}h3{margin:1.2em 0 .3em}
.note{color:#555;font-size:.92em}
.scroll{overflow-x:auto}
table.runs{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums}
table.runs th,table.runs td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
table.runs td:first-child,table.runs th:first-child{text-align:left}
table.runs th{background:#f3f3f3;cursor:pointer;position:sticky;top:0}
table.runs th[data-dir=asc]::after{content:" ▲"}table.runs th[data-dir=desc]::after{content:" ▼"}
table.runs tbody tr:nth-child(even){background:#fafafa}
td.bad{color:#b00}
.plots{display:flex;flex-wrap:wrap;gap:1em}
.plots figure{flex:1 1 420px;max-width:640px;margin:0}
svg.plot{width:100%;height:auto;display:block}
figure.wide{margin:.5em 0;max-width:960px}
figcaption{font-size:.85em;color:#444;text-align:center}
.crops{display:flex;flex-wrap:wrap;gap:.6em}
.crops figure{margin:0}
.crops img{image-rendering:pixelated;image-rendering:crisp-edges;display:block;border:1px solid #ccc}
.missing{border:1px dashed #aaa;font-size:.8em;color:#777;display:flex;align-items:center;justify-content:center;
text-align:center}
.compare{margin:.8em 0}
.stage{position:relative;border:1px solid #ccc;max-width:100%}
.stage canvas{position:absolute;inset:0;width:100%;height:100%;image-rendering:pixelated}
.stage .bar{position:absolute;top:0;bottom:0;width:2px;background:#fff;box-shadow:0 0 2px #000;left:50%}
.compare input{display:block}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.85em}
section.run{border-top:1px solid #eee}
@media print{body{padding:0;max-width:none;font-size:11px}.compare{display:none}
.scroll{overflow:visible}table.runs{font-size:7px}table.runs th,table.runs td{padding:1px 2px}
table.runs th{position:static}section.image,section.run figure,.plots figure{break-inside:avoid}
details>*:not(summary){display:none}}
"""

JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], asc = th.dataset.dir !== "asc";
    th.parentNode.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? "asc" : "desc";
    var key = function (row) {
      var c = row.cells[col], v = c.dataset.v !== undefined ? c.dataset.v : c.textContent, n = Number(v);
      return v !== "" && !isNaN(n) ? [0, n] : [1, v];
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x[0] !== y[0]) return x[0] - y[0];
      return (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0) * (asc ? 1 : -1);
    }).forEach(function (r) { body.appendChild(r); });
  });
});
document.querySelectorAll(".compare").forEach(function (box) {
  var imgs = box.parentNode.querySelectorAll(".crops img"), sel = box.querySelectorAll("select");
  var under = box.querySelector(".under"), over = box.querySelector(".over");
  var bar = box.querySelector(".bar"), range = box.querySelector("input");
  sel[1].selectedIndex = Number(sel[1].dataset.default || 0);
  function draw(canvas, i) {
    var img = imgs[i], g = canvas.getContext("2d");
    var paint = function () { g.imageSmoothingEnabled = false; g.drawImage(img, 0, 0, canvas.width, canvas.height); };
    if (img.complete) paint(); else img.addEventListener("load", paint);
  }
  function update() {
    draw(under, Number(sel[1].value)); draw(over, Number(sel[0].value));
    over.style.clipPath = "inset(0 " + (100 - range.value) + "% 0 0)";
    bar.style.left = range.value + "%";
  }
  sel.forEach(function (s) { s.addEventListener("change", update); });
  range.addEventListener("input", update);
  update();
});
"""
