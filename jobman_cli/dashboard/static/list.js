/* The jobs list: polls GET /jobs, filters by state (server side) and title (here), newest first, paged. */
"use strict";
(function () {
  var PAGE = 50, POLL_MS = 2000;
  var jobs = [], page = 0, marked = false;
  var $ = function (id) { return document.getElementById(id); };

  function visible() {
    var needle = $("title-filter").value.trim().toLowerCase();
    if (!needle) { return jobs; }
    return jobs.filter(function (job) { return String(job.title || "").toLowerCase().indexOf(needle) !== -1; });
  }

  function cell(row, text, cls) { var td = Jobman.el("td", cls, text); row.appendChild(td); return td; }

  function render() {
    var shown = visible();
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (page >= pages) { page = pages - 1; }
    var body = $("rows");
    var fragment = document.createDocumentFragment();
    shown.slice(page * PAGE, page * PAGE + PAGE).forEach(function (job) {
      var row = Jobman.el("tr");
      row.dataset.jobId = String(job.id);
      var idCell = cell(row, "");
      var link = Jobman.el("a", null, job.id);
      link.href = "/jobs/" + encodeURIComponent(job.id);
      idCell.appendChild(link);
      var titleCell = cell(row, "", "title");
      var titleLink = Jobman.el("a", null, job.title || "(untitled)");
      titleLink.href = link.href;
      titleCell.appendChild(titleLink);
      cell(row, job["docker-image"], "image");
      cell(row, job.status, "state state-" + job.status);
      cell(row, Jobman.shortTime(job["date-time"]));
      cell(row, Jobman.shortTime(job["launched-at"]));
      cell(row, Jobman.shortTime(job["finished-at"]));
      cell(row, job["reason-code"] ? job["reason-code"] + ": " + (job.reason || "") : (job.reason || ""), "reason");
      fragment.appendChild(row);
    });
    Jobman.clear(body);
    body.appendChild(fragment);
    $("count").textContent = shown.length + " of " + jobs.length + " job(s)";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
  }

  function refresh() {
    var state = $("state").value;
    return Jobman.get("/jobs" + (state ? "?status=" + encodeURIComponent(state) : "")).then(function (answer) {
      if (state !== $("state").value) { return; }  // the filter changed while this was in flight
      jobs = answer.jobs.slice().sort(function (a, b) { return b.id - a.id; });
      render();
      if (!marked && $("rows").rows.length && window.performance && performance.mark) {
        marked = true;
        performance.mark("jobman-rows-shown");  // read by the benchmark: time until the table shows rows
      }
      var now = Date.now();
      if (!state) { JobmanChart.draw(jobs, now); }
      $("error").textContent = "";
      Jobman.setLive("live · updated " + new Date(now).toLocaleTimeString());
    }, function (err) {
      $("error").textContent = err.message || "The daemon did not answer.";
      Jobman.setLive("not connected");
    });
  }

  Jobman.boot(function () {
    $("filters").addEventListener("submit", function (event) { event.preventDefault(); });
    $("title-filter").addEventListener("input", function () { page = 0; render(); });
    $("state").addEventListener("change", function () { page = 0; jobs = []; render(); refresh(); });
    $("prev").addEventListener("click", function () { page = Math.max(0, page - 1); render(); });
    $("next").addEventListener("click", function () { page += 1; render(); });
    Jobman.every(POLL_MS, refresh);
  });
}());
