// The operator dashboard. Talks only to its own origin: /functions/v1/health (status), and with the
// service role /functions/v1/health/dashboard (everything else) and /functions/v1/health/retry.
// The key lives in this closure only: never in storage, cookies or the URL.
(function () {
  "use strict";
  const API = "/functions/v1/health";
  const params = new URLSearchParams(location.search);
  const refreshSeconds = Math.max(2, Number(params.get("refresh")) || 10);
  let key = "";
  const charts = {};
  let timer = null;

  const $ = (id) => document.getElementById(id);
  $("refresh-seconds").textContent = String(refreshSeconds);

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "onclick") e.addEventListener("click", v);
      else e.setAttribute(k, v);
    }
    for (const c of children || []) e.append(c);
    return e;
  }
  const td = (text, cls, testid) =>
    el(
      "td",
      Object.assign(
        { text: text == null ? "—" : String(text) },
        cls ? { class: cls } : {},
        testid ? { "data-testid": testid } : {},
      ),
    );
  const badge = (s) => el("span", { class: "status status-" + s, text: s });
  function fill(tableId, rows) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren(...rows);
  }

  function headers() {
    const h = { authorization: "Bearer " + key };
    // Opaque keys (sb_secret_/sb_publishable_) go in apikey, as supabase-js sends them.
    if (!key.includes(".")) h.apikey = key;
    return h;
  }

  function showEnvironment(report) {
    const label = report.environment;
    $("env-label").textContent = label || "no environment label";
    const known = ["production", "staging", "development"];
    $("banner").className = "env-" +
      (label ? (known.includes(label.toLowerCase()) ? label.toLowerCase() : "other") : "unknown");
    $("overall").replaceChildren(badge(report.status));
    $("overall").setAttribute("data-status", report.status);
    $("checked-at").textContent = "checked " + new Date(report.checked_at).toLocaleTimeString();
    document.title = (label || "unlabelled") + " · " + report.status + " · supabase-vector-sync";
  }

  function showChecks(report) {
    fill(
      "checks",
      report.checks.map((c) =>
        el("tr", { "data-check": c.name }, [
          td(c.name),
          el("td", {}, [badge(c.status)]),
          td(c.detail ?? "service key needed for details"),
        ])
      ),
    );
  }

  function check(report, name) {
    const c = report.checks.find((x) => x.name === name);
    return (c && c.data) || {};
  }

  function showTables(d) {
    const sources = check(d.report, "knowledge_base").sources || [];
    fill(
      "coverage",
      sources.map((s) =>
        el("tr", { "data-source": s.source_table }, [
          td(s.source_table),
          td(s.rows, "num", "rows"),
          td(s.rows_with_embeddings, "num", "embedded"),
          td(coverageText(s.rows, s.rows_with_embeddings), "num", "coverage"),
        ])
      ),
    );
    const buckets = check(d.report, "files").buckets || [];
    fill(
      "buckets",
      buckets.map((b) =>
        el("tr", { "data-bucket": b.bucket }, [
          td(b.bucket),
          td(b.storage, "num", "storage"),
          td(b.queue, "num", "queue"),
          td(b.failed, "num" + (b.failed ? " bad" : ""), "failed"),
          td(b.missing_in_queue, "num", "missing"),
          td(b.queued_without_object, "num", "orphans"),
          el("td", {}, [badge(b.drift_alert ? "warn" : "ok")]),
          td(b.last_coherence_check ? new Date(b.last_coherence_check).toLocaleTimeString() : "never", "muted"),
        ])
      ),
    );
    const plan = check(d.report, "collector").plan || [];
    fill(
      "plan",
      plan.map((p) => {
        const pages = p.total_results ? Math.max(1, Math.ceil(p.total_results / 100)) : null;
        const share = p.done ? 1 : pages ? Math.min(1, (p.next_page - 1) / pages) : 0;
        const bar = el("span", { class: "bar" }, [el("span", { style: "width:" + Math.round(share * 100) + "%" })]);
        return el("tr", { "data-category": p.category }, [
          td(p.category),
          el("td", {}, [bar, document.createTextNode(" " + (p.done ? "done" : Math.round(share * 100) + "%"))]),
          td(p.next_page, "num"),
          td(p.docs_collected, "num", "docs"),
          td(p.failed_documents, "num"),
        ]);
      }),
    );
    fill(
      "alerts",
      d.alerts.map((a) => el("tr", {}, [td(new Date(a.opened_at).toLocaleString()), td(a.kind), td(a.message)])),
    );
    fill(
      "failed-files",
      d.failed_files.map((f) =>
        el("tr", { "data-file": String(f.id) }, [
          td(f.id, "num"),
          td(f.bucket_id),
          td(f.file_path),
          td(f.attempts, "num"),
          td(f.last_error, "", "reason"),
          td(new Date(f.failed_at).toLocaleString(), "muted"),
          el("td", {}, [
            el("button", {
              type: "button",
              "data-testid": "retry-file-" + f.id,
              text: "retry",
              onclick: () => retry("/retry-files", f.id),
            }),
          ]),
        ])
      ),
    );
    fill(
      "dead-letters",
      d.dead_letters.map((j) =>
        el("tr", { "data-job": String(j.id) }, [
          td(j.id, "num"),
          td(j.source_table + " #" + j.source_id),
          td(j.action),
          td(j.last_error),
          el("td", {}, [el("button", {
            type: "button",
            "data-testid": "retry-" + j.id,
            text: "retry",
            onclick: () => retry("/retry", j.id),
          })]),
        ])
      ),
    );
    showTopUsers(d.top_users || []);
  }

  function showTopUsers(users) {
    fill(
      "top-users",
      users.map((u) =>
        el("tr", { "data-user": u.user_id }, [
          td(u.email, null, "email"),
          td(u.first_name, null, "first-name"),
          td(u.last_name, null, "last-name"),
          td(u.questions, "num", "questions"),
          td(u.answered, "num", "answered"),
          td(u.negative_feedback, "num", "negative"),
          td(u.unanswered, "num", "unanswered"),
          td(new Date(u.first_activity).toLocaleString(), "muted"),
          td(new Date(u.last_activity).toLocaleString(), "muted"),
        ])
      ),
    );
  }

  // Coverage as counts, and a percentage that never rounds a gap away: 189 of 190 is 99.4 %, not 100 %.
  function coverageText(rows, embedded) {
    if (!rows) return "—";
    const pct = Math.floor((embedded / rows) * 1000) / 10;
    return embedded + " of " + rows + " (" + pct + "%)";
  }

  function chart(id, title, series, data) {
    const target = $(id);
    const width = Math.max(300, target.clientWidth || 500);
    if (charts[id]) {
      charts[id].destroy();
      delete charts[id];
    }
    // No samples yet (a new project, or ops-metrics-sample not running): say so, not an empty frame.
    if (data[0].length === 0) {
      target.replaceChildren(
        el("p", {
          class: "empty",
          "data-testid": "no-data",
          text: title + ": no data yet (ops_metrics has no sample in this window)",
        }),
      );
      return;
    }
    target.replaceChildren();
    charts[id] = new uPlot(
      {
        width,
        height: 220,
        title,
        scales: { x: { time: true } },
        series: [{}].concat(
          series.map((s) => ({ label: s[0], stroke: s[1], width: 2, points: { show: data[0].length < 3 } })),
        ),
        axes: [{}, { size: 50 }],
      },
      data,
      target,
    );
  }

  function showCharts(d) {
    const xs = d.series.map((s) => Date.parse(s.sampled_at) / 1000);
    const q = (k) => d.series.map((s) => Number((s.queue_by_status || {})[k] || 0));
    const lane = (l) => d.series.map((s) => Number(((s.queue_by_lane || {})[l] || {}).pending || 0));
    chart("chart-backlog", "jobs by status", [
      ["pending", "#3949ab"],
      ["processing", "#c26a00"],
      ["failed", "#b3261e"],
      ["pending live", "#00838f"],
      ["pending bulk", "#8e7cc3"],
    ], [xs, q("pending"), q("processing"), q("failed"), lane("live"), lane("bulk")]);
    chart("chart-rate", "per minute", [["files inserted", "#2e7d32"], ["jobs completed", "#3949ab"]], [
      xs,
      d.series.map((s) => s.files_inserted),
      d.series.map((s) => s.jobs_completed),
    ]);
  }

  async function refresh() {
    $("error").textContent = "";
    if (!key) return;
    try {
      let r = await fetch(API + "/dashboard?hours=6", { headers: headers(), cache: "no-store" });
      if (r.status === 403) {
        // Not the service role: the overall status and environment only.
        r = await fetch(API, { headers: headers(), cache: "no-store" });
        const report = await r.json();
        showEnvironment(report);
        showChecks(report);
        $("key-state").textContent = "not a service key: status only";
      } else if (!r.ok) {
        throw new Error((await r.text()) || "HTTP " + r.status);
      } else {
        const d = await r.json();
        showEnvironment(d.report);
        showChecks(d.report);
        showTables(d);
        showCharts(d);
        $("key-state").textContent = "service key: details shown";
      }
      $("refreshed-at").textContent = new Date().toLocaleTimeString();
    } catch (e) {
      $("error").textContent = "refresh failed: " + e.message;
    }
  }

  async function retry(path, id) {
    const r = await fetch(API + path, {
      method: "POST",
      headers: Object.assign({ "content-type": "application/json" }, headers()),
      body: JSON.stringify({ ids: [id] }),
    });
    if (!r.ok) $("error").textContent = "retry failed: " + (await r.text());
    await refresh();
  }

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    key = $("key").value.trim();
    $("key").value = "";
    if (timer) clearInterval(timer);
    timer = setInterval(refresh, refreshSeconds * 1000);
    refresh();
  });
})();
