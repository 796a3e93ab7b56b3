// A header checkbox that selects every row of its table.
document.addEventListener("change", function (event) {
  if (!event.target.matches("[data-select-all]")) return;
  const table = event.target.closest("table");
  table.querySelectorAll("tbody input[type=checkbox]").forEach(function (box) {
    box.checked = event.target.checked;
  });
});
