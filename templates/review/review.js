// The index's filters (pipeline, status), kept in the address: index.html?status=failed&pipeline=NAME.
// The site's only script: its Content-Security-Policy runs scripts from the site's files, never inline ones.
(function () {
  var pipeline = document.getElementById("filter-pipeline"), status = document.getElementById("filter-status");
  if (!pipeline) return;
  document.getElementById("filters").addEventListener("submit", function (event) { event.preventDefault(); });
  var rows = document.querySelectorAll("#runs tbody tr"), shown = document.getElementById("shown");
  var params = new URLSearchParams(window.location.search);
  function choose(select, value) {
    if (!value) return;
    for (var i = 0; i < select.options.length; i++) if (select.options[i].value === value) { select.value = value; return; }
  }
  choose(pipeline, params.get("pipeline")); choose(status, params.get("status"));
  function apply(push) {
    var n = 0;
    rows.forEach(function (row) {
      var ok = (!pipeline.value || row.dataset.pipeline === pipeline.value) && (!status.value || row.dataset.status === status.value);
      row.hidden = !ok; if (ok) n++;
    });
    shown.textContent = n === rows.length ? n + " runs" : n + " of " + rows.length + " runs";
    document.getElementById("no-match").hidden = n > 0;
    if (push) {
      var q = new URLSearchParams();
      if (pipeline.value) q.set("pipeline", pipeline.value);
      if (status.value) q.set("status", status.value);
      var query = q.toString();
      history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
    }
  }
  pipeline.addEventListener("change", function () { apply(true); });
  status.addEventListener("change", function () { apply(true); });
  apply(false);
})();
