// Live updates for the staff workspace. Server-rendered pages work without this file; it adds
// socket.io events (new messages, status ticks, notes, presence) and fetch-based replies.
// The thread is swapped in and out by htmx, so nothing here holds on to an element: each
// event looks up the conversation that is open now.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const page = document.body.dataset.page;

  function say(text) {
    const status = document.getElementById("live-status");
    if (!status) return;
    status.textContent = text;
    status.hidden = !text;
  }

  function setUnread(count) {
    // "99+" past the server's cap: kept as words, never read as a number.
    const words = /^[1-9]\d*\+?$/.test(String(count).trim()) ? String(count).trim() : "";
    const badge = document.getElementById("unread-count");
    if (badge) badge.textContent = words;
    const base = document.title.replace(/^\(\d+\+?\)\s*/, "");
    document.title = words ? `(${words}) ${base}` : base;
  }

  async function getHTML(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (response.status === 401 || response.redirected && response.url.includes("/login")) {
      window.location.assign("/login");
      return null;
    }
    const unread = response.headers.get("X-Unread-Count");
    if (unread !== null) setUnread(unread);
    if (response.status === 204 || response.status === 404) return "";
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.text();
  }

  function fromHTML(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function process(element) {
    if (window.htmx && element) window.htmx.process(element);
    return element;
  }

  if (typeof io === "undefined") {
    say("Live updates are unavailable (the socket.io client is not installed); reload to see new messages.");
    return;
  }
  setUnread(document.getElementById("unread-count")?.textContent || 0);

  const socket = io("/staff", { transports: ["websocket", "polling"], withCredentials: true });
  window.hubSocket = socket; // journeys.js and workspace.js use the same connection
  let joined = null;

  function openConversationId() {
    return document.getElementById("thread-pane")?.dataset.conversationId || null;
  }

  // Join the room of the conversation on screen (and leave the one before), so presence and
  // typing reach the people looking at the same patient.
  function followOpenConversation() {
    const id = openConversationId();
    if (!socket.connected || id === joined) return;
    if (joined) socket.emit("leave_conversation", { conversation_id: joined });
    joined = id;
    present.clear();
    showPresence();
    if (!id) return;
    socket.emit("join_conversation", { conversation_id: id }, (answer) => {
      if (answer && answer.error) say("You no longer have access to this conversation.");
    });
  }

  socket.on("connect", () => {
    window.hubSocketConnected = true;
    say("");
    joined = null;
    followOpenConversation();
  });
  socket.on("connect_error", (err) => {
    say(err && err.message === "sign in first" ? "Your session ended; sign in again." : "Reconnecting…");
    if (err && err.message === "sign in first") window.location.assign("/login");
  });
  socket.on("disconnect", () => {
    window.hubSocketConnected = false;
    say("Reconnecting…");
  });
  // Deactivated or password reset by an admin: the server drops this socket right after, and
  // a dropped socket does not come back by itself, so go where the person learns why.
  socket.on("staff:revoked", () => window.location.assign("/login"));
  setInterval(() => {
    if (socket.connected) socket.emit("heartbeat", {}, (answer) => {
      if (answer && answer.ok === false) window.location.assign("/login");
    });
  }, 30000);
  document.addEventListener("htmx:afterSettle", followOpenConversation);

  // -- the list -------------------------------------------------------------------------

  async function refreshRow(conversationId, moveToTop) {
    const list = document.getElementById("conversation-list");
    if (!list) return;
    const query = list.dataset.query || "";
    const html = await getHTML(`/inbox/rows/${conversationId}?${query}`);
    if (html === null) return;
    const existing = list.querySelector(`[data-conversation-id="${conversationId}"]`);
    if (!html) {
      if (existing && !existing.contains(document.activeElement)) existing.remove();
      return;
    }
    const row = fromHTML(html);
    const picked = existing?.querySelector(".pick")?.checked;
    if (picked) row.querySelector(".pick").checked = true;
    if (existing?.classList.contains("current")) row.classList.add("current");
    if (existing && (!moveToTop || existing.contains(document.activeElement))) existing.replaceWith(row);
    else {
      if (existing) existing.remove();
      list.prepend(row);
    }
    process(row);
    document.getElementById("empty-list")?.remove();
  }

  socket.on("message:new", (e) => refreshRow(e.conversation_id, true));
  socket.on("message:status", (e) => refreshRow(e.conversation_id, false));
  socket.on("conversation:updated", (e) => {
    refreshRow(e.conversation_id, false);
    if (e.conversation_id === openConversationId()) refreshPanel();
  });
  socket.on("conversation:assigned", (e) => {
    refreshRow(e.conversation_id, false);
    if (e.conversation_id === openConversationId()) refreshPanel();
  });

  // Someone else changed the conversation on screen: show it, unless this person is busy
  // in a panel control (their own change answers with the panel already).
  let panelTimer = null;
  let ownChangeAt = 0;
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target?.id === "panel-pane") ownChangeAt = Date.now();
  });
  function refreshPanel() {
    clearTimeout(panelTimer);
    panelTimer = setTimeout(async () => {
      if (Date.now() - ownChangeAt < 5000) return; // this person's own change: already drawn
      const panel = document.getElementById("panel-pane");
      const id = openConversationId();
      if (!panel || !id || panel.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")) return;
      if (window.htmx) window.htmx.ajax("GET", `/conversations/${id}/panel`, { target: "#panel-pane", swap: "innerHTML" });
    }, 300);
  }

  // -- the open conversation ------------------------------------------------------------
  const present = new Map();

  function showPresence() {
    const parts = [];
    for (const [, p] of present) parts.push(`${p.name} is ${p.state === "typing" ? "typing…" : "viewing"}`);
    const presence = document.getElementById("presence");
    if (presence) presence.textContent = parts.join(" · ");
  }

  async function appendItem(url, selector) {
    const thread = document.getElementById("thread");
    if (!thread || thread.querySelector(selector)) return;
    const html = await getHTML(url);
    const now = document.getElementById("thread");
    if (!html || !now || now !== thread || thread.querySelector(selector)) return;
    thread.append(process(fromHTML(html)));
    thread.lastElementChild.scrollIntoView({ block: "nearest" });
  }

  function mine(e) {
    return e.conversation_id && e.conversation_id === openConversationId();
  }

  socket.on("message:new", (e) => {
    if (!mine(e)) return;
    appendItem(`/conversations/${e.conversation_id}/messages/${e.message_id}`, `[data-message-id="${e.message_id}"]`);
  });
  socket.on("message:status", (e) => {
    if (!mine(e)) return;
    const tick = document.querySelector(`#thread [data-message-id="${e.message_id}"] .tick`);
    if (tick) {
      tick.dataset.status = e.status;
      tick.textContent = e.status;
      tick.setAttribute("aria-label", `status ${e.status}`);
    } else {
      appendItem(`/conversations/${e.conversation_id}/messages/${e.message_id}`, `[data-message-id="${e.message_id}"]`);
    }
  });
  socket.on("message:updated", async (e) => {
    if (!mine(e)) return;
    const html = await getHTML(`/conversations/${e.conversation_id}/messages/${e.message_id}`);
    const old = document.querySelector(`#thread [data-message-id="${e.message_id}"]`);
    if (html && old) old.replaceWith(process(fromHTML(html)));
  });
  socket.on("note:new", (e) => {
    if (!mine(e)) return;
    appendItem(`/conversations/${e.conversation_id}/notes/${e.note_id}`, `[data-note-id="${e.note_id}"]`);
  });
  socket.on("presence", (e) => {
    if (!mine(e)) return;
    // Someone new arrived: tell them this person is here too (they answer no one they know).
    if (e.state !== "left" && !present.has(e.staff_id)) socket.emit("here", { conversation_id: e.conversation_id });
    if (e.state === "left") present.delete(e.staff_id);
    else present.set(e.staff_id, e);
    showPresence();
    if (e.state === "typing") setTimeout(() => {
      const p = present.get(e.staff_id);
      if (p && p.state === "typing") { p.state = "viewing"; showPresence(); }
    }, 4000);
  });

  let lastTyping = 0;
  document.addEventListener("input", (event) => {
    if (!event.target.matches("#reply-body, #note-body")) return;
    const now = Date.now();
    const id = openConversationId();
    if (id && now - lastTyping > 2000) {
      lastTyping = now;
      socket.emit("typing", { conversation_id: id });
    }
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (form.id !== "reply-form") return;
    event.preventDefault();
    const id = openConversationId();
    const body = form.querySelector("#reply-body");
    const error = form.querySelector("#reply-error");
    const send = form.querySelector('button[type="submit"]');
    error.hidden = true;
    send.disabled = true;
    try {
      const response = await fetch(`/api/conversations/${id}/messages`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        // No channel picked sends none: the server then uses the conversation's own channel
        // or refuses with the reason, never a different channel chosen by the page.
        body: JSON.stringify({ body: body.value, channel: form.querySelector('input[name="channel"]:checked')?.value }),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        error.textContent = `Not sent: ${answer.error?.message || response.statusText}`;
        error.hidden = false;
        return;
      }
      body.value = "";
      body.dispatchEvent(new Event("input", { bubbles: true }));
      appendItem(`/conversations/${id}/messages/${answer.message_id}`, `[data-message-id="${answer.message_id}"]`);
    } finally {
      send.disabled = false;
    }
  });

  // The note form posts through htmx; a note that was saved empties the box.
  document.addEventListener("htmx:afterRequest", (event) => {
    const form = event.detail.elt;
    if (form && form.id === "note-form" && event.detail.successful) form.reset();
  });

  document.addEventListener("change", async (event) => {
    const canned = event.target;
    if (canned.id !== "canned" || !canned.value) return;
    const id = openConversationId();
    const body = document.getElementById("reply-body");
    const response = await fetch(`/api/canned-responses/${canned.value}/render?conversation=${id}`,
      { credentials: "same-origin" });
    const answer = await response.json();
    if (response.ok && body) body.value = answer.text;
    canned.value = "";
    body?.focus();
  });

  socket.on("mention", (e) => {
    say("You were mentioned in a note.");
    const link = document.createElement("a");
    link.href = `/conversations/${e.conversation_id}`;
    link.textContent = " Open";
    document.getElementById("live-status")?.append(link);
  });
  void page;
})();
