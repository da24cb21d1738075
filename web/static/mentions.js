// Mentions and canned replies in the staff workspace:
// - the Mentions badge in the nav (unread count, kept live by the `mention` socket event);
// - "@" in a note box offers the colleagues who can open the conversation, by name;
// - "/" in the reply box offers the canned replies by title; Enter inserts one with its
//   placeholders filled for this conversation's patient.
// The pickers follow the ARIA pattern for a text box with a list of suggestions: the box
// keeps focus and points at the highlighted option with aria-activedescendant; Up/Down move,
// Enter or Tab insert, Escape closes; a live region says how many suggestions there are.
// Listeners are delegated from `document`, so boxes swapped in by htmx work as they come.
"use strict";

(function () {
  const MAX_SHOWN = 8;

  // -- the badge -------------------------------------------------------------------------
  function badge() {
    return document.getElementById("mention-count");
  }

  function showCount(n) {
    const el = badge();
    if (!el) return;
    el.textContent = n > 0 ? String(n) : "";
    const link = el.closest("a");
    if (link) link.setAttribute("aria-label", n > 0 ? `Mentions, ${n} unread` : "Mentions");
  }

  let counting = null;
  function refreshCount() {
    if (!badge() || counting) return;
    counting = fetch("/api/me/mentions?limit=0", { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then((answer) => { if (answer) showCount(answer.unread); })
      .catch(() => {})
      .finally(() => { counting = null; });
  }

  function listenForMentions() {
    const socket = window.hubSocket;
    if (!socket) return;
    socket.on("mention", () => {
      const el = badge();
      showCount((Number(el?.textContent) || 0) + 1);
    });
  }

  // -- the pickers -----------------------------------------------------------------------
  // Which box gets which picker, and what typing before the caret opens it.
  const KINDS = {
    mention: {
      box: (el) => el.matches("#note-body, form[action$='/notes'] textarea"),
      // "@" at the start or after a space or bracket, then up to two words of a name.
      trigger: /(?:^|[\s(])@([^\s@]{0,40}(?: [^\s@]{0,40})?)$/,
      label: "colleague",
    },
    canned: {
      box: (el) => el.matches("#reply-body, form[action$='/reply'] textarea"),
      trigger: /(?:^|\s)\/([^\s/]{0,60})$/,
      label: "canned reply",
    },
  };

  const cache = new Map(); // url -> Promise of items
  function load(url) {
    if (!cache.has(url)) {
      cache.set(url, fetch(url, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : { items: [] }))
        .then((answer) => answer.items || [])
        .catch(() => { cache.delete(url); return []; }));
    }
    return cache.get(url);
  }

  function conversationOf(box) {
    const action = box.form?.getAttribute("action") || "";
    const match = action.match(/\/conversations\/([0-9a-f-]{36})\//);
    return match ? match[1] : null;
  }

  async function candidates(kind, box, query) {
    const cid = conversationOf(box);
    if (!cid) return [];
    const q = query.toLowerCase();
    if (kind === "mention") {
      const people = await load(`/api/conversations/${cid}/mention-candidates`);
      return rank(people, q, (p) => [p.name, p.handle]).map((p) => ({
        id: p.id, text: p.name, hint: `@${p.handle}`, insert: `@${p.name} `,
      }));
    }
    const replies = await load(`/api/conversations/${cid}/canned-responses`);
    return rank(replies, q, (r) => [r.title]).map((r) => ({
      id: r.id, text: r.title, hint: "canned reply", canned: r.id,
    }));
  }

  // Names that start with what was typed first, then those with a word that does, then any
  // that contain it.
  function rank(items, q, keys) {
    const scored = [];
    for (const item of items) {
      let best = 9;
      for (const key of keys(item)) {
        const k = (key || "").toLowerCase();
        if (!q || k.startsWith(q)) best = Math.min(best, 0);
        else if (k.split(/[\s._-]+/).some((w) => w.startsWith(q))) best = Math.min(best, 1);
        else if (k.includes(q)) best = Math.min(best, 2);
      }
      if (best < 9) scored.push([best, item]);
    }
    scored.sort((a, b) => a[0] - b[0]);
    return scored.slice(0, MAX_SHOWN).map((pair) => pair[1]);
  }

  let open = null; // { kind, box, list, options, active, start, end }

  function announcer() {
    let el = document.getElementById("picker-status");
    if (!el) {
      el = document.createElement("p");
      el.id = "picker-status";
      el.className = "visually-hidden";
      el.setAttribute("role", "status");
      document.body.append(el);
    }
    return el;
  }

  function close() {
    if (!open) return;
    open.list.remove();
    open.box.removeAttribute("aria-activedescendant");
    open.box.removeAttribute("aria-controls");
    open = null;
  }

  function highlight(index) {
    if (!open || !open.options.length) return;
    const count = open.options.length;
    open.active = (index + count) % count;
    open.list.querySelectorAll("[role=option]").forEach((li, i) => {
      li.setAttribute("aria-selected", i === open.active ? "true" : "false");
      if (i === open.active) {
        open.box.setAttribute("aria-activedescendant", li.id);
        li.scrollIntoView({ block: "nearest" });
      }
    });
  }

  function render(kind, box, options, start, end) {
    close();
    const host = box.parentElement;
    host.classList.add("picker-host");
    const list = document.createElement("ul");
    list.id = `${box.id || "box"}-${kind}-list`;
    list.className = "picker";
    list.setAttribute("role", "listbox");
    list.setAttribute("aria-label", kind === "mention" ? "Colleagues to mention" : "Canned replies");
    if (!options.length) {
      const none = document.createElement("li");
      none.className = "picker-empty";
      none.setAttribute("role", "option");
      none.setAttribute("aria-disabled", "true");
      none.setAttribute("aria-selected", "false");
      none.id = `${list.id}-none`;
      none.textContent = kind === "mention" ? "No colleague by that name" : "No canned reply by that name";
      list.append(none);
    }
    options.forEach((option, i) => {
      const li = document.createElement("li");
      li.id = `${list.id}-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      li.dataset.index = String(i);
      const text = document.createElement("span");
      text.textContent = option.text;
      const hint = document.createElement("span");
      hint.className = "picker-hint";
      hint.textContent = option.hint;
      li.append(text, hint);
      list.append(li);
    });
    box.insertAdjacentElement("afterend", list);
    box.setAttribute("aria-controls", list.id);
    box.setAttribute("aria-autocomplete", "list");
    open = { kind, box, list, options, active: -1, start, end };
    if (options.length) highlight(0);
    const what = KINDS[kind].label;
    announcer().textContent = options.length
      ? `${options.length} ${what}${options.length === 1 ? "" : "s"} found: ${options[0].text}. Up and down to choose, Enter to insert, Escape to close.`
      : `No ${what} by that name.`;
  }

  async function choose(index) {
    if (!open || !open.options[index]) return;
    const { box, start, end } = open;
    const option = open.options[index];
    close();
    let text = option.insert;
    if (option.canned) {
      const cid = conversationOf(box);
      const response = await fetch(`/api/canned-responses/${option.canned}/render?conversation=${cid}`,
        { credentials: "same-origin" });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        announcer().textContent = answer.error?.message || "The canned reply could not be filled in.";
        return;
      }
      text = answer.text;
    }
    box.value = box.value.slice(0, start) + text + box.value.slice(end);
    const caret = start + text.length;
    box.setSelectionRange(caret, caret);
    box.focus();
    box.dispatchEvent(new Event("input", { bubbles: true })); // counters and drafts see it
    announcer().textContent = option.canned ? `Inserted ${option.text}.` : `Mentioned ${option.text}.`;
  }

  let typed = 0;
  async function update(box) {
    const kind = Object.keys(KINDS).find((k) => KINDS[k].box(box));
    if (!kind) return;
    const before = box.value.slice(0, box.selectionStart);
    const match = before.match(KINDS[kind].trigger);
    if (!match || box.selectionStart !== box.selectionEnd) { close(); return; }
    const query = match[1];
    const start = before.length - query.length - 1; // the "@" or "/"
    const mine = ++typed;
    const options = await candidates(kind, box, query);
    if (mine !== typed || document.activeElement !== box) return; // typing moved on
    render(kind, box, options, start, before.length);
  }

  document.addEventListener("input", (event) => {
    if (event.target instanceof HTMLTextAreaElement) update(event.target);
  });

  document.addEventListener("keydown", (event) => {
    if (!open || event.target !== open.box) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!open.options.length) return;
      event.preventDefault();
      highlight(open.active + (event.key === "ArrowDown" ? 1 : -1));
    } else if ((event.key === "Enter" || event.key === "Tab") && !event.ctrlKey && !event.metaKey
      && !event.shiftKey && open.options.length) {
      event.preventDefault();
      event.stopPropagation();
      choose(open.active);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // Escape closes the list, not the conversation
      close();
    }
  }, true);

  // A click on an option chooses it; mousedown is held so the box keeps focus.
  document.addEventListener("mousedown", (event) => {
    const option = event.target.closest?.(".picker [role=option][data-index]");
    if (option) event.preventDefault();
  });
  document.addEventListener("click", (event) => {
    const option = event.target.closest?.(".picker [role=option][data-index]");
    if (option && open) choose(Number(option.dataset.index));
  });
  document.addEventListener("focusout", (event) => {
    if (open && event.target === open.box) setTimeout(() => {
      if (open && document.activeElement !== open.box) close();
    }, 150);
  });
  // Content swapped by htmx may have removed the box the list belonged to.
  document.addEventListener("htmx:beforeSwap", () => close());
  // The reply box says that "/" is there (the note box's label already names "@").
  function hint() {
    document.querySelectorAll("#reply-body:not([placeholder])").forEach((box) => {
      box.placeholder = "Type / and a name for a canned reply";
    });
  }
  document.addEventListener("htmx:afterSettle", () => { refreshCount(); hint(); });

  function start() {
    refreshCount();
    listenForMentions();
    hint();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
