// kongtaskd dashboard: the only script. Pages work without it; it adds two things.
// 1. Live refresh: a page whose <body> has data-refresh="N" reloads every N seconds,
//    unless the viewer is typing in a field or paused it (remembered for this tab).
// 2. Confirmation: a form with data-confirm="question" asks in a dialog and, when the
//    answer is yes, is sent with confirmed=yes (without JavaScript the server asks on a
//    page of its own instead).
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "0");
  var pausedKey = "kongtaskd-refresh-paused";
  var pause = document.querySelector(".pause-refresh");
  function paused() { return window.sessionStorage.getItem(pausedKey) === "1"; }
  function label() { if (pause) { pause.textContent = paused() ? "resume" : "pause"; } }
  if (pause) {
    label();
    pause.addEventListener("click", function (event) {
      event.preventDefault();
      window.sessionStorage.setItem(pausedKey, paused() ? "0" : "1");
      label();
    });
  }
  if (seconds > 0) {
    window.setInterval(function () {
      var active = document.activeElement;
      var typing = active && (active.tagName === "INPUT" || active.tagName === "SELECT" ||
        active.tagName === "TEXTAREA");
      if (!paused() && !typing && document.visibilityState === "visible") {
        window.location.reload();
      }
    }, Math.max(seconds, 1) * 1000);
  }
  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
        return;
      }
      var flag = document.createElement("input");
      flag.type = "hidden";
      flag.name = "confirmed";
      flag.value = "yes";
      form.appendChild(flag);
    });
  });
})();
