/* The schedules list: polls GET /schedules (by id), then GET /schedules/<id> for each schedule of
 * the page shown (at most 50), whose records and latest runs give the counts and the last run's
 * status (the list answer carries no records: README "Dashboard"). */
"use strict";
(function () {
  var PAGE = 50, POLL_MS = 2000;
  var page = 0, total = 0;
  var $ = function (id) { return document.getElementById(id); };

  function cell(row, text, cls) { var td = Jobman.el("td", cls, text); row.appendChild(td); return td; }

  function lastRun(td, s) {
    var last = s["last-job-id"];
    if (last === null || last === undefined) { td.textContent = "–"; return; }
    var run = null;
    (s.runs || []).forEach(function (r) { if (r.id === last) { run = r; } });
    var status = run ? String(run.status) : "(gone)";
    td.appendChild(Jobman.jobLink(last));
    td.appendChild(document.createTextNode(" "));
    td.appendChild(Jobman.el("span", "state state-" + status, status));
    if (run && run.reason) {
      td.appendChild(document.createTextNode(" "));
      td.appendChild(Jobman.el("span", "reason", run.reason));
    }
  }

  function row(s) {
    var tr = Jobman.el("tr");
    tr.dataset.scheduleId = String(s.id);
    var href = "/schedules/" + encodeURIComponent(s.id);
    var idLink = Jobman.el("a", null, s.id);
    idLink.href = href;
    cell(tr, "").appendChild(idLink);
    var titleLink = Jobman.el("a", null, s.title || "(untitled)");
    titleLink.href = href;
    cell(tr, "", "title").appendChild(titleLink);
    cell(tr, (s.template || {})["docker-image"] || "–", "image");
    cell(tr, Jobman.spec(s), "spec");
    cell(tr, s.tz, "tz");
    var state = Jobman.schedState(s);
    cell(tr, state, "state sched-" + state);
    var next = Jobman.nextCells(s);
    cell(tr, next[0], "next");
    cell(tr, next[1], "next-local");
    cell(tr, s.overlap, "overlap");
    lastRun(cell(tr, "", "last-run"), s);
    Jobman.recordCounts(cell(tr, "", "records"), s.records);
    return tr;
  }

  function render(shown) {
    var pages = Math.max(1, Math.ceil(total / PAGE));
    var fragment = document.createDocumentFragment();
    shown.forEach(function (s) { fragment.appendChild(row(s)); });
    Jobman.clear($("rows"));
    $("rows").appendChild(fragment);
    $("count").textContent = total + " schedule(s)";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
  }

  function refresh() {
    return Jobman.get("/schedules").then(function (answer) {
      var all = answer.schedules || [];
      total = all.length;
      var pages = Math.max(1, Math.ceil(total / PAGE));
      if (page >= pages) { page = pages - 1; }
      var wanted = page;
      var reads = all.slice(page * PAGE, page * PAGE + PAGE).map(function (s) {
        return Jobman.get("/schedules/" + encodeURIComponent(s.id)).catch(function (err) {
          if (err.status === 404) { return null; }  // deleted since the list was read
          throw err;
        });
      });
      return Promise.all(reads).then(function (shown) {
        if (wanted !== page) { return; }  // the page changed while this was in flight
        render(shown.filter(function (s) { return s !== null; }));
        $("error").textContent = "";
        Jobman.setLive("live · updated " + new Date().toLocaleTimeString());
      });
    }).catch(function (err) {
      $("error").textContent = err.message || "The daemon did not answer.";
      Jobman.setLive("not connected");
    });
  }

  Jobman.boot(function () {
    $("prev").addEventListener("click", function () { page = Math.max(0, page - 1); refresh(); });
    $("next").addEventListener("click", function () { page += 1; refresh(); });
    Jobman.every(POLL_MS, refresh);
  });
}());
