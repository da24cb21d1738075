// The workspace's keyboard, row selection and small clocks. htmx does the fetching and
// swapping; this file only moves focus, keeps the bulk bar in step with the ticked rows and
// updates "waiting" and "reply due" as time passes. Listeners sit on the document because
// htmx replaces the elements they would otherwise hold.
"use strict";

(function () {
  if (document.body.dataset.page !== "workspace") return;

  const $ = (selector) => document.querySelector(selector);
  const rows = () => Array.from(document.querySelectorAll("#conversation-list > li.row"));
  const openId = () => $("#thread-pane")?.dataset.conversationId || null;

  // -- which conversation is open -------------------------------------------------------
  function markOpen() {
    const id = openId();
    $("#workspace")?.classList.toggle("is-open", Boolean(id));
    for (const row of rows()) {
      const here = row.dataset.conversationId === id;
      row.classList.toggle("current", here);
      const link = row.querySelector(".row-link");
      if (here) link?.setAttribute("aria-current", "true");
      else link?.removeAttribute("aria-current");
    }
  }

  document.addEventListener("htmx:afterSettle", (event) => {
    markOpen();
    syncBulk();
    tick();
    // A conversation just opened: say so to a screen reader by moving focus to its name.
    if (event.detail.target?.id === "work" && openId()) $("#thread-heading")?.focus({ preventScroll: true });
  });

  // -- keyboard -------------------------------------------------------------------------
  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  function move(step) {
    const all = rows();
    if (!all.length) return;
    const focused = all.findIndex((row) => row.contains(document.activeElement));
    const current = focused >= 0 ? focused : all.findIndex((row) => row.classList.contains("current"));
    const next = current < 0 ? 0 : Math.min(all.length - 1, Math.max(0, current + step));
    const link = all[next].querySelector(".row-link");
    link.focus();
    link.scrollIntoView({ block: "nearest" });
  }

  function backToList() {
    const link = $("#back-to-list");
    const current = document.querySelector("#conversation-list > li.current .row-link");
    if (window.matchMedia("(max-width: 56rem)").matches && link) link.click();
    else (current || rows()[0]?.querySelector(".row-link"))?.focus();
  }

  function press(selector) {
    const element = $(selector);
    if (!element) return false;
    // A key can come a moment after htmx swapped the panel in, before it wired the new form:
    // wire it now, so the press is an in-place change and never a whole-page form post.
    const form = element.closest("form");
    if (window.htmx && form) window.htmx.process(form);
    element.click();
    return true;
  }

  function focus(selector) {
    const element = $(selector);
    if (!element) return false;
    element.focus();
    return true;
  }

  document.addEventListener("keydown", (event) => {
    const dialog = $("#shortcuts");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.matches("textarea")) {
      event.preventDefault();
      event.target.form?.requestSubmit();
      return;
    }
    if (event.key === "Escape") {
      if (dialog?.open) return; // the dialog closes itself
      if (typing(event.target)) event.target.blur();
      backToList();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target) || dialog?.open) return;
    const actions = {
      j: () => move(1),
      k: () => move(-1),
      r: () => focus("#reply-body"),
      n: () => focus("#note-body"),
      e: () => press("#resolve"),
      s: () => focus("#snooze-until"),
      a: () => press("#assign-me"),
      "/": () => focus("#search-box"),
      "?": () => { dialog?.showModal(); return true; },
    };
    const action = actions[event.key];
    if (action && action() !== false) event.preventDefault();
  });

  // -- selected rows --------------------------------------------------------------------
  function syncBulk() {
    const form = $("#bulk-form");
    if (!form) return;
    const picked = document.querySelectorAll("#conversation-list .pick:checked").length;
    form.hidden = picked === 0;
    const count = $("#bulk-count");
    if (count) count.textContent = String(picked);
  }
  document.addEventListener("change", (event) => {
    if (event.target.matches("#conversation-list .pick")) syncBulk();
  });

  // -- clocks ---------------------------------------------------------------------------
  function span(seconds) {
    let minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${Math.max(minutes, 1)} min`;
    let hours = Math.floor(minutes / 60);
    minutes %= 60;
    if (hours < 24) return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
    const days = Math.floor(hours / 24);
    hours %= 24;
    return hours ? `${days} d ${hours} h` : `${days} d`;
  }

  function tick() {
    const now = Date.now();
    for (const due of document.querySelectorAll(".sla[data-due]")) {
      const left = (Date.parse(due.dataset.due) - now) / 1000;
      due.textContent = left > 0 ? `reply due in ${span(left)}` : `reply overdue by ${span(-left)}`;
      due.classList.toggle("overdue", left <= 0);
    }
    for (const waiting of document.querySelectorAll(".waiting[data-since]")) {
      waiting.textContent = `waiting ${span((now - Date.parse(waiting.dataset.since)) / 1000)}`;
    }
  }
  setInterval(tick, 30000);

  markOpen();
  syncBulk();
})();
