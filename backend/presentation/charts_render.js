// Draws every chart described by a data-figure attribute (figures from backend/presentation/charts.py).
// Needs plotly.js loaded first; the page ships it from the plotly package, never a CDN.
(function () {
  "use strict";
  function draw() {
    document.querySelectorAll("[data-figure]").forEach(function (el) {
      if (el.getAttribute("data-drawn")) return;
      var fig = JSON.parse(el.getAttribute("data-figure"));
      Plotly.newPlot(el, fig.data, fig.layout, { displaylogo: false, responsive: true }).then(
        function () {
          el.setAttribute("data-drawn", "1");
        }
      );
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
  window.huiliuDrawCharts = draw;
})();
