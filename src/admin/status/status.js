// The admin listener's status page. Served from the binary; no third-party code. The access
// token lives in this closure only (no cookie, no storage): reloading the page signs out.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let token = null;
  let previous = null; // {at, counts} of the last metrics read, for rates

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function fill(tbody, items, render) {
    tbody.replaceChildren();
    for (const item of items) {
      const tr = document.createElement("tr");
      render(tr, item);
      tbody.appendChild(tr);
    }
  }

  // bo_gateway_requests_total{route="x",method="GET",class="5xx"} 12 -> per route: total, 5xx.
  function requestCounts(text) {
    const counts = {};
    const re = /^bo_gateway_requests_total\{([^}]*)\} (\d+(?:\.\d+)?)$/;
    for (const line of text.split("\n")) {
      const m = re.exec(line);
      if (!m) continue;
      const labels = {};
      for (const part of m[1].matchAll(/(\w+)="([^"]*)"/g)) labels[part[1]] = part[2];
      const c = (counts[labels.route] ||= { total: 0, errors: 0 });
      c.total += Number(m[2]);
      if (labels.class === "5xx") c.errors += Number(m[2]);
    }
    return counts;
  }

  async function refreshStatus() {
    try {
      const [ready, metrics] = await Promise.all([
        fetch("/readyz").then((r) => r.json()),
        fetch("/metrics").then((r) => r.text()),
      ]);
      const now = Date.now();
      const counts = requestCounts(metrics);
      const secs = previous ? (now - previous.at) / 1000 : 0;
      const rate = (route, key) => {
        if (!previous || secs <= 0) return "…";
        const before = (previous.counts[route] || { total: 0, errors: 0 })[key];
        const after = (counts[route] || { total: 0, errors: 0 })[key];
        return ((after - before) / secs).toFixed(2);
      };
      fill($("routes").tBodies[0], ready.routes, (tr, r) => {
        cell(tr, r.name);
        cell(tr, `${r.healthy} / ${r.total}`, r.healthy === 0 ? "bad" : "ok");
        cell(tr, rate(r.name, "total"));
        cell(tr, rate(r.name, "errors"));
      });
      previous = { at: now, counts };
      $("state").textContent = ready.status;
      $("state").className = `badge ${ready.status}`;
      $("store").textContent = `${ready.store.kind} (${ready.store.state})`;
      $("updated").textContent = `updated ${new Date(now).toLocaleTimeString()}`;
    } catch (e) {
      $("state").textContent = "unreachable";
      $("state").className = "badge unready";
    }
  }

  async function api(method, path) {
    const r = await fetch(path, { method, headers: { Authorization: `Bearer ${token}` } });
    if (r.status === 401) {
      signOut("Your session has ended; sign in again.");
      throw new Error("signed out");
    }
    if (!r.ok && r.status !== 204) {
      const body = await r.json().catch(() => ({}));
      throw new Error(`${r.status} ${(body.errors || []).join(", ")}`);
    }
    return r.status === 204 ? null : r.json();
  }

  async function searchSessions() {
    const login = $("search-login").value.trim();
    const query = login ? `?login=${encodeURIComponent(login)}` : "?limit=50";
    try {
      const sessions = await api("GET", `/admin/sessions${query}`);
      $("admin-error").textContent = sessions.length ? "" : "No live sessions.";
      fill($("sessions").tBodies[0], sessions, (tr, s) => {
        tr.dataset.session = s.session;
        cell(tr, s.session, "id");
        for (const k of ["login", "createdAt", "lastRefreshAt", "refreshCount", "clientAddress", "userAgent", "expiresAt"]) {
          cell(tr, s[k]);
        }
        const button = document.createElement("button");
        button.type = "button";
        button.className = "end-session";
        button.textContent = "End session";
        button.addEventListener("click", () => endSession(s.session));
        cell(tr, "").appendChild(button);
      });
    } catch (e) {
      $("admin-error").textContent = e.message;
    }
  }

  async function endSession(id) {
    try {
      await api("DELETE", `/admin/sessions/${encodeURIComponent(id)}`);
      await Promise.all([searchSessions(), refreshAudit()]);
    } catch (e) {
      $("admin-error").textContent = e.message;
    }
  }

  async function refreshAudit() {
    if (!token) return;
    try {
      const events = await api("GET", "/admin/audit?limit=30");
      fill($("audit").tBodies[0], events, (tr, ev) => {
        tr.className = `event ${ev.type.replace(".", "-")}`;
        cell(tr, ev.time);
        cell(tr, ev.type, "type");
        cell(tr, ev.login);
        cell(tr, ev.session, "id");
        cell(tr, ev.clientAddress);
        cell(tr, ev.details ? JSON.stringify(ev.details) : "");
      });
    } catch (e) {
      $("admin-error").textContent = e.message;
    }
  }

  async function signIn(event) {
    event.preventDefault();
    $("signin-error").textContent = "";
    const login = $("login").value;
    const body = JSON.stringify({ login, password: $("password").value });
    $("password").value = "";
    try {
      const r = await fetch("/auth/token", { method: "POST", headers: { "Content-Type": "application/json" }, body });
      const answer = await r.json();
      if (!r.ok) throw new Error(answer.message || `sign-in failed (${r.status})`);
      token = answer.accessToken; // the refresh token is not kept: sign in again when this expires
      $("who").textContent = `(signed in as ${login})`;
      $("signin").hidden = true;
      $("admin").hidden = false;
      await Promise.all([searchSessions(), refreshAudit()]);
    } catch (e) {
      $("signin-error").textContent = e.message;
    }
  }

  function signOut(message) {
    token = null;
    $("admin").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("sessions").tBodies[0].replaceChildren();
    $("audit").tBodies[0].replaceChildren();
  }

  $("signin-form").addEventListener("submit", signIn);
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    searchSessions();
  });
  $("signout").addEventListener("click", () => signOut());
  refreshStatus();
  setInterval(refreshStatus, 5000);
  setInterval(refreshAudit, 5000);
})();
