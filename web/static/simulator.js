// The demo's patient simulator. htmx sends the forms and polls the feed; this file only
// empties a form the hub accepted, sends the picker when a patient is chosen, and keeps the
// newest text in view. Delegated listeners, so it works on content htmx swaps in.
(function () {
  "use strict";

  document.addEventListener("htmx:afterRequest", function (event) {
    const form = event.detail.elt.closest && event.detail.elt.closest("form[data-sim-reset]");
    if (form && event.detail.successful) {
      form.reset();
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.id === "sim-person" && event.target.value) {
      // A demo patient brings their own address: what was typed for someone new is dropped.
      ["sim-new-number", "sim-new-email"].forEach(function (id) {
        const typed = document.getElementById(id);
        if (typed) {
          typed.value = "";
        }
      });
      event.target.form.requestSubmit();
    }
  });

  function showNewest() {
    document.querySelectorAll(".sim-texts").forEach(function (list) {
      list.scrollTop = list.scrollHeight;
    });
  }

  document.addEventListener("htmx:afterSettle", showNewest);
  document.addEventListener("DOMContentLoaded", showNewest);
})();
