// Follows a search's status live (server-sent events) and reloads the page when it has ended, so
// the server renders its results. Nothing else on these pages needs script.
(function () {
  "use strict";
  var page = document.querySelector("[data-search-id]");
  if (!page) return;
  var status = page.getAttribute("data-status");
  if (status === "FINISHED" || status === "ERROR") return;
  var badge = document.getElementById("status");
  var events = new EventSource("/api/searches/" + page.getAttribute("data-search-id") + "/events");
  events.addEventListener("status", function (message) {
    var change = JSON.parse(message.data);
    badge.textContent = change.status;
    badge.className = "status " + change.status;
    if (change.status === "FINISHED" || change.status === "ERROR") {
      events.close();
      window.location.reload();
    }
  });
  events.onerror = function () {
    // The stream ends after the last status; a dropped one is retried by the browser.
    if (events.readyState === EventSource.CLOSED) window.location.reload();
  };
})();
