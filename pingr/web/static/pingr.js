// pingr: live updates and in-place actions for server-rendered pages. Every page works
// without this script; with it, forms post in the background and changes arrive over SSE.
(function () {
  "use strict";
  var body = document.body;
  var LABELS = {up: "Up", down: "Down", unreachable: "Unreachable", paused: "Paused",
    stale: "Stale", pending: "Pending"};
  var refreshTimer = null, lastRefresh = 0, noticeTimer = null;

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) { el.title = el.textContent; el.textContent = d.toLocaleString(); }
    });
  }

  function notice(text, bad) {
    var el = document.getElementById("notice");
    if (!el || !text) { return; }
    el.textContent = text;
    el.className = bad ? "notice bad" : "notice";
    el.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { el.hidden = true; }, bad ? 8000 : 3500);
  }

  // Fetch this page again and swap the sections marked data-refresh, except one the user
  // is typing in. A lost session goes back to the sign-in page.
  function refresh() {
    refreshTimer = null;
    lastRefresh = Date.now();
    fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (res) {
        if (res.redirected && res.url.indexOf("/login") >= 0) { location.assign(res.url); return null; }
        return res.ok ? res.text() : null;
      })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-refresh][id]").forEach(function (old) {
          var fresh = doc.getElementById(old.id);
          var active = document.activeElement;
          if (!fresh || (active && active !== document.body && old.contains(active) &&
              /INPUT|SELECT|TEXTAREA/.test(active.tagName))) { return; }
          old.replaceWith(fresh);
          localTimes(fresh);
        });
        if (doc.title) { document.title = doc.title; }
      })
      .catch(function () { /* offline for a moment: the next event tries again */ });
  }

  function scheduleRefresh(delay) {
    if (refreshTimer) { return; }
    var wait = Math.max(delay === undefined ? 700 : delay, 2500 - (Date.now() - lastRefresh));
    refreshTimer = setTimeout(refresh, wait);
  }

  function rows(id) {
    return document.querySelectorAll('[data-target="' + CSS.escape(id) + '"]');
  }

  function setState(id, state) {
    rows(id).forEach(function (row) {
      var badge = row.querySelector('[data-role="state"]');
      if (badge) { badge.className = "badge " + state; badge.textContent = LABELS[state] || state; }
    });
  }

  // Actions: post in the background, say how it went, show the new state.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.hasAttribute("data-action")) { return; }
    ev.preventDefault();
    var button = form.querySelector("button");
    if (button) { button.disabled = true; }
    fetch(form.action, {method: "POST", credentials: "same-origin",
      headers: {"Accept": "application/json"}, body: new URLSearchParams(new FormData(form))})
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (out) {
          notice(res.ok ? out.message : (out.detail || "That did not work (" + res.status + ")"), !res.ok);
          if (res.status === 401) { location.assign("/login"); return; }
          if (res.ok && form.getAttribute("action").indexOf("/silences") === 0) { form.reset(); }
          if (button) { button.disabled = false; }
          refresh();
          if (out.duration) { setTimeout(refresh, out.duration * 1000 + 400); }
        });
      })
      .catch(function () { if (button) { button.disabled = false; } notice("No answer from pingr", true); });
  });

  function dashboard(url) {
    var es = new EventSource(url);
    es.addEventListener("target.check_result", function (ev) {
      var d = JSON.parse(ev.data);
      rows(d.target.id).forEach(function (row) {
        var cell = row.querySelector('[data-role="latency"]');
        if (cell && d.success) { cell.textContent = d.latency_ms === null ? "—" : d.latency_ms + " ms"; }
      });
    });
    ["target.down", "target.up", "target.unreachable", "target.paused"].forEach(function (type) {
      es.addEventListener(type, function (ev) {
        var d = JSON.parse(ev.data);
        if (d.target) { setState(d.target.id, d.new); }
        scheduleRefresh(300);
      });
    });
    ["target.deleted", "alert.acknowledged", "monitor.stale", "monitor.fresh", "silence.changed",
      "heartbeat.missed"].forEach(function (type) {
      es.addEventListener(type, function () { scheduleRefresh(); });
    });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) { notice("Live updates stopped: reload the page", true); }
    };
    window.addEventListener("pagehide", function () { es.close(); });
  }

  function statusPage(url) {
    var es = new EventSource(url);
    var banners = {operational: "ok", partial_outage: "warn", major_outage: "bad"};
    var first = true;
    es.addEventListener("status", function (ev) {
      var d = JSON.parse(ev.data);
      if (!first) { scheduleRefresh(1500); }  // the incidents list follows
      first = false;
      var banner = document.getElementById("banner");
      if (banner) {
        banner.className = "banner " + (banners[d.status.indicator] || "unknown");
        banner.querySelector('[data-role="banner"]').textContent = d.status.message;
      }
      d.components.forEach(function (c) {
        var li = document.querySelector('[data-component="' + CSS.escape(c.name) + '"]');
        var badge = li && li.querySelector('[data-role="state"]');
        if (badge) { badge.className = "badge " + c.status; badge.textContent = c.label; }
      });
    });
    window.addEventListener("pagehide", function () { es.close(); });
  }

  localTimes(document);
  var live = body.getAttribute("data-live");
  if (live && window.EventSource) {
    if (body.getAttribute("data-page") === "status") { statusPage(live); } else { dashboard(live); }
  }
}());
