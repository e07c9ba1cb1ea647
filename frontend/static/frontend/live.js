/*
 * Live console fragments (runs pages, dashboard).
 *
 * An element with hx-ext="ws", ws-connect and data-live holds a websocket; the server pushes the
 * page's own fragments re-rendered, which the HTMX ws extension swaps in by id. While the socket is
 * not open (closed, errored, reconnecting), the fragments poll their endpoint instead:
 *   hx-trigger="every 2s [consoleLive.down(this)]"
 * A finished run's fragment carries no trigger, so polling stops by itself; a refused poll (signed
 * out, access withdrawn) stops that element. An indicator [data-live-indicator="<socket id>"]
 * shows the state. Elements [data-elapsed-since="<unix seconds>"] count a running time up.
 */
(function () {
  "use strict";
  if (window.consoleLive) return;

  var STATES = {
    connecting: ["Connecting…", "text-bg-secondary"],
    open: ["Live", "text-bg-success"],
    down: ["Reconnecting · updating every 2 s", "text-bg-warning"],
    stopped: ["Updates stopped · reload the page", "text-bg-danger"],
    final: ["Finished", "text-bg-secondary"]
  };

  function socketOf(elt) {
    return elt && elt.closest ? elt.closest("[data-live]") : null;
  }

  function setState(socket, state) {
    if (!socket || !socket.hasAttribute("data-live")) return;
    // A finished run's fragment gets no more updates: the state stays final.
    if (socket.getAttribute("data-live-state") === "final") return;
    socket.setAttribute("data-live-state", state);
    if (!socket.id) return;
    document.querySelectorAll('[data-live-indicator="' + socket.id + '"]').forEach(function (badge) {
      badge.hidden = state === "final";
      badge.textContent = STATES[state][0];
      badge.classList.remove("text-bg-secondary", "text-bg-success", "text-bg-warning", "text-bg-danger");
      badge.classList.add(STATES[state][1]);
    });
  }

  function on(name, state) {
    document.addEventListener(name, function (event) { setState(event.target, state); });
  }
  on("htmx:wsConnecting", "connecting");
  on("htmx:wsOpen", "open");
  on("htmx:wsClose", "down");
  on("htmx:wsError", "down");

  // A poll the server refuses (401 signed out, 403/404 access withdrawn) will not succeed later.
  document.addEventListener("htmx:responseError", function (event) {
    var elt = event.detail && event.detail.elt;
    if (!elt || !elt.hasAttribute("data-live-poll")) return;
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (status === 401 || status === 403 || status === 404) {
      elt.setAttribute("data-live-stopped", "");
      setState(socketOf(elt), "stopped");
    }
  });

  // A fragment marked data-live-final (a finished run) ends the live view of its socket.
  document.addEventListener("htmx:load", function (event) {
    var elt = event.target;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-live-final")) setState(socketOf(elt), "final");
  });

  function duration(seconds) {
    var total = Math.max(0, Math.floor(seconds));
    var hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), secs = total % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (hours >= 24) return Math.floor(hours / 24) + "\u00a0d " + (hours % 24) + "\u00a0h";
    if (hours) return hours + "\u00a0h " + pad(minutes) + "\u00a0min";
    if (minutes) return minutes + "\u00a0min " + pad(secs) + "\u00a0s";
    return secs + "\u00a0s";
  }

  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-elapsed-since]").forEach(function (elt) {
      var since = parseFloat(elt.getAttribute("data-elapsed-since"));
      if (!isNaN(since)) elt.textContent = duration(now - since);
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("htmx:load", tick);
  document.addEventListener("DOMContentLoaded", tick);

  window.consoleLive = {
    /* Whether a fragment should poll: its socket is not open, and it was not refused. */
    down: function (elt) {
      if (!elt || elt.hasAttribute("data-live-stopped")) return false;
      var socket = socketOf(elt);
      return !socket || socket.getAttribute("data-live-state") !== "open";
    }
  };
})();
