/* One job's page: polls GET /jobs/<id>/status and follows GET /jobs/<id>/logs?follow=1&after=... */
"use strict";
(function () {
  var JOB_MS = 2000, LOG_MS = 2000, KEEP_LINES = 1000;
  var TERMINAL = {finished: true, failed: true, cancelled: true};
  var $ = function (id) { return document.getElementById(id); };
  var match = /^\/jobs\/([0-9]+)\/?$/.exec(window.location.pathname);
  var jobId = match ? match[1] : null;
  var job = null, logNext = null, logDone = false, lines = [], missing = false;

  function ran(j) {  // the container started (jobs stored before started-at existed have no time for it)
    return j.status === "running" || j.status === "finished" || (j.status === "failed" && j["exit-code"] !== null);
  }

  function timeline(j) {
    var claimed = j.status !== "scheduled" || j.attempts > 0;
    var steps = [
      ["scheduled", j["created-at"], true],
      ["due", j["date-time"], true],
      ["claimed", j["claimed-at"] || null, claimed],  // older records have no claimed-at
      ["instance launched", j["launched-at"], !!j["launched-at"]],
      ["running", j["started-at"] || null, ran(j) || !!j["started-at"]],  // the instance's first "running" report
      [TERMINAL[j.status] ? j.status : "ended", j["finished-at"], !!TERMINAL[j.status]]
    ];
    var list = $("timeline");
    Jobman.clear(list);
    var previous = null;
    steps.forEach(function (step) {
      var item = Jobman.el("li", (step[2] ? "reached" : "pending") + (step[0] === "failed" ? " bad" : ""));
      item.appendChild(Jobman.el("span", "step", step[0]));
      var at = Jobman.parseTime(step[1]);
      item.appendChild(Jobman.el("span", "at", step[1] ? Jobman.shortTime(step[1]) : (step[2] ? "(time not recorded)" : "not yet")));
      if (at !== null && previous !== null) {
        item.appendChild(Jobman.el("span", "gap", "+" + Jobman.duration(at - previous[1]) + " after " + previous[0]));
      }
      if (at !== null) { previous = [step[0], at]; }
      list.appendChild(item);
    });
  }

  function details(j) {
    var env = Object.keys(j["env-variables"] || {}).map(function (k) { return k + "=" + j["env-variables"][k]; });
    var rows = [
      ["ID", j.id], ["Image", j["docker-image"]], ["State", j.status], ["Reason code", j["reason-code"] || "–"],
      ["Reason", j.reason || "–"], ["Exit code", j["exit-code"] === null ? "–" : j["exit-code"]],
      ["Instance", j["instance-id"] || "–"], ["Instance type", j["instance-type"] || "default"],
      ["Attempts", j.attempts], ["Cost", j.cost === undefined || j.cost === null ? "-" : j.cost],
      ["Timeout", j.timeout + " s"], ["Start deadline", j["start-deadline"] + " s"],
      ["Command", j.command ? JSON.stringify(j.command) : "(image default)"],
      ["Environment", env.length ? env.join("\n") : "–"],
      ["Secrets", Object.keys(j.secrets || {}).join(", ") || "–"],
      ["Notify", (j.notify || []).join("\n") || "–"]
    ];
    var dl = $("details");
    Jobman.clear(dl);
    rows.forEach(function (row) {
      dl.appendChild(Jobman.el("dt", null, row[0]));
      dl.appendChild(Jobman.el("dd", "detail-" + row[0].toLowerCase().replace(/ /g, "-"), row[1]));
    });
    dl.appendChild(Jobman.el("dt", null, "Schedule"));  // a schedule's run links back to its schedule
    var dd = Jobman.el("dd", "detail-schedule", typeof j["schedule-id"] === "number" ? null : "–");
    if (typeof j["schedule-id"] === "number") {
      var link = Jobman.el("a", null, "schedule " + j["schedule-id"]);
      link.id = "schedule-link";
      link.href = "/schedules/" + encodeURIComponent(j["schedule-id"]);
      dd.appendChild(link);
      dd.appendChild(document.createTextNode(" (occurrence " + Jobman.shortTime(j.occurrence) + ")"));
    }
    dl.appendChild(dd);
  }

  function notifications(j) {
    var records = j.notifications || [];
    $("no-notifications").hidden = records.length > 0;
    $("notifications").hidden = records.length === 0;
    var body = $("notifications").tBodies[0];
    Jobman.clear(body);
    records.forEach(function (r) {
      var row = Jobman.el("tr");
      var history = (r.history || []).map(function (h) { return Jobman.shortTime(h.at) + " " + h.outcome; });
      [r.event, r.target, r.state, r.attempts, history.join("; ")].forEach(function (v) {
        row.appendChild(Jobman.el("td", null, v === undefined || v === null ? "–" : v));
      });
      body.appendChild(row);
    });
  }

  function show(j) {
    job = j;
    document.title = "jobman: job " + j.id;
    $("job-title").textContent = "#" + j.id + " " + (j.title || "(untitled)");
    $("job-state").textContent = j.status;
    $("job-state").className = "state state-" + j.status;
    timeline(j);
    details(j);
    notifications(j);
  }

  function refreshJob() {
    return Jobman.get("/jobs/" + jobId + "/status").then(function (j) {
      show(j);
      $("error").textContent = "";
      Jobman.setLive(TERMINAL[j.status] ? "ended" : "live · updated " + new Date().toLocaleTimeString());
      return !!TERMINAL[j.status] && logDone;
    }, function (err) {
      $("error").textContent = err.message || "The daemon did not answer.";
      if (err.status === 404) { missing = true; return true; }  // no such job: stop asking
    });
  }

  function appendLines(events) {
    if (!events.length) { return; }
    events.forEach(function (e) { lines.push(e.message); });
    if (lines.length > KEEP_LINES) { lines = lines.slice(lines.length - KEEP_LINES); }
    var pre = $("log");
    var follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = lines.join("\n");
    if (follow) { pre.scrollTop = pre.scrollHeight; }
  }

  function refreshLog() {
    if (missing) { return Promise.resolve(true); }
    var query = "follow=1" + (logNext ? "&after=" + encodeURIComponent(logNext) : "");
    return Jobman.get("/jobs/" + jobId + "/logs?" + query).then(function (page) {
      appendLines(page.events || []);
      if (page.next) { logNext = page.next; }
      var ended = TERMINAL[page.job.status];
      if (page.more) { return refreshLog(); }
      logDone = !!ended && !page.waiting;
      $("log-state").textContent = page.waiting ? "(waiting for the log)" :
        (logDone ? "(complete: " + lines.length + " line(s) shown)" : "(following)");
      return logDone;
    }, function (err) {
      if (err.status === 409) { $("log-state").textContent = "(not launched yet)"; return false; }
      $("log-state").textContent = "(" + err.message + ")";
      if (err.status === 404 && job && TERMINAL[job.status]) { logDone = true; return true; }
      return false;
    });
  }

  Jobman.boot(function () {
    if (!jobId) { $("error").textContent = "no such job"; return; }
    Jobman.every(JOB_MS, refreshJob);
    Jobman.every(LOG_MS, refreshLog);
  });
}());
