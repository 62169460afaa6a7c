// Sendense console: progressive enhancement only. Every page works without this file except the
// live job table, which the hub pushes as server-sent events.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Ask before destructive actions.
  document.querySelectorAll("form.confirm").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.dataset.confirm || "Are you sure?")) ev.preventDefault();
    });
  });

  // Copy buttons copy the text of the element they name.
  document.querySelectorAll("button.copy").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.dataset.copy);
      if (!el) return;
      el.select();
      var done = function () { b.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(el.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  });

  // The policy preview is a GET: leave the CSRF token out of its URL.
  var preview = document.getElementById("preview");
  if (preview) {
    preview.addEventListener("click", function () {
      var t = preview.form.querySelector("input[name=csrf_token]");
      if (t) t.disabled = true;
    });
  }

  // Live jobs.
  var table = document.getElementById("jobs");
  if (table && window.EventSource) {
    var live = document.getElementById("live");
    var es = new EventSource("/jobs/stream");
    es.addEventListener("jobs", function (ev) {
      var rows = JSON.parse(ev.data);
      var body = table.tBodies[0];
      rows.slice().reverse().forEach(function (j) {
        var tr = document.getElementById("job-" + j.id);
        if (!tr) {
          tr = document.createElement("tr");
          tr.id = "job-" + j.id;
          var cells = ["id", "vm", "type", "status", "phase", "progress", "read", "throughput", "eta", "created"];
          cells.forEach(function (c) {
            var td = document.createElement("td");
            td.className = c;
            tr.appendChild(td);
          });
          var a = document.createElement("a");
          a.href = "/backups/" + encodeURIComponent(j.id);
          a.textContent = j.id;
          tr.cells[0].appendChild(a);
          var p = document.createElement("progress");
          p.max = 100;
          p.setAttribute("aria-label", "progress of " + j.id);
          var s = document.createElement("span");
          s.className = "pct";
          tr.cells[5].appendChild(p);
          tr.cells[5].appendChild(document.createTextNode(" "));
          tr.cells[5].appendChild(s);
          body.insertBefore(tr, body.firstChild);
        }
        var set = function (cls, text) { var el = tr.querySelector("." + cls); if (el) el.textContent = text; };
        tr.cells[1].textContent = j.vm;
        tr.cells[2].textContent = j.type;
        set("status", j.status);
        set("phase", j.phase || "");
        set("read", j.read);
        set("throughput", j.throughput);
        set("eta", j.eta);
        tr.cells[9].textContent = j.created;
        tr.querySelector("progress").value = j.percent;
        tr.querySelector(".pct").textContent = j.percent + " %";
      });
      if (live) live.textContent = "Updated by the hub at " + new Date().toLocaleTimeString() + ".";
    });
    es.onerror = function () { if (live) live.textContent = "Connection to the hub lost; retrying."; };
  }
});
