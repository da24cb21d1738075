// Live updates for the staff inbox. Server-rendered pages work without this file; it adds
// socket.io events (new messages, status ticks, notes, presence) and fetch-based replies.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const page = document.body.dataset.page;
  const status = document.getElementById("live-status");

  function say(text) {
    if (!status) return;
    status.textContent = text;
    status.hidden = !text;
  }

  function setUnread(count) {
    const n = Number(count) || 0;
    const badge = document.getElementById("unread-count");
    if (badge) badge.textContent = n ? String(n) : "";
    const base = document.title.replace(/^\(\d+\)\s*/, "");
    document.title = n ? `(${n}) ${base}` : base;
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

  if (typeof io === "undefined") {
    say("Live updates are unavailable (the socket.io client is not installed); reload to see new messages.");
    return;
  }
  setUnread(document.getElementById("unread-count")?.textContent || 0);

  const socket = io("/staff", { transports: ["websocket", "polling"], withCredentials: true });
  window.hubSocket = socket; // journeys.js listens on the same connection
  socket.on("connect", () => {
    window.hubSocketConnected = true;
    say("");
    if (page === "conversation") joinConversation();
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

  // -- inbox list -----------------------------------------------------------------------
  const list = document.getElementById("conversation-list");

  async function refreshRow(conversationId, moveToTop) {
    if (!list) return;
    const query = list.dataset.query || "";
    const html = await getHTML(`/inbox/rows/${conversationId}?${query}`);
    if (html === null) return;
    const existing = list.querySelector(`[data-conversation-id="${conversationId}"]`);
    if (!html) {
      if (existing) existing.remove();
      return;
    }
    const row = fromHTML(html);
    if (existing && !moveToTop) existing.replaceWith(row);
    else {
      if (existing) existing.remove();
      list.prepend(row);
    }
    document.getElementById("empty-list")?.remove();
  }

  if (page === "inbox") {
    socket.on("message:new", (e) => refreshRow(e.conversation_id, true));
    socket.on("message:status", (e) => refreshRow(e.conversation_id, false));
    socket.on("conversation:updated", (e) => refreshRow(e.conversation_id, false));
    socket.on("conversation:assigned", (e) => refreshRow(e.conversation_id, false));
  }

  // -- one conversation -----------------------------------------------------------------
  const conversation = document.querySelector(".conversation");
  const conversationId = conversation?.dataset.conversationId;
  const thread = document.getElementById("thread");
  const presence = document.getElementById("presence");
  const present = new Map();

  function joinConversation() {
    socket.emit("join_conversation", { conversation_id: conversationId }, (answer) => {
      if (answer && answer.error) say("You no longer have access to this conversation.");
    });
  }

  function showPresence() {
    const parts = [];
    for (const [, p] of present) parts.push(`${p.name} is ${p.state === "typing" ? "typing…" : "viewing"}`);
    if (presence) presence.textContent = parts.join(" · ");
  }

  async function appendItem(url, selector) {
    if (thread.querySelector(selector)) return;
    const html = await getHTML(url);
    if (!html || thread.querySelector(selector)) return;
    thread.append(fromHTML(html));
    thread.lastElementChild.scrollIntoView({ block: "nearest" });
  }

  if (page === "conversation" && conversationId) {
    socket.on("message:new", (e) => {
      if (e.conversation_id !== conversationId) return;
      appendItem(`/conversations/${conversationId}/messages/${e.message_id}`,
        `[data-message-id="${e.message_id}"]`);
    });
    socket.on("message:status", (e) => {
      if (e.conversation_id !== conversationId) return;
      const tick = thread.querySelector(`[data-message-id="${e.message_id}"] .tick`);
      if (tick) {
        tick.dataset.status = e.status;
        tick.textContent = e.status;
        tick.setAttribute("aria-label", `status ${e.status}`);
      } else {
        appendItem(`/conversations/${conversationId}/messages/${e.message_id}`,
          `[data-message-id="${e.message_id}"]`);
      }
    });
    socket.on("message:updated", async (e) => {
      if (e.conversation_id !== conversationId) return;
      const html = await getHTML(`/conversations/${conversationId}/messages/${e.message_id}`);
      const old = thread.querySelector(`[data-message-id="${e.message_id}"]`);
      if (html && old) old.replaceWith(fromHTML(html));
    });
    socket.on("note:new", (e) => {
      if (e.conversation_id !== conversationId) return;
      appendItem(`/conversations/${conversationId}/notes/${e.note_id}`, `[data-note-id="${e.note_id}"]`);
    });
    socket.on("presence", (e) => {
      if (e.conversation_id !== conversationId) return;
      if (e.state === "left") present.delete(e.staff_id);
      else present.set(e.staff_id, e);
      showPresence();
      if (e.state === "typing") setTimeout(() => {
        const p = present.get(e.staff_id);
        if (p && p.state === "typing") { p.state = "viewing"; showPresence(); }
      }, 4000);
    });

    const body = document.getElementById("reply-body");
    let lastTyping = 0;
    body?.addEventListener("input", () => {
      const now = Date.now();
      if (now - lastTyping > 2000) {
        lastTyping = now;
        socket.emit("typing", { conversation_id: conversationId });
      }
    });

    const form = document.getElementById("reply-form");
    const error = document.getElementById("reply-error");
    form?.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const response = await fetch(`/api/conversations/${conversationId}/messages`, {
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
      appendItem(`/conversations/${conversationId}/messages/${answer.message_id}`,
        `[data-message-id="${answer.message_id}"]`);
    });

    const canned = document.getElementById("canned");
    canned?.addEventListener("change", async () => {
      if (!canned.value) return;
      const response = await fetch(`/api/canned-responses/${canned.value}/render?conversation=${conversationId}`,
        { credentials: "same-origin" });
      const answer = await response.json();
      if (response.ok) body.value = answer.text;
      canned.value = "";
      body.focus();
    });
  }

  socket.on("mention", (e) => {
    say("You were mentioned in a note.");
    const link = document.createElement("a");
    link.href = `/conversations/${e.conversation_id}`;
    link.textContent = " Open";
    status?.append(link);
  });
})();
