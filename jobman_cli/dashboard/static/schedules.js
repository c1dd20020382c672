/* The schedules list: polls GET /schedules (by id; no records in that answer), and for each
 * schedule of the page shown (at most 50): GET /schedules/<id> for its records (the counts) only
 * when the schedule changed since it was last read (every record is a write of the schedule, which
 * moves its updated-at), and GET /jobs/<last-job-id>/status for its last run until that run has
 * ended. So a quiet list costs the daemon one list read per poll, not 50 shows. */
"use strict";
(function () {
  var PAGE = 50, POLL_MS = 2000;
  var page = 0, total = 0;
  var $ = function (id) { return document.getElementById(id); };

  function cell(row, text, cls) { var td = Jobman.el("td", cls, text); row.appendChild(td); return td; }

  var TERMINAL = {finished: true, failed: true, cancelled: true};
  var shows = {};  // schedule id -> {key, records}: the last show read, and what it was read for
  var runs = {};   // job id -> {status, reason} of an ended last run (never read again)

  function changeKey(s) { return [s["updated-at"], s["next-at"], s["last-job-id"], s.paused].join("|"); }

  function records(s) {
    var seen = shows[s.id];
    if (seen && seen.key === changeKey(s)) { return Promise.resolve(seen.records); }
    return Jobman.get("/schedules/" + encodeURIComponent(s.id)).then(function (shown) {
      shows[s.id] = {key: changeKey(s), records: shown.records || []};
      return shows[s.id].records;
    }, function (err) {
      if (err.status === 404) { return null; }  // deleted since the list was read
      throw err;
    });
  }

  function run(s) {
    var last = s["last-job-id"];
    if (last === null || last === undefined) { return Promise.resolve(null); }
    if (runs[last]) { return Promise.resolve(runs[last]); }
    return Jobman.get("/jobs/" + encodeURIComponent(last) + "/status").then(function (job) {
      var found = {status: job.status, reason: job.reason};
      if (TERMINAL[job.status]) { runs[last] = found; }
      return found;
    }, function (err) {
      if (err.status === 404) { return {status: "(gone)", reason: null}; }  // pruned
      throw err;
    });
  }

  function lastRun(td, s, run) {
    var last = s["last-job-id"];
    if (last === null || last === undefined) { td.textContent = "–"; return; }
    var status = run ? String(run.status) : "(gone)";
    td.appendChild(Jobman.jobLink(last));
    td.appendChild(document.createTextNode(" "));
    td.appendChild(Jobman.el("span", "state state-" + status, status));
    if (run && run.reason) {
      td.appendChild(document.createTextNode(" "));
      td.appendChild(Jobman.el("span", "reason", run.reason));
    }
  }

  function row(item) {
    var s = item[0];
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
    lastRun(cell(tr, "", "last-run"), s, item[2]);
    Jobman.recordCounts(cell(tr, "", "records"), item[1]);
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
      var visible = all.slice(page * PAGE, page * PAGE + PAGE);
      var reads = visible.map(function (s) {
        return Promise.all([records(s), run(s)]).then(function (got) { return got[0] === null ? null : [s, got[0], got[1]]; });
      });
      return Promise.all(reads).then(function (shown) {
        if (wanted !== page) { return; }  // the page changed while this was in flight
        var keep = {};
        visible.forEach(function (s) { if (shows[s.id]) { keep[s.id] = shows[s.id]; } });
        shows = keep;  // only the page shown is cached
        render(shown.filter(function (item) { return item !== null; }));
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
