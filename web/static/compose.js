// The reply composer (issue 16): the live SMS segment count, files with a reply, and send
// later. The composer is swapped in and out by htmx, so every listener sits on the document
// and every lookup happens when the event comes.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // -- SMS segments: the same rules as hub/templates/segments.py (a test runs one table of
  // texts through both and compares) ------------------------------------------------------
  const GSM7_BASIC = new Set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà");
  const GSM7_EXTENSION = new Set("\f^{}\\[~]|€");

  function pack(costs, part) {
    // A character's units never straddle two parts (an escape and its character, or a
    // surrogate pair, stay together), so a part may end a unit short.
    let parts = 1;
    let used = 0;
    for (const cost of costs) {
      if (used + cost > part) { parts += 1; used = 0; }
      used += cost;
    }
    return parts;
  }

  function segmentInfo(text) {
    const chars = Array.from(text); // code points, as Python iterates a str
    const nonGsm = [...new Set(chars.filter((c) => !GSM7_BASIC.has(c) && !GSM7_EXTENSION.has(c)))];
    const gsm = nonGsm.length === 0;
    const costs = chars.map((c) => (gsm ? (GSM7_EXTENSION.has(c) ? 2 : 1) : c.length));
    const [single, part, encoding] = gsm ? [160, 153, "GSM-7"] : [70, 67, "UCS-2"];
    const units = costs.reduce((a, b) => a + b, 0);
    if (units === 0) return { encoding, units: 0, segments: 0, per_segment: single, non_gsm: [] };
    if (units <= single) return { encoding, units, segments: 1, per_segment: single, non_gsm: nonGsm };
    return { encoding, units, segments: pack(costs, part), per_segment: part, non_gsm: nonGsm };
  }

  const WARN_ABOVE_SEGMENTS = 3;
  const SMS_CHANNELS = new Set(["sms", "whatsapp"]);

  function chosenChannel(form, count) {
    return form?.querySelector('input[name="channel"]:checked')?.value || count.dataset.replyChannel;
  }

  function showCount() {
    const count = document.getElementById("reply-count");
    const warning = document.getElementById("reply-count-warning");
    const body = document.getElementById("reply-body");
    if (!count || !warning || !body) return;
    const channel = chosenChannel(body.form, count);
    const text = body.value.trim();
    if (!SMS_CHANNELS.has(channel) || !text) {
      count.hidden = true;
      warning.hidden = true;
      return;
    }
    const info = segmentInfo(text);
    const limit = Number(count.dataset.smsLimit) || 1600;
    const length = Array.from(text).length;
    const why = info.non_gsm.length
      ? ` because of ${info.non_gsm.slice(0, 3).map((c) => `“${c}”`).join(" ")}`
      : "";
    count.textContent = `${info.segments} SMS ${info.segments === 1 ? "segment" : "segments"} · ` +
      `${info.encoding}${why} · ${length.toLocaleString("en-US")} of ${limit.toLocaleString("en-US")} characters`;
    count.dataset.segments = String(info.segments);
    count.dataset.encoding = info.encoding;
    count.hidden = false;
    let message = "";
    if (length > limit) {
      message = `Too long for SMS: ${length.toLocaleString("en-US")} characters, at most ` +
        `${limit.toLocaleString("en-US")}. Shorten it or send it by email; as it is it will not be sent.`;
    } else if (info.segments > WARN_ABOVE_SEGMENTS) {
      message = `Long text: it goes as ${info.segments} SMS segments, each billed as one message.`;
    }
    warning.textContent = message;
    warning.hidden = !message;
    warning.classList.toggle("too-long", length > limit);
  }

  document.addEventListener("input", (event) => {
    if (event.target.id === "reply-body") showCount();
  });
  document.addEventListener("change", (event) => {
    if (event.target.matches?.('#reply-form input[name="channel"]')) showCount();
  });

  // -- files -------------------------------------------------------------------------------
  const MAX_FILE_BYTES = 5 * 1024 * 1024;
  const MMS_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "application/pdf"]);

  function size(n) {
    return n >= 1024 * 1024 ? `${(n / (1024 * 1024)).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`;
  }

  function fileProblem(files, channel) {
    const total = files.reduce((sum, f) => sum + f.size, 0);
    if (total > MAX_FILE_BYTES) return `The files come to ${size(total)}; at most 5 MB in all can be sent.`;
    if (channel === "sms") {
      const other = files.find((f) => !MMS_TYPES.has(f.type));
      if (other) return `${other.name} cannot go by SMS (images and PDF only); choose Email for it.`;
    }
    if (files.length && !["sms", "email"].includes(channel)) return "Files can be sent by SMS or email only.";
    return "";
  }

  function showFiles() {
    const input = document.getElementById("reply-files");
    const list = document.getElementById("reply-files-list");
    const error = document.getElementById("reply-files-error");
    if (!input || !list || !error) return;
    const files = Array.from(input.files || []);
    list.replaceChildren(...files.map((f) => {
      const li = document.createElement("li");
      li.textContent = `${f.name} (${size(f.size)})`;
      return li;
    }));
    const count = document.getElementById("reply-count");
    const problem = count ? fileProblem(files, chosenChannel(input.form, count)) : "";
    error.textContent = problem;
    error.hidden = !problem;
  }

  document.addEventListener("change", (event) => {
    if (event.target.id === "reply-files" || event.target.matches?.('#reply-form input[name="channel"]')) showFiles();
  });

  function conversationId() {
    return document.getElementById("reply-count")?.dataset.conversationId;
  }

  async function appendMessage(id, messageId) {
    const thread = document.getElementById("thread");
    if (!thread || thread.querySelector(`[data-message-id="${messageId}"]`)) return;
    const response = await fetch(`/conversations/${id}/messages/${messageId}`, { credentials: "same-origin" });
    if (!response.ok || thread.querySelector(`[data-message-id="${messageId}"]`)) return;
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    thread.append(template.content);
  }

  // With files, the reply goes as multipart/form-data. Capturing on the document runs before
  // the plain (JSON) reply handler of app.js, which then never sees this submit.
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    const input = document.getElementById("reply-files");
    if (form.id !== "reply-form" || !input || !input.files || input.files.length === 0) return;
    event.preventDefault();
    event.stopPropagation();
    const id = conversationId();
    const error = form.querySelector("#reply-error");
    const send = form.querySelector('button[type="submit"]');
    error.hidden = true;
    send.disabled = true;
    try {
      const response = await fetch(`/api/conversations/${id}/messages`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf() },
        body: new FormData(form),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        error.textContent = `Not sent: ${answer.error?.message || response.statusText}`;
        error.hidden = false;
        return;
      }
      const body = form.querySelector("#reply-body");
      body.value = "";
      input.value = "";
      body.dispatchEvent(new Event("input", { bubbles: true }));
      showFiles();
      await appendMessage(id, answer.message_id);
    } finally {
      send.disabled = false;
    }
  }, true);

  // -- send later ----------------------------------------------------------------------------
  let refreshTimer = null;

  function localInput(zone, date) {
    // "2026-12-08T09:00" as the wall clock reads in ``zone`` (sv-SE writes ISO order).
    const text = new Intl.DateTimeFormat("sv-SE", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).format(date);
    return text.replace(" ", "T");
  }

  function preparePicker() {
    const picker = document.getElementById("send-at");
    if (!picker || picker.dataset.ready) return;
    picker.dataset.ready = "1";
    const zone = picker.dataset.timeZone || "UTC";
    try {
      picker.min = localInput(zone, new Date());
      picker.value = `${localInput(zone, new Date(Date.now() + 86400000)).slice(0, 10)}T09:00`;
    } catch (e) {
      // An unknown zone name: the picker stays empty and the server reads it as UTC.
    }
  }

  async function loadScheduled() {
    const section = document.getElementById("scheduled");
    if (!section) return;
    const response = await fetch(`/conversations/${section.dataset.conversationId}/scheduled`,
      { credentials: "same-origin" });
    if (!response.ok) return;
    showScheduled(section, await response.text());
  }

  function showScheduled(section, html) {
    section.innerHTML = html;
    section.dataset.loaded = "1";
    // Reload when the soonest falls due, so a reply that went leaves the list by itself.
    clearTimeout(refreshTimer);
    const due = Array.from(section.querySelectorAll("[data-send-at]"))
      .map((li) => Date.parse(li.dataset.sendAt)).filter((t) => !Number.isNaN(t));
    if (due.length) {
      const wait = Math.min(Math.max(Math.min(...due) - Date.now() + 3000, 1000), 2 ** 31 - 1);
      refreshTimer = setTimeout(loadScheduled, wait);
    }
  }

  function describeBox() {
    // Screen readers read the count and any warning with the reply box (the count itself is
    // not a live region: it would speak at every key).
    const box = document.getElementById("reply-body");
    if (!box || !document.getElementById("reply-count")) return;
    const ids = (box.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    for (const id of ["reply-count", "reply-count-warning"]) if (!ids.includes(id)) ids.push(id);
    box.setAttribute("aria-describedby", ids.join(" "));
  }

  function setUp() {
    listen();
    describeBox();
    preparePicker();
    const section = document.getElementById("scheduled");
    if (section && !section.dataset.loaded) loadScheduled();
    showCount();
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest?.("#schedule-button");
    if (!button) return;
    const form = button.closest("form");
    const error = document.getElementById("schedule-error");
    const body = document.getElementById("reply-body");
    const files = document.getElementById("reply-files");
    error.hidden = true;
    if (files && files.files && files.files.length) {
      error.textContent = "Not scheduled: files cannot wait to be sent yet. Send them now, or remove them.";
      error.hidden = false;
      return;
    }
    const data = new URLSearchParams();
    data.set("body", body.value);
    data.set("send_at", document.getElementById("send-at").value);
    const channel = form.querySelector('input[name="channel"]:checked')?.value;
    if (channel) data.set("channel", channel);
    button.disabled = true;
    try {
      const response = await fetch(`/conversations/${button.dataset.conversationId}/scheduled`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf() },
        body: data,
      });
      const text = await response.text();
      if (!response.ok) {
        error.textContent = text || `Not scheduled: ${response.statusText}`;
        error.hidden = false;
        return;
      }
      showScheduled(document.getElementById("scheduled"), text);
      body.value = "";
      body.dispatchEvent(new Event("input", { bubbles: true }));
      document.getElementById("send-later").open = false;
    } finally {
      button.disabled = false;
    }
  });

  // Cancel drops the reply; Edit takes it back into the reply box (cancelled while it is being
  // changed, so it cannot go meanwhile), with the picker at its time, to schedule again.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest?.(".cancel-scheduled, .edit-scheduled");
    if (!button) return;
    const editing = button.classList.contains("edit-scheduled");
    button.disabled = true;
    const response = await fetch(`/api/scheduled/${button.dataset.scheduledId}`, {
      method: "DELETE",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf() },
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = document.getElementById("schedule-error");
      if (error) {
        error.textContent = `Not ${editing ? "editable" : "cancelled"}: ${answer.error?.message || response.statusText}`;
        error.hidden = false;
        document.getElementById("send-later").open = true;
      }
    } else if (editing) {
      const body = document.getElementById("reply-body");
      const picker = document.getElementById("send-at");
      body.value = answer.body;
      body.dispatchEvent(new Event("input", { bubbles: true }));
      const channel = document.querySelector(`#reply-form input[name="channel"][value="${answer.channel}"]`);
      if (channel && !channel.disabled) channel.checked = true;
      if (picker) picker.value = localInput(picker.dataset.timeZone || "UTC", new Date(answer.send_at));
      document.getElementById("send-later").open = true;
      body.focus();
    }
    await loadScheduled();
  });

  // A colleague scheduled or cancelled one here, or one just went (its message is new): the
  // events carry ids only, and the list is fetched again through the audited route.
  let listening = false;
  function listen() {
    const socket = window.hubSocket;
    if (listening || !socket) return;
    listening = true;
    const reloadIfOpen = (e) => {
      const section = document.getElementById("scheduled");
      if (section && e.conversation_id === section.dataset.conversationId) loadScheduled();
    };
    socket.on("scheduled:changed", reloadIfOpen);
    socket.on("message:new", (e) => {
      if (document.querySelector("#scheduled .scheduled-item")) reloadIfOpen(e);
    });
  }

  // The composer arrives with the page or in an htmx swap.
  document.addEventListener("htmx:load", setUp);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();

  window.HubCompose = { segmentInfo };
})();
