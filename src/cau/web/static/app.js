// cau dashboard: every action is a call to the REST API (/api/v1) with the session cookie and
// the CSRF token of this page. No build step, no framework.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";

async function api(method, url, body) {
  const opts = { method, headers: { "X-CSRF-Token": CSRF, Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(url, opts);
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = (data && data.error) || { message: res.statusText };
    const fields = (err.fields || []).map((f) => `${f.field}: ${f.message}`).join("; ");
    throw new Error(err.message + (fields && !err.message.includes(fields) ? ` (${fields})` : ""));
  }
  return data;
}

function flash(message, kind) {
  const box = document.getElementById("flash");
  if (!box) return alert(message);
  box.className = "callout " + (kind || "bad");
  box.textContent = message;
  box.scrollIntoView({ block: "nearest" });
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// --- cluster page: preview, apply dialog ---------------------------------------------------------

async function previewUpdates(cluster, button) {
  button.disabled = true;
  const out = document.getElementById("preview");
  out.replaceChildren(el("p", { class: "dim" }, "Scanning every node…"));
  try {
    const profile = document.getElementById("preview-profile")?.value || null;
    const data = await api("POST", `/api/v1/clusters/${encodeURIComponent(cluster)}/scan`, { profile });
    const rows = [];
    let total = 0;
    for (const n of data.nodes) {
      total += n.updates.length;
      if (!n.updates.length) {
        rows.push(el("tr", {}, el("td", { class: "name" }, n.node), el("td", { class: "dim", colspan: "3" },
          n.reachable ? "no applicable updates" : "unreachable: " + Object.values(n.errors).join("; "))));
      }
      n.updates.forEach((u, i) => rows.push(el("tr", {},
        el("td", {}, i === 0 ? n.node : ""), el("td", { class: "mono" }, u.id), el("td", {}, u.title),
        el("td", {}, u.needs_restart ? el("span", { class: "badge warn" }, "restart") : ""))));
    }
    const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", {}, "Update"),
      el("th", {}, "Title"), el("th", {}, "Restart"))), el("tbody", {}, ...rows));
    out.replaceChildren(el("h2", {}, `Preview: ${total} update(s) on ${data.nodes.length} node(s)`),
      el("div", { class: "table-wrap", id: "preview-table" }, table),
      el("p", { class: "dim" }, "First-order updates only: second-order updates appear once these are installed."));
  } catch (e) {
    out.replaceChildren();
    flash(e.message);
  } finally {
    button.disabled = false;
  }
}

const OUTCOME_BADGE = { "pass": "ok", "warning": "warn", "fail": "bad", "not-applicable": "muted" };

async function checkReadiness(cluster, button) {
  button.disabled = true;
  const out = document.getElementById("readiness");
  out.replaceChildren(el("p", { class: "dim" }, "Checking every rule on every node…"));
  try {
    const data = await api("GET", `/api/v1/clusters/${encodeURIComponent(cluster)}/check`);
    const count = (o) => data.results.filter((r) => r.outcome === o).length;
    const rows = data.results.map((r) => el("tr", { "data-rule": r.rule, "data-outcome": r.outcome },
      el("td", {}, el("span", { class: "badge " + (OUTCOME_BADGE[r.outcome] || "muted") }, r.outcome)),
      el("td", {}, el("strong", {}, r.rule), el("br", {}), el("small", { class: "dim" }, r.title)),
      el("td", {}, r.nodes.join(", ") || "cluster"),
      el("td", {}, r.detail, r.impact ? el("br", {}) : "", r.impact ? el("small", { class: "dim" }, r.impact) : ""),
      el("td", {}, r.fix)));
    const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Result"), el("th", {}, "Rule"),
      el("th", {}, "Where"), el("th", {}, "Found"), el("th", {}, "Fix"))), el("tbody", {}, ...rows));
    out.replaceChildren(
      el("p", { id: "readiness-summary" }, `${count("fail")} failed, ${count("warning")} warning(s), ` +
        `${count("pass")} passed, ${count("not-applicable")} not applicable (checked ${data.checked_at})`),
      el("div", { class: "table-wrap", id: "readiness-table" }, table));
  } catch (e) {
    out.replaceChildren();
    flash(e.message);
  } finally {
    button.disabled = false;
  }
}

