/* backupconsole dashboard: draws the throughput chart from the JSON the server rendered
 * (#throughput-data). The table beside it holds the same figures for screen readers and
 * for browsers without JavaScript. */
(function () {
  "use strict";

  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  function binary(bytes) {
    var value = bytes;
    var unit = 0;
    while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit ? value.toFixed(1) : String(value)) + " " + UNITS[unit];
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // The axis counts in one unit, the largest day's, so Chart.js picks round steps (10, 20 GiB).
  function axisUnit(days) {
    var largest = Math.max.apply(null, days.map(function (day) { return day.bytes; }));
    var unit = 0;
    while (largest >= 1024 && unit < UNITS.length - 1) {
      largest /= 1024;
      unit += 1;
    }
    return unit;
  }

  function draw(canvas, days) {
    var text = cssVar("--bs-secondary-color");
    var grid = cssVar("--bs-border-color-translucent");
    var unit = axisUnit(days);
    var scale = Math.pow(1024, unit);
    return new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: days.map(function (day) { return day.label; }),
        datasets: [{
          label: "Backed up",
          data: days.map(function (day) { return day.bytes / scale; }),
          backgroundColor: cssVar("--bs-primary"),
          borderRadius: 3,
        }],
      },
      options: {
        maintainAspectRatio: false,
        animation: false,
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: { label: function (item) { return binary(days[item.dataIndex].bytes); } },
          },
        },
        scales: {
          x: { ticks: { color: text }, grid: { display: false } },
          y: {
            beginAtZero: true,
            ticks: { color: text, callback: function (value) { return value + " " + UNITS[unit]; } },
            grid: { color: grid },
          },
        },
      },
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var canvas = document.getElementById("throughput-chart");
    var data = document.getElementById("throughput-data");
    if (!canvas || !data || !window.Chart) return;
    var days = JSON.parse(data.textContent);
    var chart = draw(canvas, days);
    // Colours follow the theme: redraw when the toggle (or the system) switches it.
    new MutationObserver(function () {
      chart.destroy();
      chart = draw(canvas, days);
    }).observe(document.documentElement, { attributes: true, attributeFilter: ["data-bs-theme"] });
  });
})();
