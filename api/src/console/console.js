// Vigil's console: the range picker applies itself, and a page refreshes
// itself at the chosen interval while it is visible.
"use strict";
document.querySelectorAll("form.picker select").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});
const seconds = { "10s": 10, "30s": 30, "1m": 60 }[document.body.dataset.refresh];
if (seconds) {
  setInterval(() => {
    if (document.visibilityState === "visible") {
      location.reload();
    }
  }, seconds * 1000);
}
