// layerflow ui: keeps a run's page (or the runs list) up to date without reloading it.
// The server sends HTML pieces it escaped; this script only swaps them in, and writes
// everything else it shows as text (textContent), never as markup.
(function () {
  "use strict";
  var body = document.body, page = body.dataset.page;
  var updated = document.getElementById("updated");
  var tip = document.getElementById("tip");
  var zoom = null;  // the timeline's window [v0, v1] in seconds, kept across updates

  function stamp(text, offline) {
    if (!updated) return;
    updated.textContent = text;
    updated.classList.toggle("offline", !!offline);
  }

  function openDetails() {  // the <details> a person opened, by their summary's text
    var open = [];
    document.querySelectorAll("details[open] > summary").forEach(function (s) {
      open.push(s.textContent);
    });
    return open;
  }

  function reopen(open) {
    if (!open.length) return;
    document.querySelectorAll("details > summary").forEach(function (s) {
      if (open.indexOf(s.textContent) >= 0) s.parentNode.open = true;
    });
  }

  var last = {};  // each section's HTML as last swapped in
  function swap(sections) {
    var open = openDetails(), changed = false;
    Object.keys(sections).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el || last[id] === sections[id]) return;
      el.innerHTML = sections[id];  // escaped by the server (markup.py, report.py)
      last[id] = sections[id];
      changed = true;
    });
    if (changed) {
      reopen(open);
      bindTable();
      bindTimeline();
    }
  }

  function poll(url, every, done) {
    fetch(url, {cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (data) {
      var again = done(data);
      stamp("updated " + new Date().toLocaleTimeString());
      if (again) setTimeout(function () { poll(url, data.poll || every, done); }, data.poll || every);
    }).catch(function () {
      stamp("the layerflow ui server is not answering; trying again", true);
      setTimeout(function () { poll(url, every, done); }, 3000);
    });
  }

  // --- tooltips, as the report shows them --------------------------------------------
  if (tip) {
    document.addEventListener("mouseover", function (e) {
      var el = e.target.closest ? e.target.closest("[data-tip]") : null;
      if (!el) { tip.hidden = true; return; }
      tip.textContent = el.getAttribute("data-tip");
      tip.hidden = false;
    });
    document.addEventListener("mousemove", function (e) {
      if (tip.hidden) return;
      var r = tip.getBoundingClientRect(), x = e.clientX + 14, y = e.clientY + 14;
      if (x + r.width > window.innerWidth - 4) x = Math.max(4, e.clientX - r.width - 14);
      if (y + r.height > window.innerHeight - 4) y = Math.max(4, e.clientY - r.height - 14);
      tip.style.left = x + "px";
      tip.style.top = y + "px";
    });
  }

  // --- a task's detail ------------------------------------------------------------------
  var detail = document.getElementById("detail");
  var detailBody = document.getElementById("detail-body");
  var shown = null;  // the task whose detail is open
  var asking = null;  // the request for a detail under way (one at a time per task)
  function showTask(name, follow) {
    if (follow && asking) return;  // an update waits for the answer to the last one
    shown = name;
    var url = "/api/run/" + encodeURIComponent(body.dataset.run) + "/task?name=" +
      encodeURIComponent(name);
    var mine = asking = {};
    fetch(url, {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (data) {
      if (shown !== name) return;
      if (data.error) { detailBody.textContent = data.error; } else { detailBody.innerHTML = data.html; }
      detail.hidden = false;
    }).catch(function () {}).then(function () { if (asking === mine) asking = null; });
  }
  if (detail) {
    document.addEventListener("click", function (e) {
      var el = e.target.closest ? e.target.closest("[data-task]") : null;
      if (!el || detail.contains(el) || (e.target.closest("summary"))) return;
      showTask(el.getAttribute("data-task"));
    });
    document.getElementById("detail-close").addEventListener("click", function () {
      detail.hidden = true;
      shown = null;
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { detail.hidden = true; shown = null; }
    });
  }

  // --- the task table: sort by a column -------------------------------------------------
  var sorted = null;  // [column, ascending], kept across updates
  function sortTable(table, col, asc) {
    var heads = table.tHead.rows[0].cells, tbody = table.tBodies[0], th = heads[col];
    if (!th) return;
    var num = th.dataset.type === "num";
    Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(tbody.rows).map(function (r) {
      var c = r.cells[col], s = c.querySelector("summary") || c;
      return [num ? parseFloat(c.dataset.v) : s.textContent.toLowerCase(), r];
    });
    rows.sort(function (a, b) { return (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) * (asc ? 1 : -1); });
    var frag = document.createDocumentFragment();
    rows.forEach(function (p) { frag.appendChild(p[1]); });
    tbody.appendChild(frag);
  }
  function bindTable() {
    var table = document.getElementById("tasks");
    if (!table || !table.tHead) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        sorted = [col, asc];
        sortTable(table, col, asc);
      });
    });
    if (sorted) sortTable(table, sorted[0], sorted[1]);
  }

  // --- the timeline: wheel zooms, drag pans, double-click resets ----------------------
  function bindTimeline() {
    var svg = document.querySelector("#timeline svg");
    if (!svg) return;
    var span = parseFloat(svg.dataset.span), g = parseFloat(svg.dataset.gutter),
      w = parseFloat(svg.dataset.width), items = svg.querySelectorAll("[data-t0]");
    function draw() {
      var v0 = zoom ? zoom[0] : 0, v1 = zoom ? Math.min(zoom[1], span) : span;
      if (v1 <= v0) { v0 = 0; v1 = span; }
      items.forEach(function (el) {
        var a = g + (parseFloat(el.dataset.t0) - v0) / (v1 - v0) * w;
        var b = g + (parseFloat(el.dataset.t1) - v0) / (v1 - v0) * w;
        if (el.tagName === "text") el.setAttribute("x", a + 3);
        else { el.setAttribute("x", a); el.setAttribute("width", Math.max(3, b - a)); }
      });
    }
    function at(e) {
      var r = svg.getBoundingClientRect(), scale = svg.viewBox.baseVal.width / r.width;
      var v0 = zoom ? zoom[0] : 0, v1 = zoom ? zoom[1] : span;
      var xs = (e.clientX - r.left) * scale;
      return v0 + (Math.min(Math.max(xs, g), g + w) - g) / w * (v1 - v0);
    }
    svg.addEventListener("wheel", function (e) {
      e.preventDefault();
      var v0 = zoom ? zoom[0] : 0, v1 = zoom ? zoom[1] : span, t = at(e);
      var len = Math.min(span, Math.max(span * 1e-4, (v1 - v0) * (e.deltaY < 0 ? 0.8 : 1.25)));
      v0 = Math.max(0, t - (t - v0) / (v1 - v0) * len);
      zoom = len >= span ? null : [v0, v0 + len];
      draw();
    }, {passive: false});
    svg.addEventListener("dblclick", function () { zoom = null; draw(); });
    svg.addEventListener("mousedown", function (e) {
      if (zoom) drag = {x: e.clientX, v0: zoom[0], v1: zoom[1], svg: svg, draw: draw, span: span, w: w};
    });
    if (zoom) draw();
  }
  var drag = null;  // a pan under way: where it started, on which timeline
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (e) {
    if (!drag || !drag.svg.isConnected) return;
    var r = drag.svg.getBoundingClientRect(), scale = drag.svg.viewBox.baseVal.width / r.width;
    var len = drag.v1 - drag.v0, dt = (drag.x - e.clientX) * scale / drag.w * len;
    var v0 = Math.min(Math.max(0, drag.v0 + dt), drag.span - len);
    zoom = [v0, v0 + len];
    drag.draw();
  });

  // --- the pages ------------------------------------------------------------------------
  if (page === "run") {
    bindTable();
    bindTimeline();
    var run = body.dataset.run;
    var url = "/api/run/" + encodeURIComponent(run);
    var first = true;
    var update = function (data) {
      swap(data.html);
      body.dataset.status = data.status;
      if (shown && !first) showTask(shown, true);  // the open detail follows the run
      first = false;
      if (!data.live) stamp("the run has ended; this page is final");
      return data.live;
    };
    if (body.dataset.live) {
      setTimeout(function () { poll(url, 1000, update); }, 1000);
    } else {
      stamp("the run has ended; this page is final");
    }
  } else if (page === "runs") {
    poll("/api/runs", 2000, function (data) {
      swap({"runs-table": data.html});
      return true;
    });
  }
})();
