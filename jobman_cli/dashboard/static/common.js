/* jobman dashboard: the token, the API client and small DOM helpers shared by every page.
 * The API token lives in this tab's sessionStorage and travels only in the Authorization header.
 * Job data is only ever put into the page with textContent (never innerHTML). */
"use strict";
var Jobman = (function () {
  var KEY = "jobman-api-token";
  var API = "/jobMan/v1.1";

  function token() { try { return sessionStorage.getItem(KEY); } catch (e) { return null; } }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function ApiError(status, message) { this.status = status; this.message = message; }

  /* GET an API path; resolves with the parsed JSON, rejects with ApiError. */
  function get(path) {
    return fetch(API + path, {headers: {"Authorization": "Bearer " + token()}, cache: "no-store",
                              credentials: "omit", redirect: "error"})
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (response.status === 401) { logout("The token was refused; log in again."); }
          if (!response.ok) { throw new ApiError(response.status, body.error || ("HTTP " + response.status)); }
          return body;
        });
      });
  }

  function setLive(text) { var live = document.getElementById("live"); if (live) { live.textContent = text; } }

  function logout(message) {
    try { sessionStorage.removeItem(KEY); } catch (e) { /* storage disabled */ }
    document.getElementById("app").hidden = true;
    document.getElementById("logout").hidden = true;
    document.getElementById("login").hidden = false;
    document.getElementById("login-error").textContent = message || "";
    setLive("");
  }

  /* Shows the login form until a token works, then calls start() once. */
  function boot(start) {
    var form = document.getElementById("login");
    var started = false;
    function enter() {
      form.hidden = true;
      document.getElementById("app").hidden = false;
      document.getElementById("logout").hidden = false;
      if (!started) { started = true; start(); }
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var input = document.getElementById("token");
      var value = input.value.trim();
      input.value = "";
      if (!value) { return; }
      try { sessionStorage.setItem(KEY, value); } catch (e) { /* storage disabled: fails below */ }
      // a cheap authenticated request: 200 or 404 both mean the token was accepted
      get("/jobs/1/status").then(function () { enter(); }, function (err) {
        if (err instanceof ApiError && err.status === 404) { enter(); return; }
        logout(err instanceof ApiError ? err.message : "The daemon did not answer.");
      });
    });
    document.getElementById("logout").addEventListener("click", function () { logout(""); window.location.reload(); });
    if (token()) { enter(); } else { logout(""); }
  }

  function parseTime(text) { if (!text) { return null; } var t = Date.parse(text); return isNaN(t) ? null : t; }

  function duration(ms) {
    if (ms === null || ms === undefined || isNaN(ms)) { return "–"; }
    var sign = ms < 0 ? "-" : "";
    var s = Math.abs(ms) / 1000;
    if (s < 60) { return sign + (s < 10 ? s.toFixed(1) : Math.round(s)) + " s"; }
    var m = Math.floor(s / 60);
    if (m < 60) { return sign + m + " min " + Math.round(s - 60 * m) + " s"; }
    var h = Math.floor(m / 60);
    if (h < 48) { return sign + h + " h " + (m - 60 * h) + " min"; }
    return sign + Math.floor(h / 24) + " d " + (h % 24) + " h";
  }

  function shortTime(text) { return text ? String(text).replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "Z") : "–"; }

  /* Repeats task (a promise; true = done) `ms` after each run ends, or 4x the run's own time when
   * that is longer (a 10,000-job list costs the daemon ~0.3 s: one tab must not keep a core busy);
   * pauses in hidden tabs. */
  function every(ms, task) {
    function run() {
      if (document.hidden) { setTimeout(run, ms); return; }
      var began = Date.now();
      Promise.resolve().then(task).catch(function () { /* shown by the task */ })
        .then(function (stop) { if (stop !== true) { setTimeout(run, Math.max(ms, 4 * (Date.now() - began))); } });
    }
    run();
  }

  /* ---- schedules (plain_schedules.py renders the same, server side) ---- */
  function formatEvery(seconds) {
    var rest = Number(seconds), parts = [];
    if (isNaN(rest)) { return String(seconds); }
    [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]].forEach(function (u) {
      if (rest >= u[1]) { parts.push(Math.floor(rest / u[1]) + u[0]); rest = rest % u[1]; }
    });
    return parts.join("") || "0s";
  }

  function spec(s) { return s.cron ? String(s.cron) : "every " + formatEvery(s.every); }

  function schedState(s) { return s.paused ? "paused" : "active"; }

  /* [utc, local] of the next occurrence, as the plain pages show them. */
  function nextCells(s) {
    if (s.paused) { return ["– (paused)", "–"]; }
    if (!s["next-at"]) { return ["none", "–"]; }
    return [shortTime(s["next-at"]), s["next-at-local"] || s.tz];
  }

  var COUNTED = [["missed", "missed"], ["skipped", "skipped"], ["refused", "refused"], ["replaced-previous", "replaced"]];

  /* "missed 3 · refused 1" into `node` (a range record counts its `count`), or "none". */
  function recordCounts(node, records) {
    clear(node);
    var shown = 0;
    COUNTED.forEach(function (pair) {
      var n = 0;
      (records || []).forEach(function (r) {
        if (r.outcome === pair[0]) { n += (typeof r.count === "number" && r.count > 0) ? r.count : 1; }
      });
      if (!n) { return; }
      if (shown) { node.appendChild(document.createTextNode(" · ")); }
      node.appendChild(el("span", "rec rec-" + pair[1], pair[1] + " " + n));
      shown += 1;
    });
    if (!shown) { node.appendChild(el("span", "rec rec-none", "none")); }
  }

  /* A link to a job's page ("#12"), or the value as text. */
  function jobLink(id) {
    if (typeof id !== "number" || id < 1) { return el("span", null, id === null || id === undefined ? "–" : id); }
    var a = el("a", "job-link", "#" + id);
    a.href = "/jobs/" + encodeURIComponent(id);
    return a;
  }

  return {get: get, boot: boot, el: el, clear: clear, ApiError: ApiError, parseTime: parseTime,
          duration: duration, shortTime: shortTime, every: every, setLive: setLive, spec: spec,
          formatEvery: formatEvery, schedState: schedState, nextCells: nextCells, recordCounts: recordCounts,
          jobLink: jobLink};
}());
