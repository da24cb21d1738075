// The embeddable patient chat: one container and one script tag, no build step.
//
//   <div id="hub-chat"></div>
//   <script src="https://hub.example.org/static/chat-widget.js" data-token="…" async></script>
//
// data-token: the patient's chat token (else the page's ?chat=… parameter); data-container: the
// container's id (default hub-chat); data-title: the heading (default "Chat with us").
// It loads the socket.io client, the chat and its styles from the hub that served it.
"use strict";

(function () {
  const script = document.currentScript;
  if (!script) return;
  const hub = new URL(script.src, window.location.href).origin;
  const data = script.dataset;
  const container = document.getElementById(data.container || "hub-chat");
  if (!container) {
    console.warn(`hub chat: no element with id "${data.container || "hub-chat"}" to show the chat in`);
    return;
  }
  const token = data.token || new URLSearchParams(window.location.search).get("chat") || "";

  function load(tag, attributes) {
    return new Promise((resolve, reject) => {
      const element = document.createElement(tag);
      Object.assign(element, attributes);
      element.addEventListener("load", resolve);
      element.addEventListener("error", () => reject(new Error(`could not load ${attributes.src || attributes.href}`)));
      document.head.append(element);
    });
  }

  const css = `${hub}/static/chat.css`;
  const styled = [...document.querySelectorAll('link[rel="stylesheet"]')].some((l) => l.href === css);
  const styles = styled ? Promise.resolve() : load("link", { rel: "stylesheet", href: css });
  const client = typeof window.io === "function"
    ? Promise.resolve()
    : load("script", { src: `${hub}/static/vendor/socket.io.min.js` });
  const chat = client.then(() => (window.HubChat ? null : load("script", { src: `${hub}/static/chat.js` })));

  Promise.all([styles, chat])
    .then(() => window.HubChat.mount(container, { hub, token, title: data.title || "" }))
    .catch(() => {
      container.textContent = "The chat could not load. Check your connection and reload the page.";
    });
})();
