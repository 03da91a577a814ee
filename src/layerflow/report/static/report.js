(function () {
  var tip = document.getElementById("tip");
  function move(e) {
    if (tip.hidden) return;
    var pad = 14, x = e.clientX + pad, y = e.clientY + pad, r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 4) x = Math.max(4, e.clientX - r.width - pad);
    if (y + r.height > window.innerHeight - 4) y = Math.max(4, e.clientY - r.height - pad);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  document.addEventListener("mouseover", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!el) { tip.hidden = true; return; }
    tip.textContent = el.getAttribute("data-tip");
    tip.hidden = false;
    move(e);
  });
  document.addEventListener("mousemove", move);
  var svg = document.getElementById("timeline");
  if (svg) zoomable(svg);
  function zoomable(svg) {
    // zoom and pan change the time window, then place every bar and name again: text
    // keeps its size, which a scaled viewBox would not
    var span = parseFloat(svg.dataset.span), g = parseFloat(svg.dataset.gutter),
      w = parseFloat(svg.dataset.width), v0 = 0, v1 = span;
    var items = svg.querySelectorAll("[data-t0]"), ticks = svg.querySelector("g.ticks");
    var height = svg.viewBox.baseVal.height;
    function px(t) { return g + (t - v0) / (v1 - v0) * w; }
    function secs(s) {  // as secs writes them
      if (s >= 60) {
        var r = Math.round(s), m = Math.floor(r / 60), sec = r % 60;
        return m + "m " + (sec < 10 ? "0" : "") + sec + "s";
      }
      var u = s >= 1 ? [1, "s"] : s >= 1e-3 ? [1e-3, "ms"] : [1e-6, "µs"];
      return (s / u[0]).toPrecision(3) + " " + u[1];
    }
    function draw() {
      items.forEach(function (el) {
        var a = px(parseFloat(el.dataset.t0)), b = px(parseFloat(el.dataset.t1));
        var width = Math.max(3, b - a);
        if (el.tagName === "text") {
          el.setAttribute("x", a + 3);
          var name = el.dataset.name, room = Math.floor((width - 6) / 6.2);
          el.textContent =
            name.length <= room ? name : name.slice(0, Math.max(room - 1, 1)) + "…";
          el.removeAttribute("hidden");
          el.style.display = room >= Math.min(name.length, 4) ? "" : "none";
        } else {
          el.setAttribute("x", a);
          el.setAttribute("width", width);
        }
      });
      var raw = (v1 - v0) / 8, mag = Math.pow(10, Math.floor(Math.log10(raw)));
      var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
        .find(function (s) { return s >= raw; });
      var out = "";
      for (var t = Math.ceil(v0 / step) * step; t <= v1 + 1e-12; t += step) {
        var x = px(t).toFixed(1);
        out += '<line class="tick" x1="' + x + '" y1="22" x2="' + x + '" y2="' + height + '"/>' +
          '<text class="axis" x="' + x + '" y="18">' + (t ? secs(t) : "0") + "</text>";
      }
      ticks.innerHTML = out;
    }
    function at(e) {  // the time under the pointer
      var r = svg.getBoundingClientRect(), scale = svg.viewBox.baseVal.width / r.width;
      var xs = (e.clientX - r.left) * scale;
      return v0 + (Math.min(Math.max(xs, g), g + w) - g) / w * (v1 - v0);
    }
    svg.addEventListener("wheel", function (e) {
      e.preventDefault();
      var t = at(e), f = e.deltaY < 0 ? 0.8 : 1.25;
      var len = Math.min(span, Math.max(span * 1e-4, (v1 - v0) * f));
      v0 = Math.max(0, t - (t - v0) / (v1 - v0) * len);
      v1 = Math.min(span, v0 + len);
      v0 = Math.max(0, v1 - len);
      draw();
    }, {passive: false});
    var drag = null;
    svg.addEventListener("mousedown", function (e) { drag = {x: e.clientX, v0: v0, v1: v1}; });
    window.addEventListener("mouseup", function () { drag = null; });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      var r = svg.getBoundingClientRect(), scale = svg.viewBox.baseVal.width / r.width;
      var dt = (drag.x - e.clientX) * scale / w * (drag.v1 - drag.v0);
      var len = drag.v1 - drag.v0;
      v0 = Math.min(Math.max(0, drag.v0 + dt), span - len);
      v1 = v0 + len;
      draw();
    });
    svg.addEventListener("dblclick", function () { v0 = 0; v1 = span; draw(); });
    svg.zoomTo = function (a, b) { v0 = a; v1 = b; draw(); };  // for tests and links
  }
  var table = document.getElementById("tasks");
  if (!table) return;
  var heads = table.tHead.rows[0].cells, body = table.tBodies[0];
  Array.prototype.forEach.call(heads, function (th, col) {
    function sort() {
      var asc = th.getAttribute("aria-sort") !== "ascending", num = th.dataset.type === "num";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var key = function (row) {
        var c = row.cells[col];
        var shown = c.querySelector("summary") || c;  // a detail's name, not its body
        return num ? parseFloat(c.dataset.v) : shown.textContent.toLowerCase();
      };
      var rows = Array.prototype.slice.call(body.rows).map(function (r) { return [key(r), r]; });
      var sign = asc ? 1 : -1;
      rows.sort(function (a, b) { return (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) * sign; });
      var frag = document.createDocumentFragment();
      rows.forEach(function (p) { frag.appendChild(p[1]); });
      body.appendChild(frag);
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
})();
