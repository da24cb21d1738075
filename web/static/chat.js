// The patient's chat (loaded by chat-widget.js): messages both ways in real time, typing,
// read receipts, and catching up after a lost connection. Everything a message holds is shown
// with textContent, never parsed as HTML.
//
// Exactly once, in order: every message the server knows has an id, and the log holds each id
// once, ordered by (time, id). Messages the patient writes carry a client id until the server
// answers with the stored message; they are resent with the same client id after a reconnect
// (the server stores a client id once), one at a time so they are stored in the order written.
// After every (re)connect the page asks for the history after the newest message it shows.
"use strict";

(function () {
  const MAX_CHARS = 2000;
  const ACK_TIMEOUT_MS = 10000;
  const RETRY_MS = 3000;
  const HEARTBEAT_MS = 25000;
  const TYPING_EVERY_MS = 2000;
  const TYPING_SHOWN_MS = 4000;
  const RECEIPT_EVERY_MS = 400; // 25 per 10 s: inside the 40 other events a connection may send

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function newClientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function timeOf(iso) {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function mount(root, options) {
    const title = options.title || "Chat with us";
    const uid = Math.random().toString(36).slice(2, 8);
    root.replaceChildren();
    const section = el("section", "hub-chat");
    section.setAttribute("aria-label", title);
    section.dataset.connected = "false";
    const head = el("header", "hub-chat-head");
    head.append(el("h1", "hub-chat-title", title));
    const status = el("p", "hub-chat-status");
    status.setAttribute("role", "status");
    status.hidden = true;
    head.append(status);
    const log = el("ol", "hub-chat-log");
    log.setAttribute("aria-live", "polite");
    log.setAttribute("aria-label", "Messages");
    const typing = el("p", "hub-chat-typing", "The clinic is typing…");
    typing.hidden = true;
    const form = el("form", "hub-chat-form");
    const label = el("label", "hub-chat-label", "Your message");
    label.htmlFor = `hub-chat-input-${uid}`;
    const input = el("textarea", "hub-chat-input");
    input.id = label.htmlFor;
    input.rows = 2;
    input.maxLength = MAX_CHARS;
    input.required = true;
    const send = el("button", "hub-chat-send", "Send");
    send.type = "submit";
    form.append(label, input, send);
    const note = el("p", "hub-chat-note", "Not for emergencies: in an emergency, call your local emergency number.");
    section.append(head, log, typing, form, note);
    root.append(section);

    function say(text) {
      status.textContent = text;
      status.hidden = !text;
    }

    function closed(text) {
      say(text);
      section.dataset.connected = "false";
      form.hidden = true;
    }

    if (!options.token) {
      closed("Open the chat link the clinic sent you to chat with them.");
      return;
    }
    if (typeof window.io !== "function") {
      closed("The chat could not load. Check your connection and reload the page.");
      return;
    }

    const shown = new Map(); // message id -> <li>
    const pending = new Map(); // client id -> { body, li, inFlight }
    const unread = new Set(); // clinic messages shown while the page was hidden
    const receipts = []; // [event, message id] waiting to be sent, paced
    let newest = null; // { at, id } of the newest server message shown: where history resumes

    function key(at, id) {
      return `${at}|${id}`;
    }

    function place(li) {
      // Pending messages (no time yet) stay last; the rest in (time, id) order.
      if (!li.dataset.at) {
        log.append(li);
        return;
      }
      const mine = key(li.dataset.at, li.dataset.id);
      for (const other of log.children) {
        if (other === li) continue;
        if (!other.dataset.at || key(other.dataset.at, other.dataset.id) > mine) {
          log.insertBefore(li, other);
          return;
        }
      }
      log.append(li);
    }

    function bubble(from, body) {
      const li = el("li", `hub-chat-msg from-${from}`);
      li.append(el("p", "hub-chat-body", body));
      const meta = el("p", "hub-chat-meta");
      meta.append(el("span", "hub-chat-who"), el("time", "hub-chat-time"), el("span", "hub-chat-state"));
      li.append(meta);
      return li;
    }

    function fill(li, item) {
      li.dataset.id = item.id;
      li.dataset.at = item.at;
      li.querySelector(".hub-chat-who").textContent = item.from === "clinic" ? (item.author || title) : "You";
      const time = li.querySelector(".hub-chat-time");
      time.dateTime = item.at;
      time.textContent = timeOf(item.at);
      li.querySelector(".hub-chat-state").textContent = item.from === "patient" ? "Sent" : "";
    }

    function show(item) {
      if (!item || !item.id || shown.has(item.id)) return;
      let li = null;
      const mine = item.client_id ? pending.get(item.client_id) : null;
      if (mine) {
        li = mine.li;
        li.classList.remove("pending");
        pending.delete(item.client_id);
      } else {
        li = bubble(item.from, item.body);
      }
      fill(li, item);
      shown.set(item.id, li);
      place(li);
      if (!newest || key(item.at, item.id) > key(newest.at, newest.id)) newest = { at: item.at, id: item.id };
      if (item.from === "clinic" && item.status !== "read" && item.status !== "failed") acknowledge(item.id);
      li.scrollIntoView({ block: "nearest" });
    }

    function acknowledge(id) {
      if (document.visibilityState === "visible") receipts.push(["read", id]);
      else {
        receipts.push(["delivered", id]);
        unread.add(id);
      }
    }

    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      for (const id of unread) receipts.push(["read", id]);
      unread.clear();
    });

    const socket = window.io(`${options.hub || ""}/chat`, {
      transports: ["websocket"],
      auth: { token: options.token },
      reconnectionDelayMax: 10000,
    });

    setInterval(() => {
      // Paced so a long catch-up stays inside the connection's rate limit.
      if (socket.connected && receipts.length) {
        const [event, id] = receipts.shift();
        socket.emit(event, { message_id: id });
      }
    }, RECEIPT_EVERY_MS);

    function history() {
      socket.timeout(ACK_TIMEOUT_MS).emit("history", { after: newest ? newest.id : null }, (err, answer) => {
        if (err || !answer || answer.error) return; // the next connect asks again
        for (const item of answer.messages) show(item);
        if (answer.more) history();
      });
    }

    function flush() {
      // One message in flight at a time: the server stores them in the order written.
      if (!socket.connected) return;
      for (const [clientId, entry] of pending) {
        if (entry.inFlight) return;
        if (entry.failed) continue;
        entry.inFlight = true;
        socket.timeout(ACK_TIMEOUT_MS).emit("message", { body: entry.body, client_id: clientId }, (err, answer) => {
          entry.inFlight = false;
          if (err) {
            setTimeout(flush, RETRY_MS); // no answer: the same client id again is safe
            return;
          }
          if (answer && answer.error) {
            if (answer.error.code === "rate_limited") {
              setTimeout(flush, RETRY_MS);
              return;
            }
            entry.failed = true;
            entry.li.classList.add("failed");
            entry.li.querySelector(".hub-chat-state").textContent = `Not sent: ${answer.error.message}`;
            flush();
            return;
          }
          show(answer.message);
          flush();
        });
        return;
      }
    }

    socket.on("connect", () => {
      section.dataset.connected = "true";
      say("");
      history();
      flush();
    });
    socket.on("connect_error", (err) => {
      section.dataset.connected = "false";
      if (err && err.message === "invalid token") {
        socket.disconnect();
        closed("This chat link is not valid or has expired. Ask the clinic to send you a new one.");
      } else {
        say("Reconnecting…");
      }
    });
    socket.on("disconnect", (reason) => {
      section.dataset.connected = "false";
      // The server hangs up only on a link that stopped working ("error" said why).
      if (reason !== "io client disconnect" && reason !== "io server disconnect") say("Reconnecting…");
    });
    socket.on("message", show);
    socket.on("error", (e) => {
      if (e && e.code === "expired") {
        socket.disconnect();
        closed(e.message);
      } else if (e && e.message) {
        say(e.message);
      }
    });
    let typingTimer = null;
    socket.on("typing", () => {
      typing.hidden = false;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => { typing.hidden = true; }, TYPING_SHOWN_MS);
    });
    setInterval(() => {
      if (socket.connected) socket.emit("heartbeat", {});
    }, HEARTBEAT_MS);

    let lastTyping = 0;
    input.addEventListener("input", () => {
      const now = Date.now();
      if (socket.connected && now - lastTyping > TYPING_EVERY_MS) {
        lastTyping = now;
        socket.emit("typing", {});
      }
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = input.value.trim();
      if (!body) return;
      if (body.length > MAX_CHARS) {
        say(`A message can be at most ${MAX_CHARS} characters.`);
        return;
      }
      const li = bubble("patient", body);
      li.classList.add("pending");
      li.querySelector(".hub-chat-who").textContent = "You";
      li.querySelector(".hub-chat-state").textContent = "Sending…";
      const clientId = newClientId();
      pending.set(clientId, { body, li, inFlight: false, failed: false });
      place(li);
      li.scrollIntoView({ block: "nearest" });
      input.value = "";
      flush();
    });
    return socket;
  }

  window.HubChat = { mount };
})();