async function applyUpdates(cluster, form) {
  const f = new FormData(form);
  const options = {};
  const num = (k) => { const v = f.get(k); if (v !== null && v !== "") options[k] = Number(v); };
  const par = f.get("max_parallel_nodes");
  if (par) options.max_parallel_nodes = par === "auto" ? "auto" : Number(par);
  num("max_failed_nodes");
  num("max_retries_per_node");
  for (const k of ["no_restart", "allow_nodes_in_maintenance", "require_all_nodes_online"]) {
    if (f.get(k)) options[k] = true;
  }
  for (const k of ["move", "failback_mode", "drain", "reboot_timeout", "stop_after"]) {
    const v = f.get(k);
    if (v) options[k] = v;
  }
  const order = (f.get("node_order") || "").split(/[\s,]+/).filter(Boolean);
  if (order.length) options.node_order = order;
  const body = { profile: f.get("profile") || null, options };
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  try {
    const res = await api("POST", `/api/v1/clusters/${encodeURIComponent(cluster)}/runs`, body);
    window.location = `/runs/${encodeURIComponent(res.run_id)}`;
  } catch (e) {
    const shown = document.getElementById("apply-error");
    shown.textContent = e.message;
    shown.hidden = false;
    submit.disabled = false;
  }
}

// --- live run view ---------------------------------------------------------------------------------

