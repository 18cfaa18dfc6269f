// Polls a queued or running trial's status (its runs are tasks on the queue) and shows its
// result when it is gathered; the cancel button goes once the trial has ended.
(function () {
  "use strict";
  var card = document.getElementById("progress-card");
  if (!card) return;
  var labels = { queued: "排队中", running: "运行中", done: "已完成", failed: "失败", stalled: "已中断", cancelled: "已取消" };
  function show(s) {
    document.getElementById("run-status").textContent = labels[s.status] || s.status;
    document.getElementById("run-progress").value = s.progress;
    document.getElementById("run-percent").textContent = Math.round(100 * s.progress) + "%";
    if (s.twin && s.twin.source) {
      document.getElementById("run-twin").textContent =
        s.twin.source === "calibrated" ? "模拟校园：按本店日志校准。" : "模拟校园：本店日志不足以校准，使用内置参数。";
    }
    document.getElementById("cancel-simulation").hidden = !s.cancellable;
    if (s.error) {
      var e = document.getElementById("run-error");
      e.textContent = s.error;
      e.hidden = false;
    }
  }
  function poll() {
    fetch(card.getAttribute("data-status-url"), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        show(s);
        if (s.status === "done") {
          window.location.reload(); // the page renders the ranking and the report
        } else if (s.status === "queued" || s.status === "running") {
          setTimeout(poll, 1000);
        }
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  // The report is a page of its own: let the frame grow to it, as its charts are drawn.
  var frame = document.getElementById("report");
  if (frame) {
    frame.addEventListener("load", function () {
      var body = frame.contentDocument && frame.contentDocument.body;
      if (!body) return;
      var fit = function () {
        frame.style.height = frame.contentDocument.documentElement.scrollHeight + 20 + "px";
      };
      fit();
      new ResizeObserver(fit).observe(body);
    });
  }
  var state = card.getAttribute("data-status");
  if (state === "queued" || state === "running") poll();
})();
