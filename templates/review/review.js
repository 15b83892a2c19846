// The index's filters (pipeline, status) and pages, kept in the address: index.html?status=failed&pipeline=NAME&page=2.
// Without a filter a page shows the runs it was built with and links to the other pages. With one, the runs come
// from index-data.js (every run of the store as data, loaded on first use), the matching ones drawn page by page.
// The site's only script: its Content-Security-Policy runs scripts from the site's files, never inline ones.
// Everything from the data is set as text (textContent, attributes), never parsed as markup.
(function () {
  var pipeline = document.getElementById("filter-pipeline"), status = document.getElementById("filter-status");
  if (!pipeline) return;
  document.getElementById("filters").addEventListener("submit", function (event) { event.preventDefault(); });
  var table = document.getElementById("runs"), body = table.tBodies[0];
  var pagers = Array.prototype.slice.call(document.querySelectorAll("nav.pager"));  // above and below the table
  var shown = document.getElementById("shown"), pageOf = document.getElementById("page-of");
  var noMatch = document.getElementById("no-match");
  var size = parseInt(table.dataset.pageSize, 10) || 50, root = table.dataset.root || "";
  function children(node) { return Array.prototype.slice.call(node.childNodes); }
  var built = {rows: children(body), pagers: pagers.map(children), hidden: pagers.length && pagers[0].hidden,
               shown: shown.textContent, pageOf: pageOf.textContent};
  var params = new URLSearchParams(window.location.search);
  var page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  function choose(select, value) {
    if (!value) return;
    for (var i = 0; i < select.options.length; i++) if (select.options[i].value === value) { select.value = value; return; }
  }
  choose(pipeline, params.get("pipeline")); choose(status, params.get("status"));

  var waiting = null;  // callbacks until index-data.js has loaded
  function withRuns(then) {
    if (window.reviewRuns) return then(window.reviewRuns.runs);
    if (waiting) { waiting.push(then); return; }
    waiting = [then];
    var script = document.createElement("script");
    script.src = table.dataset.runs;
    script.onload = function () { var calls = waiting; waiting = null; calls.forEach(function (f) { f(window.reviewRuns.runs); }); };
    script.onerror = function () { waiting = null; shown.textContent = "could not load " + table.dataset.runs; };
    document.head.appendChild(script);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function cell(row, className, text) { return row.appendChild(el("td", className, text)); }
  function badge(value) { return el("span", "badge s-" + value, value); }
  // The same cells as index.html's rows (tests compare the two).
  function drawRow(run) {
    var row = el("tr");
    row.dataset.pipeline = run.pipeline; row.dataset.status = run.status;
    if (run.status === "unreadable") {
      row.className = "unreadable";
      cell(row, "mono", run.id);
      cell(row, "", run.pipeline).title = run.pipeline;
      cell(row, "", "–"); cell(row, "", "–");
      cell(row, "").appendChild(badge(run.status));
      cell(row, "num", "–");
      var what = cell(row, "small");
      what.colSpan = 2;
      what.appendChild(el("span", "mono", run.path));
      what.appendChild(document.createTextNode(": not a valid run record: " + run.reason));
      return row;
    }
    var link = cell(row, "").appendChild(el("a", "mono run-link", run.id));
    link.href = root + "runs/" + encodeURIComponent(run.id) + ".html";
    cell(row, "", run.pipeline).title = run.pipeline;
    cell(row, "", run.trigger); cell(row, "", run.as_of);
    var status = cell(row, "");
    status.appendChild(badge(run.status));
    if (run.verdict) {
      status.appendChild(document.createTextNode(" "));
      var verdict = status.appendChild(el("span", "badge verdict v-" + run.verdict[0], run.verdict[0]));
      verdict.title = "verdict: " + run.verdict[1];
    }
    cell(row, "num", run.duration);
    var steps = cell(row, "small");
    run.steps.forEach(function (step) { steps.appendChild(el("span", "dot s-" + step[1])).title = step[0] + ": " + step[1]; });
    if (run.failed) {
      steps.appendChild(document.createTextNode(" "));
      steps.appendChild(el("span", "step-failed", run.failed[0] + ": " + run.failed[1])).title = run.failed[0] + ": " + run.failed[1];
    }
    var scraps = cell(row, "key-scraps"), clamp = scraps.appendChild(el("div", "clamp"));
    scraps.title = run.scraps.map(function (s) { return s[0] + " = " + s[1]; }).join("\n");
    run.scraps.forEach(function (s, i) {
      var scrap = clamp.appendChild(el("span", "scrap"));
      scrap.appendChild(el("span", "muted", s[0]));
      scrap.appendChild(document.createTextNode("\u00a0" + s[1]));
      if (i < run.scraps.length - 1) clamp.appendChild(document.createTextNode(" · "));
    });
    return row;
  }
  // The same links as the built pages' pagers (runner.review.views.pager), to this page with ?...&page=N.
  function drawPager(pages) {
    var links = [];
    function href(n) { var q = query(); q.set("page", n); return "?" + q.toString(); }
    function add(text, target, current, rel) { links.push({text: text, target: target, current: current, rel: rel}); }
    if (pages > 1) {
      add("← newer", page > 1 ? page - 1 : 0, false, "prev");
      var numbers = [1, pages], last = 0;
      for (var n = Math.max(1, page - 2); n <= Math.min(pages, page + 2); n++) numbers.push(n);
      numbers = numbers.filter(function (n, i) { return numbers.indexOf(n) === i; }).sort(function (a, b) { return a - b; });
      numbers.forEach(function (n) {
        if (n > last + 1) add("…", 0, false);
        add(String(n), n === page ? 0 : n, n === page);
        last = n;
      });
      add("older →", page < pages ? page + 1 : 0, false, "next");
    }
    pagers.forEach(function (nav) {
      nav.hidden = pages <= 1;
      nav.replaceChildren.apply(nav, links.map(function (link) {
        var node = el(link.target ? "a" : "span", link.target ? "" : (link.current ? "current" : "off"), link.text);
        if (link.target) { node.href = href(link.target); if (link.rel) node.rel = link.rel; }
        if (link.current) node.setAttribute("aria-current", "page");
        return node;
      }));
    });
    pageOf.textContent = pages > 1 ? "page " + page + " of " + pages : "";
  }
  function query() {
    var q = new URLSearchParams();
    if (pipeline.value) q.set("pipeline", pipeline.value);
    if (status.value) q.set("status", status.value);
    return q;
  }
  function apply() {
    if (!pipeline.value && !status.value) {  // the page as built
      body.replaceChildren.apply(body, built.rows);
      pagers.forEach(function (nav, i) { nav.replaceChildren.apply(nav, built.pagers[i]); nav.hidden = built.hidden; });
      shown.textContent = built.shown; pageOf.textContent = built.pageOf; noMatch.hidden = true;
      return;
    }
    withRuns(function (runs) {
      var matching = runs.filter(function (run) {
        return (!pipeline.value || run.pipeline === pipeline.value) && (!status.value || run.status === status.value);
      });
      var pages = Math.max(1, Math.ceil(matching.length / size));
      page = Math.min(page, pages);
      var first = (page - 1) * size, rows = matching.slice(first, first + size);
      body.replaceChildren.apply(body, rows.map(drawRow));
      drawPager(pages);
      var count = matching.length === runs.length ? matching.length + " runs" : matching.length + " of " + runs.length + " runs";
      shown.textContent = pages > 1 ? count + ", " + (first + 1) + "–" + (first + rows.length) + " shown" : count;
      noMatch.hidden = matching.length > 0;
    });
  }
  function changed() {
    page = 1;
    var q = query().toString();
    history.replaceState(null, "", window.location.pathname + (q ? "?" + q : ""));
    apply();
  }
  pipeline.addEventListener("change", changed);
  status.addEventListener("change", changed);
  apply();
})();
