/* respawn admin: show <time> elements in the browser's time zone.
 * The server renders UTC text (kept in the title attribute for hover); without JavaScript
 * the UTC text simply stays. Runs on load and after each htmx swap. */
(function () {
  "use strict";
  var pad = function (n) { return (n < 10 ? "0" : "") + n; };
  var zone = "";
  try {
    zone = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
      .formatToParts(new Date())
      .filter(function (p) { return p.type === "timeZoneName"; })
      .map(function (p) { return p.value; })[0] || "";
  } catch (e) { zone = ""; }

  function local(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
      (zone ? " " + zone : "");
  }

  function convert(root) {
    var nodes = (root || document).querySelectorAll("[data-local]:not([data-done])");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var d = new Date(el.getAttribute("datetime") || el.getAttribute("data-datetime"));
      if (isNaN(d.getTime())) { continue; }
      el.textContent = local(d);
      el.setAttribute("data-done", "");
    }
    var rel = (root || document).querySelectorAll("time[data-rel]:not([data-done])");
    for (var j = 0; j < rel.length; j++) {
      var r = rel[j];
      var t = new Date(r.getAttribute("datetime"));
      if (isNaN(t.getTime())) { continue; }
      r.setAttribute("title", local(t) + " · " + r.getAttribute("title"));
      r.setAttribute("data-done", "");
    }
  }

  function hours(root) {
    var ticks = (root || document).querySelectorAll("[data-local-hour]:not([data-done])");
    for (var i = 0; i < ticks.length; i++) {
      var d = new Date(ticks[i].getAttribute("data-datetime"));
      if (isNaN(d.getTime())) { continue; }
      ticks[i].textContent = pad(d.getHours()) + ":" + pad(d.getMinutes());
      ticks[i].setAttribute("data-done", "");
    }
    var notes = (root || document).querySelectorAll("[data-tz-note]");
    for (var j = 0; j < notes.length; j++) {
      notes[j].textContent = "Hours in your time zone" + (zone ? " (" + zone + ")" : "") + ".";
    }
  }

  document.addEventListener("DOMContentLoaded", function () { hours(document); });
  document.addEventListener("DOMContentLoaded", function () { convert(document); });
  document.addEventListener("htmx:afterSettle", function (ev) { convert(ev.target); });
})();
