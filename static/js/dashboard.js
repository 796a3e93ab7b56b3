// Draws the dashboard's charts from data-* attributes (no inline script: the CSP forbids it),
// again after htmx swaps fresh figures in.
(function () {
  const charts = new Map();
  const colours = ["#1565c0", "#ef6c00", "#c62828", "#6a1b9a", "#78909c"];

  function draw(root) {
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (charts.has(canvas.id)) charts.get(canvas.id).destroy();
      const kind = canvas.dataset.chart;
      const chart = new window.Chart(canvas, {
        type: kind,
        data: {
          labels: JSON.parse(canvas.dataset.labels),
          datasets: [{
            label: kind === "bar" ? "KES" : "payments",
            data: JSON.parse(canvas.dataset.values),
            backgroundColor: kind === "bar" ? colours[0] : colours,
          }],
        },
        options: {
          animation: false,
          maintainAspectRatio: false,
          plugins: { legend: { display: kind !== "bar" } },
        },
      });
      charts.set(canvas.id, chart);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function () { draw(document); });
})();
