"""The inline style and script of the class summary and the student pages (no network, nothing external)."""

HISTOGRAM_COLOUR = "#3f51b5"
PASS_RATE_COLOUR = "#43a047"
STATUS_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "error": "#8e24aa",
    "timeout": "#ef6c00",
    "skipped": "#757575",
}

CSS = r"""
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
  margin:0;background:#f5f6f8}
main{max-width:1360px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 8px}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:15px;margin:16px 0 6px}
a{color:#1a4fb4}
section,header.about{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px 20px;margin:0 0 20px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:8px 0 0}
dl.facts dt{color:#555}
dl.facts dd{margin:0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 20px}
.card{flex:1 1 150px;background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 16px}
.card .value{font-size:28px;font-weight:600}
.card .label{color:#555;font-size:13px}
.card.bad .value{color:#c62828}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:20px;margin:0 0 20px}
.grid section{margin:0}
.muted{color:#666}
.empty{color:#666;font-style:italic}
.warn{background:#fff8e1;border-color:#ffcc80}
.warn li{margin:0 0 4px}
svg text{font-family:inherit}
ol.mistakes{margin:0;padding:0 0 0 24px}
ol.mistakes li{margin:0 0 10px}
.pct{display:inline-block;min-width:3.2em;font-weight:600}
.meter{display:block;height:5px;background:#e3e7ec;border-radius:3px;margin-top:2px;max-width:480px}
.meter span{display:block;height:5px;background:#9fa8da;border-radius:3px}
.who a{margin-right:8px;white-space:nowrap}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eceff2;vertical-align:top}
th{background:#f0f2f5;position:sticky;top:0;font-weight:600;white-space:nowrap}
th button.sort{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer;color:inherit}
th button.sort::after{content:" \2195";color:#999}
th[aria-sort="ascending"] button.sort::after{content:" \25B2";color:#1a4fb4}
th[aria-sort="descending"] button.sort::after{content:" \25BC";color:#1a4fb4}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all;min-width:120px}
td.why{min-width:180px;max-width:360px}
tbody tr:nth-child(even) td{background:#fafbfc}
.st{display:inline-block;padding:0 6px;border-radius:10px;color:#fff;font-size:12px;white-space:nowrap}
.st-missing{color:#999}
.small{font-size:12px}
.err{color:#c62828}
.wide{overflow-x:auto}
.filterbar{display:flex;gap:12px;align-items:center;margin:0 0 10px}
.filterbar input{font:inherit;padding:5px 8px;min-width:320px;border:1px solid #c3c9d1;border-radius:6px}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;border:1px solid #e3e7ec;border-radius:6px;
  padding:8px 10px;margin:4px 0 8px;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.start{background:#e8f0fe;border-color:#aecbfa}
"""

# Sort: a header's button sorts its column (numbers as numbers, blanks last), the arrow says which way.
# Filter: every word typed must appear in a row (its text or its data-search).
SCRIPT = r"""
(function () {
  "use strict";
  var table = document.getElementById("table");
  if (!table) { return; }
  var body = table.tBodies[0], heads = table.tHead.rows[0].cells;
  var box = document.getElementById("filter"), shown = document.getElementById("shown");
  function key(row, i, numeric) {
    var cell = row.cells[i], v = cell.getAttribute("data-v");
    if (v === null) { v = cell.textContent.trim(); }
    if (!numeric) { return v.toLowerCase(); }
    var n = parseFloat(v);
    return isNaN(n) ? null : n;
  }
  function sortBy(i) {
    var th = heads[i], numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    for (var j = 0; j < heads.length; j++) { heads[j].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1, rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, i, numeric), y = key(b, i, numeric);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return sign * (numeric ? x - y : x.localeCompare(y, undefined, {numeric: true}));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(heads, function (th, i) {
    var button = th.querySelector("button.sort");
    if (button) { button.addEventListener("click", function () { sortBy(i); }); }
  });
  function filter() {
    var terms = box.value.toLowerCase().split(/\s+/).filter(Boolean), n = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var text = (r.textContent + " " + (r.getAttribute("data-search") || "")).toLowerCase();
      var keep = terms.every(function (t) { return text.indexOf(t) >= 0; });
      r.hidden = !keep;
      if (keep) { n++; }
    });
    shown.textContent = n + " of " + body.rows.length + " shown";
  }
  box.addEventListener("input", filter);
  filter();
})();
"""
