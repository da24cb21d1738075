// The printable report's Print button (the page's own script: the CSP allows no inline code).
document.addEventListener("click", (event) => {
  if (event.target.closest("[data-print]")) window.print();
});
