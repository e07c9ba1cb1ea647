/* backupconsole: loaded in <head>, before the page is drawn.
 *
 * - The colour theme: the user's choice (localStorage), else the system's preference. Set here,
 *   before the first paint, so a dark page never flashes white. The #theme-toggle button flips it.
 * - Forms with data-confirm ask before they submit.
 * - The time zone: a cookie with the browser's IANA zone name, which the server's
 *   TimeZoneMiddleware uses to show every time in the user's zone.
 */
(function () {
  "use strict";

  var THEME_KEY = "console-theme";
  var ZONE_COOKIE = "console_tz";
  var root = document.documentElement;
  var systemDark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function chosenTheme() {
    try {
      var value = window.localStorage.getItem(THEME_KEY);
      return value === "dark" || value === "light" ? value : null;
    } catch (error) {
      return null; // storage disabled: follow the system
    }
  }

  function currentTheme() {
    return chosenTheme() || (systemDark && systemDark.matches ? "dark" : "light");
  }

  function showTheme(theme) {
    root.setAttribute("data-bs-theme", theme);
    var button = document.getElementById("theme-toggle");
    if (button) {
      button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
      button.title = theme === "dark" ? "Switch to light mode" : "Switch to dark mode";
    }
  }

  showTheme(currentTheme());
  document.addEventListener("DOMContentLoaded", function () {
    showTheme(currentTheme());
  });
  if (systemDark && systemDark.addEventListener) {
    systemDark.addEventListener("change", function () {
      if (!chosenTheme()) showTheme(currentTheme());
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("#theme-toggle") : null;
    if (!button) return;
    var next = root.getAttribute("data-bs-theme") === "dark" ? "light" : "dark";
    try {
      window.localStorage.setItem(THEME_KEY, next);
    } catch (error) {
      /* not remembered, but still switched */
    }
    showTheme(next);
  });

  // <form data-confirm="Question?">: asks before submitting (a destructive action).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    // IANA names are letters, digits, "_", "+", "-" and "/": safe in a cookie as they are.
    if (zone && /^[A-Za-z0-9_+\-\/]+$/.test(zone)) {
      var current = document.cookie.match(/(?:^|;\s*)console_tz=([^;]*)/);
      if (!current || current[1] !== zone) {
        document.cookie =
          ZONE_COOKIE + "=" + zone + "; path=/; max-age=31536000; samesite=lax";
      }
    }
  } catch (error) {
    /* no Intl support: times stay in the server's zone */
  }
})();
