/* One schedule's page: polls GET /schedules/<id> (the schedule, its records and latest runs).
 * The template is shown as `jobman schedules show` shows it: env variables and secrets by name only. */
"use strict";
(function () {
  var POLL_MS = 2000;
  var OWN_ROWS = {"docker-image": true, title: true, "env-variables": true, secrets: true};
  var $ = function (id) { return document.getElementById(id); };
  var match = /^\/schedules\/([0-9]+)\/?$/.exec(window.location.pathname);
  var scheduleId = match ? match[1] : null;

  function pair(dl, name, value, cls) {
    dl.appendChild(Jobman.el("dt", null, name));
    var dd = Jobman.el("dd", cls);
    if (value instanceof Node) { dd.appendChild(value); } else { dd.textContent = String(value === null || value === undefined || value === "" ? "–" : value); }
    dl.appendChild(dd);
  }

  function slug(name) { return name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, ""); }

  function details(s) {
    var next = Jobman.nextCells(s);
    var rows = [["ID", s.id], ["Title", s.title || "(untitled)"], ["Schedule", Jobman.spec(s)], ["Zone", s.tz],
                ["State", Jobman.schedState(s)], ["Next (UTC)", next[0]], ["Next (local)", next[1]],
                ["Overlap", s.overlap], ["Last job", Jobman.jobLink(s["last-job-id"])],
                ["Created", Jobman.shortTime(s["created-at"])], ["Updated", Jobman.shortTime(s["updated-at"])]];
    var dl = $("details");
    Jobman.clear(dl);
    rows.forEach(function (r) { pair(dl, r[0], r[1], "detail-" + slug(r[0])); });
  }

  function template(t) {
    var dl = $("template");
    Jobman.clear(dl);
    pair(dl, "image", t["docker-image"] || "", "tpl-image");
    Object.keys(t).filter(function (k) { return !OWN_ROWS[k]; }).sort().forEach(function (k) {
      var v = t[k];
      pair(dl, k, (typeof v === "string" ? v : JSON.stringify(v)).slice(0, 300), "tpl-" + k);
    });
    var env = Object.keys(t["env-variables"] || {}).sort(), secrets = Object.keys(t.secrets || {}).sort();
    if (env.length) { pair(dl, "env (names)", env.join(", "), "tpl-env"); }
    if (secrets.length) { pair(dl, "secrets (names)", secrets.join(", "), "tpl-secrets"); }
  }

  function runs(list) {
    $("no-runs").hidden = list.length > 0;
    $("runs").hidden = list.length === 0;
    var body = $("runs").tBodies[0];
    Jobman.clear(body);
    list.forEach(function (r) {
      var tr = Jobman.el("tr");
      tr.dataset.jobId = String(r.id);
      tr.appendChild(Jobman.el("td")).appendChild(Jobman.jobLink(r.id));
      tr.appendChild(Jobman.el("td", null, Jobman.shortTime(r.occurrence)));
      tr.appendChild(Jobman.el("td", "state state-" + r.status, r.status));
      tr.appendChild(Jobman.el("td", "reason", r.reason || ""));
      body.appendChild(tr);
    });
  }

  function occurrences(r) {
    var first = Jobman.shortTime(r.occurrence);
    if (r.until && r.until !== r.occurrence) {
      return first + " .. " + Jobman.shortTime(r.until) + " (" + (r.count === undefined ? "?" : r.count) + ")";
    }
    return first;
  }

  function records(list) {
    $("no-records").hidden = list.length > 0;
    $("records").hidden = list.length === 0;
    var body = $("records").tBodies[0];
    Jobman.clear(body);
    list.slice().reverse().forEach(function (r) {  // newest first, as the runs
      var tr = Jobman.el("tr", "outcome-" + r.outcome);
      tr.appendChild(Jobman.el("td", null, occurrences(r)));
      tr.appendChild(Jobman.el("td", "outcome", r.outcome));
      var job = Jobman.el("td");
      job.appendChild(r["job-id"] === null || r["job-id"] === undefined ? document.createTextNode("–") : Jobman.jobLink(r["job-id"]));
      tr.appendChild(job);
      tr.appendChild(Jobman.el("td", "detail", r.detail || ""));
      tr.appendChild(Jobman.el("td", null, Jobman.shortTime(r.at)));
      body.appendChild(tr);
    });
    Jobman.recordCounts($("record-counts"), list);
  }

  function show(s) {
    document.title = "jobman: schedule " + s.id;
    $("schedule-title").textContent = "Schedule " + s.id + " " + (s.title || "(untitled)");
    $("runs-hint").textContent = "jobman list --schedule " + s.id;
    var state = Jobman.schedState(s);
    $("schedule-state").textContent = state;
    $("schedule-state").className = "state sched-" + state;
    details(s);
    template(s.template || {});
    runs(s.runs || []);
    records(s.records || []);
  }

  function refresh() {
    return Jobman.get("/schedules/" + scheduleId).then(function (s) {
      show(s);
      $("error").textContent = "";
      Jobman.setLive("live · updated " + new Date().toLocaleTimeString());
    }, function (err) {
      $("error").textContent = err.message || "The daemon did not answer.";
      if (err.status === 404) { Jobman.setLive("no such schedule"); return true; }  // deleted: stop asking
      Jobman.setLive("not connected");
    });
  }

  Jobman.boot(function () {
    if (!scheduleId) { $("error").textContent = "no such schedule"; return; }
    Jobman.every(POLL_MS, refresh);
  });
}());