function seconds(s) {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`;
}

// A probe's running counts (cumulative for its session): what share of its checks answered.
function probeSummary(d) {
  const checked = (d.ok || 0) + (d.failed || 0);
  const share = checked ? `${(100 * d.ok / checked).toFixed(1)} % of ${checked} checks answered` : "no checks yet";
  const parts = [`probe ${d.probe} (${d.role}): ${share}`];
  if (d.failed) parts.push(`${d.failed} failed`);
  if (d.late) parts.push(`${d.late} late`);
  if (d.p99_ms != null) parts.push(`p99 ${d.p99_ms.toFixed(1)} ms`);
  if (d.down) parts.push(`down since ${new Date(d.down.started).toISOString().substring(11, 19)}`);
  return parts.join(", ") + (d.final ? " (final)" : "");
}

function describe(ev) {
  const d = ev.data || {};
  if (d.message) return d.message;
  if (ev.kind === "probe_summary") return probeSummary(d);
  if (ev.kind === "probe_down") return `probe ${d.probe} (${d.role}): DOWN${d.error ? " (" + d.error + ")" : ""}`;
  if (ev.kind === "probe_up") {
    return `probe ${d.probe} (${d.role}): up again after ${seconds(d.seconds || 0)} (${d.failed_checks || 0} failed check(s))`;
  }
  if (ev.kind === "intent") return `${ev.step}…`;
  if (ev.kind === "outcome") return `${ev.step}: ${d.ok === false ? "FAILED" + (d.error ? " " + d.error : "") : "done"}`;
  if (ev.kind === "node_finished") return `finished: ${d.status || ""}`;
  if (ev.kind === "waiting") return `waiting: ${d.reason || d.why || ""}`;
  if (ev.kind === "run_finished") return `run finished: ${d.status || ""}`;
  if (ev.kind === "stop_requested") return `stop requested${d.by ? " by " + d.by : ""}`;
  return ev.kind;
}

function watchRun(runId) {
  const tbody = document.querySelector("#events tbody");
  const state = document.getElementById("live-state");
  let refreshing = false, again = false;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const res = await fetch(`/runs/${encodeURIComponent(runId)}/panel`, { credentials: "same-origin" });
      if (res.ok) document.getElementById("panel").innerHTML = await res.text();
    } finally {
      refreshing = false;
      if (again) { again = false; setTimeout(refresh, 300); }
    }
  }
  const source = new EventSource(`/api/v1/runs/${encodeURIComponent(runId)}/events`);
  let timer = null;
  source.addEventListener("journal", (msg) => {
    const ev = JSON.parse(msg.data);
    const when = new Date(ev.ts).toISOString().substring(11, 19);
    tbody.prepend(el("tr", { "data-seq": ev.seq }, el("td", { class: "mono dim" }, when),
      el("td", {}, ev.node || ""), el("td", { class: "mono" }, ev.kind), el("td", {}, describe(ev))));
    if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 400);
  });
  source.addEventListener("end", (msg) => {
    source.close();
    const end = JSON.parse(msg.data);
    state.textContent = end.status ? `Run ended: ${end.status}` : `Run ${end.state}`;
    state.className = "callout " + (end.status === "Succeeded" ? "ok" : "warn");
    document.getElementById("stop-button")?.remove();
    refresh();
  });
}

async function stopRun(runId, button) {
  const reason = prompt("Reason for stopping (recorded in the journal and the audit trail):", "stopped from the dashboard");
  if (reason === null) return;
  button.disabled = true;
  try {
    await api("POST", `/api/v1/runs/${encodeURIComponent(runId)}/stop`, { reason });
    flash("Stop requested: the node in hand is finished or brought back out of maintenance; the others are canceled.", "warn");
  } catch (e) {
    flash(e.message);
    button.disabled = false;
  }
}

// --- profiles and admin ------------------------------------------------------------------------------

function parseOptions(text) {
  try { return JSON.parse(text || "{}"); } catch (e) { throw new Error("options: not valid JSON: " + e.message); }
}

async function saveProfile(form, creating) {
  const f = new FormData(form);
  const name = f.get("name");
  try {
    const body = { description: f.get("description") || "", options: parseOptions(f.get("options")) };
    if (creating) await api("POST", "/api/v1/profiles", { name, ...body });
    else await api("PUT", `/api/v1/profiles/${encodeURIComponent(name)}`, body);
    window.location = `/profiles/${encodeURIComponent(name)}?saved=1`;
  } catch (e) { flash(e.message); }
}

async function validateProfile(form) {
  try {
    const res = await api("POST", "/api/v1/profiles/validate", { options: parseOptions(new FormData(form).get("options")) });
    if (res.valid) flash("Valid. Effective options: " + JSON.stringify(res.effective), "ok");
    else flash("Invalid: " + res.problems.map((p) => `${p.field}: ${p.message}`).join("; "));
  } catch (e) { flash(e.message); }
}

async function deleteProfile(name) {
  if (!confirm(`Delete the profile '${name}'?`)) return;
  try { await api("DELETE", `/api/v1/profiles/${encodeURIComponent(name)}`); window.location = "/profiles"; }
  catch (e) { flash(e.message); }
}

async function createToken(form) {
  const f = new FormData(form);
  try {
    const res = await api("POST", "/api/v1/tokens", { name: f.get("name"), role: f.get("role") });
    flash(`Token for ${res.name} (${res.role}), shown once, copy it now: ${res.token}`, "warn");
  } catch (e) { flash(e.message); }
}

async function revokeToken(id) {
  if (!confirm(`Revoke token ${id}?`)) return;
  try { await api("DELETE", `/api/v1/tokens/${encodeURIComponent(id)}`); window.location.reload(); }
  catch (e) { flash(e.message); }
}

async function endSession(handle) {
  if (!confirm(`End browser session ${handle}? It is signed out at its next request.`)) return;
  try { await api("DELETE", `/api/v1/sessions/${encodeURIComponent(handle)}`); window.location.reload(); }
  catch (e) { flash(e.message); }
}

async function setPassword(form) {
  const f = new FormData(form);
  try {
    await api("PUT", `/api/v1/users/${encodeURIComponent(f.get("name"))}/password`, { role: f.get("role"), password: f.get("password") });
    window.location.reload();
  } catch (e) { flash(e.message); }
}

// Self-updating mode: the cluster's clustered role (/api/v1/clusters/{cluster}/role).
async function roleAction(button) {
  const base = `/api/v1/clusters/${encodeURIComponent(button.dataset.cluster)}/role`;
  const calls = {
    "add": () => api("POST", base, {}),
    "enable": () => api("PATCH", base, { enabled: true }),
    "disable": () => api("PATCH", base, { enabled: false }),
    "update-now": () => api("POST", `${base}/update-now`),
  };
  button.disabled = true;
  try {
    await calls[button.dataset.role]();
    window.location.reload();
  } catch (e) {
    flash(e.message);
    button.disabled = false;
  }
}

// --- wiring ------------------------------------------------------------------------------------------
// No inline handlers: the Content-Security-Policy allows scripts from /static only. Elements say
// what they do with data-action (clicks) and data-submit (forms).

const ACTIONS = {
  "preview": (b) => previewUpdates(b.dataset.cluster, b),
  "check": (b) => checkReadiness(b.dataset.cluster, b),
  "open-dialog": (b) => document.getElementById(b.dataset.dialog).showModal(),
  "close-dialog": (b) => b.closest("dialog").close(),
  "stop-run": (b) => stopRun(b.dataset.run, b),
  "validate-profile": (b) => validateProfile(b.form),
  "delete-profile": (b) => deleteProfile(b.dataset.name),
  "revoke-token": (b) => revokeToken(b.dataset.id),
  "end-session": (b) => endSession(b.dataset.handle),
  "role": (b) => roleAction(b),
};

const SUBMITS = {
  "apply": (f) => applyUpdates(f.dataset.cluster, f),
  "save-profile": (f) => saveProfile(f, f.dataset.creating === "true"),
  "create-token": (f) => createToken(f),
  "set-password": (f) => setPassword(f),
};

document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-action]");
  if (target && ACTIONS[target.dataset.action]) ACTIONS[target.dataset.action](target);
});

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-submit]");
  if (!form || !SUBMITS[form.dataset.submit]) return;
  event.preventDefault();
  SUBMITS[form.dataset.submit](form);
});

document.addEventListener("DOMContentLoaded", () => {
  const run = document.querySelector("[data-watch-run]");
  if (run) watchRun(run.dataset.watchRun);
});

// --- compliance: scans, the Remediate dialog, baselines, groups, exemptions (/api/v1/compliance...) -----

async function complianceScan(button) {
  const cluster = button.dataset.cluster;
  button.disabled = true;
  button.textContent = "Scanning…";
  try {
    await api("POST", `/api/v1/compliance/${encodeURIComponent(cluster)}/scan`, {});
    window.location.reload();
  } catch (e) {
    flash(e.message);
    button.disabled = false;
    button.textContent = "Scan now";
  }
}

async function remediate(cluster, form) {
  const f = new FormData(form);
  const unticked = [...form.querySelectorAll('input[name="update"]')].filter((c) => !c.checked).map((c) => c.value);
  const options = {};
  if (f.get("no_restart")) options.no_restart = true;
  const standalone = Boolean(f.get("standalone"));
  const body = { baselines: f.getAll("baseline"), exclude: unticked, profile: f.get("profile") || null, options };
  if (standalone) {
    body.nodes = f.getAll("node");
    body.force = Boolean(f.get("force"));
  } else {
    if (f.get("allow_nodes_in_maintenance")) options.allow_nodes_in_maintenance = true;
    options.move = f.get("move") || "live";
  }
  const shown = document.getElementById("remediate-error");
  const submit = form.querySelector("button[type=submit]");
  if (standalone && !body.nodes.length) {
    shown.textContent = "Choose the hosts to remediate as standalone hosts.";
    shown.hidden = false;
    return;
  }
  submit.disabled = true;
  try {
    const res = await api("POST", `/api/v1/compliance/${encodeURIComponent(cluster)}/remediate`, body);
    // what the operator accepted (standalone hosts whose roles are not moved) stays in sight on the run's page
    if (res.warnings.length) sessionStorage.setItem("cau-warnings", res.warnings.join(" · "));
    window.location = `/runs/${encodeURIComponent(res.run_id)}`;
  } catch (e) {
    shown.textContent = e.message;
    shown.hidden = false;
    submit.disabled = false;
  }
}

// A rule from the baselines page's two fields (kind, value), as POST /api/v1/baselines takes it.
function ruleOf(kind, value) {
  value = (value || "").trim();
  if (!value) throw new Error("the rule needs a value");
  if (kind === "package") {
    const m = /^(?:(apt|dnf):)?([^<>=\s]+)\s*>=\s*(\S+)$/.exec(value);
    if (!m) throw new Error(`package '${value}': write NAME>=VERSION, e.g. apt:openssl>=3.0.15-1`);
    return { kind: "package", plugin: m[1] || "apt", name: m[2], min_version: m[3] };
  }
  if (kind === "origin") return { kind: "origin", origin: value };
  if (kind === "advisory") return { kind: "advisory", advisory: value };
  if (kind === "security") return { kind: "advisory", min_severity: value };
  if (kind === "hotfix") return { kind: "hotfix", id: value };
  return { kind: "all", plugin: value };
}

async function reloadAfter(call) {
  try { await call(); window.location.reload(); } catch (e) { flash(e.message); }
}

const baselineUrl = (name) => `/api/v1/baselines/${encodeURIComponent(name)}`;

async function createBaseline(form) {
  const f = new FormData(form);
  await reloadAfter(() => {
    const rules = (f.get("value") || "").trim() ? [ruleOf(f.get("kind"), f.get("value"))] : [];
    return api("POST", "/api/v1/baselines", { name: f.get("name"), description: f.get("description") || "", rules });
  });
}

async function exempt(form) {
  const f = new FormData(form);
  const until = f.get("until");
  const body = {
    update: (f.get("update") || "").trim(),
    scope: { kind: f.get("kind"), name: (f.get("name") || "").trim() },
    reason: f.get("reason"),
    baseline: f.get("baseline") || null,
    until: until ? `${until}:00Z` : null,
  };
  try { await api("POST", "/api/v1/exemptions", body); window.location = "/exemptions"; } catch (e) { flash(e.message); }
}

Object.assign(ACTIONS, {
  "compliance-scan": (b) => complianceScan(b),
  "baseline-remove-rule": (b) => reloadAfter(() => api("DELETE", `${baselineUrl(b.dataset.name)}/rules/${encodeURIComponent(b.dataset.key)}`)),
  "baseline-unassign": (b) => reloadAfter(() => api("DELETE",
    `${baselineUrl(b.dataset.name)}/assignments/${encodeURIComponent(b.dataset.kind)}/${encodeURIComponent(b.dataset.scope)}`)),
  "baseline-delete": (b) => confirm(`Delete the baseline '${b.dataset.name}'? Its assignments go with it.`)
    && reloadAfter(() => api("DELETE", baselineUrl(b.dataset.name))),
  "group-delete": (b) => confirm(`Delete the group '${b.dataset.name}'?`)
    && reloadAfter(() => api("DELETE", `/api/v1/cluster-groups/${encodeURIComponent(b.dataset.name)}`)),
  "exemption-remove": (b) => confirm(`Remove exemption ${b.dataset.id}? The update is Unknown until the next scan.`)
    && reloadAfter(() => api("DELETE", `/api/v1/exemptions/${encodeURIComponent(b.dataset.id)}`)),
});

Object.assign(SUBMITS, {
  "remediate": (f) => remediate(f.dataset.cluster, f),
  "baseline-create": (f) => createBaseline(f),
  "baseline-add-rule": (f) => reloadAfter(() => {
    const d = new FormData(f);
    return api("POST", `${baselineUrl(f.dataset.name)}/rules`, { rules: [ruleOf(d.get("kind"), d.get("value"))] });
  }),
  "baseline-assign": (f) => reloadAfter(() => {
    const d = new FormData(f);
    return api("POST", `${baselineUrl(f.dataset.name)}/assignments`, { kind: d.get("kind"), name: (d.get("name") || "").trim() });
  }),
  "group-set": (f) => reloadAfter(() => {
    const d = new FormData(f);
    const clusters = (d.get("clusters") || "").split(/[\s,]+/).filter(Boolean);
    return api("PUT", `/api/v1/cluster-groups/${encodeURIComponent(d.get("name"))}`, { clusters });
  }),
  "exemption-create": (f) => exempt(f),
});

// A checkbox with data-toggles shows the element it names while ticked; the Remediate dialog's
// standalone hosts also hide the cluster's options (VMM shows none for standalone hosts).
document.addEventListener("change", (event) => {
  const box = event.target.closest("input[data-toggles]");
  if (!box) return;
  document.getElementById(box.dataset.toggles).hidden = !box.checked;
  const cluster = box.form && box.form.querySelector("#cluster-options");
  if (cluster) cluster.hidden = box.checked;
});

document.addEventListener("DOMContentLoaded", () => {
  const warnings = sessionStorage.getItem("cau-warnings");
  if (warnings && document.querySelector("[data-watch-run]")) {
    sessionStorage.removeItem("cau-warnings");
    flash(warnings, "warn");
  }
});
