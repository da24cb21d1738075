// The coordinators' journey page: redraws a journey's funnel when the worker reports progress
// (socket.io `journey:progress`, at most once a second per journey), and launches cohort files
// (upload, dry run, enroll or cancel) without leaving the page. The server-rendered page works without this file.
"use strict";

(function () {
  if (document.body.dataset.page !== "journeys") return;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const live = document.getElementById("journeys-live");
  const SVG = "http://www.w3.org/2000/svg";
  // Same geometry as templates/journey_chart.html.
  const CHART = { width: 300, top: 24, row: 18, label: 84, bar: 170, height: 12 };
  const CHART_COLUMNS = ["enrolled", "sent", "delivered", "replied", "confirmed", "cancelled", "opted_out", "failed"];
  const THROTTLE_MS = 1000;

  function sections() {
    return new Map([...document.querySelectorAll("section[data-journey]")].map((s) => [s.dataset.journey, s]));
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cellHref(key, step, column) {
    return `/journeys/${encodeURIComponent(key)}/steps/${encodeURIComponent(step)}/${column}`;
  }

  function stepChart(key, step, labels) {
    const height = CHART.top + CHART.row * CHART_COLUMNS.length;
    const top = Math.max(1, ...CHART_COLUMNS.map((c) => step.counts[c] || 0));
    const summary = CHART_COLUMNS.map((c) => `${step.counts[c] || 0} ${labels[c]}`).join(", ");
    const chart = svg("svg", {
      class: "step-chart", viewBox: `0 0 ${CHART.width} ${height}`, width: CHART.width, height,
      // A group, not an image: an image's children are presentational, and the bars are
      // links (a mouse's way into the table's cells, hidden from screen readers).
      role: "group", "aria-label": `${step.step_id}: ${summary}`,
    });
    chart.append(svg("text", { class: "step-title", x: 0, y: 14 }, step.step_id));
    CHART_COLUMNS.forEach((c, i) => {
      const n = step.counts[c] || 0;
      const y = CHART.top + CHART.row * i;
      const w = Math.round((CHART.bar * n) / top);
      const link = svg("a", { href: cellHref(key, step.step_id, c), tabindex: -1, "aria-hidden": "true" });
      link.append(
        svg("title", {}, `${step.step_id} · ${labels[c]}: ${n}`),
        svg("text", { class: "bar-label", x: 0, y: y + 10 }, labels[c]),
        svg("rect", { class: "bar-track", x: CHART.label, y, width: CHART.bar, height: CHART.height }),
        svg("rect", { class: `bar bar-${c}`, x: CHART.label, y, width: w, height: CHART.height }),
        svg("text", { class: "bar-count", x: CHART.label + w + 4, y: y + 10 }, String(n)),
      );
      chart.append(link);
    });
    return chart;
  }

  function tableRow(key, step, columns) {
    const row = el("tr");
    row.append(el("th", { scope: "row" }, step.step_id));
    for (const c of columns) {
      const n = step.counts[c.key] || 0;
      const cell = el("td", { "data-column": c.key });
      if (n) {
        cell.append(el("a", {
          href: cellHref(key, step.step_id, c.key),
          "aria-label": `${n} ${c.label} at ${step.step_id}: list the patients`,
        }, String(n)));
      } else {
        cell.textContent = "0";
      }
      row.append(cell);
    }
    return row;
  }

  function failures(steps) {
    const nodes = [];
    for (const step of steps) {
      if (!step.failures.length) continue;
      nodes.push(el("p", { class: "failure-step" }, `Why ${step.step_id} failed:`));
      const list = el("ul");
      for (const f of step.failures) {
        const item = el("li", {}, `${f.reason}: `);
        item.append(el("strong", {}, String(f.count)));
        list.append(item);
      }
      nodes.push(list);
    }
    return nodes;
  }

  function redraw(section, funnel) {
    const labels = Object.fromEntries(funnel.columns.map((c) => [c.key, c.label]));
    const field = (name) => section.querySelector(`[data-field="${name}"]`);
    const e = funnel.enrollments;
    field("status").textContent = funnel.status;
    field("summary").textContent = `${e.enrolled} enrolled · ${e.active || 0} active · ${e.confirmed} confirmed · `
      + `${e.cancelled || 0} cancelled · ${e.stopped || 0} stopped`;
    field("chart").replaceChildren(...funnel.steps.map((s) => stepChart(funnel.key, s, labels)));
    field("rows").replaceChildren(...funnel.steps.map((s) => tableRow(funnel.key, s, funnel.columns)));
    field("failures").replaceChildren(...failures(funnel.steps));
    section.dataset.refreshedAt = String(Date.now());
  }

  async function refresh(key) {
    const section = sections().get(key);
    if (!section) return;
    const response = await fetch(`/api/journeys/${encodeURIComponent(key)}/funnel?live=1`, {
      headers: { Accept: "application/json" }, credentials: "same-origin",
    });
    if (response.status === 401) {
      window.location.assign("/login");
      return;
    }
    if (!response.ok) return;
    redraw(section, await response.json());
  }

  // At most one fetch per journey per second; an event during the pause is not lost but
  // folded into one fetch at its end.
  const last = new Map();
  const pending = new Map();
  function schedule(key) {
    if (pending.has(key)) return;
    const wait = Math.max(0, (last.get(key) || 0) + THROTTLE_MS - Date.now());
    pending.set(key, setTimeout(() => {
      pending.delete(key);
      last.set(key, Date.now());
      refresh(key).catch(() => {
        if (live) live.textContent = "Could not refresh the counts; they will update on the next change.";
      });
    }, wait));
  }

  if (typeof io !== "undefined") {
    // app.js keeps its socket private; a second /staff connection is a cheap price here.
    const socket = window.hubSocket || io("/staff", { transports: ["websocket", "polling"], withCredentials: true });
    let seen = false;
    socket.on("connect", () => {
      window.hubJourneysLive = true;
      if (seen) for (const key of sections().keys()) schedule(key); // events missed while away
      seen = true;
    });
    socket.on("disconnect", () => { window.hubJourneysLive = false; });
    socket.on("journey:progress", (e) => {
      if (e && sections().has(e.journey)) schedule(e.journey);
    });
  } else if (live) {
    live.textContent = "Live counts are unavailable; reload the page to see progress.";
  }

  // -- cohort launch: upload -> dry run -> enroll or cancel ----------------------------------
  // The server renders the launch box (templates/_journey_launch.html) for the page and for
  // this script alike; answers carry it as `html`, autoescaped there.
  function showBox(box, html) {
    box.innerHTML = html;
    const first = box.querySelector(".launch-preview h4, .flash");
    if (first) {
      first.setAttribute("tabindex", "-1");
      first.focus();
    }
  }

  function showError(box, message) {
    box.replaceChildren(el("p", { class: "flash error" }, message));
  }

  async function post(box, url, body, button, busy) {
    button.disabled = true;
    box.setAttribute("aria-busy", "true");
    const note = el("p", { class: "hint" }, busy);
    box.prepend(note);
    try {
      const response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
        body,
      });
      const answer = await response.json().catch(() => ({ error: { message: `HTTP ${response.status}` } }));
      if (answer.html) showBox(box, answer.html);
      else showError(box, answer.error?.message || `HTTP ${response.status}`);
      return response.ok ? answer : null;
    } catch (err) {
      showError(box, "The request did not reach the hub; check the connection and try again.");
      return null;
    } finally {
      button.disabled = false;
      box.removeAttribute("aria-busy");
      note.remove();
    }
  }

  for (const form of document.querySelectorAll("form.cohort-form")) {
    const section = form.closest("section[data-journey]");
    const box = section.querySelector('[data-field="launch"]');
    form.addEventListener("submit", async (event) => {
      const file = form.querySelector('input[type="file"]').files[0];
      if (!file) return; // the browser says the field is required
      event.preventDefault();
      if (file.size > Number(form.dataset.maxBytes)) {
        showError(box, `The file is larger than ${form.dataset.maxMb} MB; split it into smaller files (enrolling a patient twice changes nothing).`);
        return;
      }
      const button = form.querySelector('button[type="submit"]');
      const answer = await post(box, form.action, new FormData(form), button, `Checking ${file.name}…`);
      if (answer) form.reset();
    });
    // The dry run's "Enroll", "Cancel" and column mapping ("Check again") forms arrive with
    // the answer: listen on the box.
    box.addEventListener("submit", async (event) => {
      const action = event.target.closest("form.launch-confirm, form.launch-cancel, form.launch-mapping");
      if (!action) return;
      event.preventDefault();
      const button = action.querySelector('button[type="submit"]');
      const enrolling = action.classList.contains("launch-confirm");
      const busy = enrolling ? "Enrolling…" : action.classList.contains("launch-mapping") ? "Checking again…" : "Cancelling…";
      const answer = await post(box, action.action, new FormData(action), button, busy);
      if (answer && enrolling) schedule(section.dataset.journey);
    });
  }
})();
