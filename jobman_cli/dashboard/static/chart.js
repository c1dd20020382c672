/* Two inline SVG charts drawn from the jobs list (no library):
 * runs of the last 24 h, one bar per job at its due time, height = run time, colour = outcome;
 * and the distribution of due -> launched delays (whether jobs start on time). */
"use strict";
var JobmanChart = (function () {
  var NS = "http://www.w3.org/2000/svg";
  var DAY = 24 * 3600 * 1000, W = 720, H = 140, PAD = 20;
  var BUCKETS = [[1000, "<1 s"], [5000, "1–5 s"], [15000, "5–15 s"], [60000, "15–60 s"],
                 [300000, "1–5 min"], [900000, "5–15 min"], [Infinity, ">15 min"]];

  function svg(tag, attrs, text) {
    var node = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) { node.textContent = String(text); }
    return node;
  }

  function frame(label) {
    var root = svg("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label, "class": "svgchart"});
    root.appendChild(svg("line", {x1: PAD, y1: H - PAD, x2: W - 4, y2: H - PAD, "class": "axis"}));
    return root;
  }

  function runs(recent, now) {
    var root = frame("runs of the last 24 hours");
    var longest = 1;
    recent.forEach(function (r) { longest = Math.max(longest, r.run); });
    recent.forEach(function (r) {
      var x = PAD + (W - PAD - 8) * (r.due - (now - DAY)) / DAY;
      var h = Math.max(3, (H - 2 * PAD) * r.run / longest);
      var bar = svg("rect", {x: x.toFixed(1), y: (H - PAD - h).toFixed(1), width: 3, height: h.toFixed(1),
                             "class": "bar outcome-" + r.job.status});
      bar.appendChild(svg("title", {}, "#" + r.job.id + " " + (r.job.title || "") + ": " + r.job.status +
                                        ", ran " + Jobman.duration(r.run)));
      root.appendChild(bar);
    });
    root.appendChild(svg("text", {x: PAD, y: H - 4, "class": "tick"}, "24 h ago"));
    root.appendChild(svg("text", {x: W - 40, y: H - 4, "class": "tick"}, "now"));
    root.appendChild(svg("text", {x: PAD, y: 12, "class": "tick"}, "longest " + Jobman.duration(longest)));
    return root;
  }

  function delays(recent) {
    var counts = BUCKETS.map(function () { return 0; });
    recent.forEach(function (r) {
      if (r.delay === null) { return; }
      for (var i = 0; i < BUCKETS.length; i++) { if (r.delay < BUCKETS[i][0]) { counts[i] += 1; break; } }
    });
    var most = Math.max.apply(null, counts.concat([1]));
    var root = frame("due to launched delays");
    var slot = (W - PAD) / BUCKETS.length;
    BUCKETS.forEach(function (bucket, i) {
      var h = (H - 2 * PAD - 10) * counts[i] / most;
      var x = PAD + i * slot + 6;
      root.appendChild(svg("rect", {x: x, y: (H - PAD - h).toFixed(1), width: slot - 12, height: h.toFixed(1),
                                    "class": "bar delay"}));
      root.appendChild(svg("text", {x: x, y: H - 6, "class": "tick"}, bucket[1]));
      root.appendChild(svg("text", {x: x, y: (H - PAD - h - 3).toFixed(1), "class": "tick"}, counts[i]));
    });
    return root;
  }

  function draw(jobs, now) {
    var recent = [];
    jobs.forEach(function (job) {
      var due = Jobman.parseTime(job["date-time"]);
      if (due === null || due < now - DAY || due > now) { return; }
      var launched = Jobman.parseTime(job["launched-at"]);
      var ended = Jobman.parseTime(job["finished-at"]);
      var run = launched === null ? 0 : (ended === null ? now : ended) - launched;
      recent.push({job: job, due: due, run: Math.max(0, run), delay: launched === null ? null : Math.max(0, launched - due)});
    });
    var rank = {scheduled: 0, launching: 1, running: 2, finished: 3, cancelled: 4, failed: 5};
    recent.sort(function (x, y) { return (rank[x.job.status] || 0) - (rank[y.job.status] || 0); });  // failures on top
    var a = document.getElementById("runs-chart"), b = document.getElementById("delay-chart");
    Jobman.clear(a); a.appendChild(runs(recent, now));
    Jobman.clear(b); b.appendChild(delays(recent));
  }

  return {draw: draw};
}());
