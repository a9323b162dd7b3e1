/* dedup review: the page's script. Every control carries a data-action; every card a data-path.
 * Decisions are POSTed to /api/decide (with the X-Dedup-Token header) and saved by the server at once. */
(function () {
  "use strict";
  var Cards = window.DedupCards;
  var el = Cards.el;
  var token = document.querySelector("meta[name=dedup-token]").getAttribute("content");
  var groups = [];
  var byId = {};
  var info = {};
  var shown = [];
  var page = 0;
  var selected = [];
  var viewer = new Cards.Viewer();
  var busy = false;

  function $(id) { return document.getElementById(id); }

  function message(text, isError) {
    var m = $("message");
    m.textContent = text || "";
    m.className = isError ? "error" : "";
  }

  function api(method, url, body) {
    var opts = {method: method, headers: {"X-Dedup-Token": token}, credentials: "same-origin"};
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { throw new Error(data && data.error ? data.error : "HTTP " + r.status); }
        return data;
      });
    });
  }

  function pageSize() { return parseInt($("page-size").value, 10) || 50; }

  function summaryText(c) {
    return c.groups + " groups: " + c.accepted + " accepted, " + c.rejected + " rejected, " + c.pending +
      " pending \u00b7 the accepted groups move " + c.files + " files (" + Cards.human(c.bytes) + ")";
  }

  function applySummary(data) {
    info.counts = data.counts;
    $("summary").textContent = summaryText(data.counts);
    $("summary").setAttribute("data-accepted", String(data.counts.accepted));
    $("output").textContent = data.output;
    $("ignore-file").textContent = data.ignore_file || "(none: ignore.file is none)";
    $("source").textContent = data.source;
  }

  function sortKey(g) {
    var mode = $("sort").value;
    var active = g.members.filter(function (m) { return !m.not_duplicate; });
    var view = {keep: g.keep, members: active};
    if (mode === "reclaimable") { return -Cards.reclaimable(view); }
    if (mode === "confidence") { return Cards.confidence(view); }
    return -active.length;
  }

  function refilter(keepPage) {
    var q = $("filter").value.trim().toLowerCase();
    shown = groups.filter(function (g) {
      return !q || g.members.some(function (m) { return m.path.toLowerCase().indexOf(q) !== -1; });
    });
    var keys = {};
    shown.forEach(function (g) { keys[g.id] = sortKey(g); });
    shown.sort(function (a, b) { return keys[a.id] - keys[b.id] || a.id - b.id; });
    if (!keepPage) { page = 0; }
    render();
  }

  function button(label, action, attrs) {
    var b = el("button", null, label);
    b.type = "button";
    b.setAttribute("data-action", action);
    Object.keys(attrs || {}).forEach(function (k) { b.setAttribute(k, attrs[k]); });
    return b;
  }

  function groupSection(g) {
    var sec = el("section", "group " + g.status);
    sec.setAttribute("data-group", String(g.id));
    sec.setAttribute("data-status", g.status);
    var active = g.members.filter(function (m) { return !m.not_duplicate; });
    var view = {keep: g.keep, members: active};
    var h = el("h3", null, "Group " + g.id);
    h.appendChild(el("span", "status", g.status));
    h.appendChild(el("span", "meta", active.length + " images \u00b7 " + Cards.human(Cards.reclaimable(view)) +
      " reclaimable \u00b7 confidence " + Cards.pct(Cards.confidence(view))));
    h.appendChild(button(g.status === "accepted" ? "Unaccept" : "Accept", "accept-group", {"data-group": String(g.id)}));
    h.appendChild(button(g.status === "rejected" ? "Unreject" : "Reject group (not duplicates)", "reject-group", {"data-group": String(g.id)}));
    h.appendChild(button("Reset", "reset-group", {"data-group": String(g.id)}));
    sec.appendChild(h);
    var row = el("div", "row");
    g.members.forEach(function (m) {
      var fig = Cards.card(g, m, {thumb: m.thumb, base: info.base, lazy: true, extra: function (f) {
        var actions = el("div", "card-actions");
        var kept = m.path === g.keep;
        var keep = button(kept ? "Kept" : "Keep this", "keep", {"data-group": String(g.id), "data-path": m.path});
        keep.disabled = kept || m.not_duplicate;
        actions.appendChild(keep);
        if (!kept) {
          var nd = button(m.not_duplicate ? "Not a duplicate \u2713" : "Not a duplicate", "not-duplicate",
            {"data-group": String(g.id), "data-path": m.path});
          if (m.not_duplicate) { nd.className = "on"; }
          actions.appendChild(nd);
        }
        var pick = el("input");
        pick.type = "checkbox";
        pick.setAttribute("data-action", "select-compare");
        pick.setAttribute("data-path", m.path);
        pick.setAttribute("aria-label", "select for compare");
        pick.checked = selected.some(function (s) { return s.path === m.path; });
        var lab = el("label");
        lab.appendChild(pick);
        lab.appendChild(document.createTextNode(" compare"));
        actions.appendChild(lab);
        f.appendChild(actions);
      }});
      if (m.not_duplicate) { fig.classList.add("not-duplicate"); }
      if (m.reference) { fig.classList.add("reference"); }
      row.appendChild(fig);
    });
    sec.appendChild(row);
    return sec;
  }

  function render() {
    var size = pageSize();
    var pages = Math.max(1, Math.ceil(shown.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    var frag = document.createDocumentFragment();
    shown.slice(page * size, (page + 1) * size).forEach(function (g) { frag.appendChild(groupSection(g)); });
    $("groups").replaceChildren(frag);
    var first = shown.length ? page * size + 1 : 0;
    var last = Math.min(shown.length, (page + 1) * size);
    $("page-info").textContent = "page " + (page + 1) + " of " + pages + " \u00b7 groups " + first + "\u2013" + last +
      " of " + shown.length + (shown.length !== groups.length ? " (filtered from " + groups.length + ")" : "");
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
    $("jump").max = String(pages);
    $("jump").value = String(page + 1);
    $("empty").hidden = shown.length > 0;
    $("compare").disabled = selected.length !== 2;
    document.body.setAttribute("data-page", String(page + 1));
  }

  function update(data) {
    applySummary(data);
    (data.groups || []).forEach(function (g) {
      var i = groups.indexOf(byId[g.id]);
      byId[g.id] = g;
      if (i !== -1) { groups[i] = g; }
    });
    refilter(true);
  }

  function decide(body) {
    if (busy) { return Promise.resolve(); }
    busy = true;
    document.body.setAttribute("data-busy", "1");
    return api("POST", "/api/decide", body).then(function (data) {
      update(data);
      message("Saved.");
    }).catch(function (e) { message(e.message, true); }).then(function () {
      busy = false;
      document.body.removeAttribute("data-busy");
    });
  }

  function thumbOf(path) {
    var found = null;
    groups.some(function (g) { return g.members.some(function (m) { if (m.path === path) { found = m; return true; } return false; }); });
    return found;
  }

  // ---- the quarantine dialog
  function openDialog() {
    $("dialog").hidden = false;
    $("result").hidden = true;
    $("result").replaceChildren();
    $("quarantine-to").value = $("quarantine-to").value || info.quarantine;
    preview();
  }

  function preview() {
    $("confirm-quarantine").disabled = true;
    $("preview").textContent = "Checking\u2026";
    api("POST", "/api/quarantine/preview", {to: $("quarantine-to").value}).then(function (p) {
      var text = p.files + " files of " + p.groups + " accepted groups (" + Cards.human(p.bytes) + ") would move to " + p.dest + ".";
      if (p.skipped.length) { text += " " + p.skipped.length + " files are left alone (changed, missing or kept)."; }
      if (!p.files) { text = "Nothing to move: accept groups first (only accepted groups are acted on)."; }
      $("preview").textContent = text;
      $("preview").setAttribute("data-files", String(p.files));
      $("preview").setAttribute("data-bytes", String(p.bytes));
      var confirm = $("confirm-quarantine");
      confirm.textContent = "Move " + p.files + " files (" + Cards.human(p.bytes) + ")";
      confirm.disabled = !p.files;
    }).catch(function (e) { $("preview").textContent = e.message; });
  }

  function applyQuarantine() {
    $("confirm-quarantine").disabled = true;
    api("POST", "/api/quarantine", {to: $("quarantine-to").value, confirm: true}).then(function (r) {
      var box = $("result");
      box.replaceChildren();
      if (!r.done) {
        box.appendChild(el("p", null, r.message));
      } else {
        box.appendChild(el("p", null, "Moved " + r.counts.moved + " files (" + Cards.human(r.counts.bytes_freed) + "). Manifest:"));
        var manifest = el("code", "manifest", r.manifest);
        manifest.id = "manifest";
        box.appendChild(manifest);
        box.appendChild(el("p", null, "To put everything back:"));
        var undo = el("code", "undo", r.undo);
        undo.id = "undo-command";
        box.appendChild(undo);
        if (r.skipped.length || r.failed.length) {
          box.appendChild(el("p", null, r.skipped.length + " left alone, " + r.failed.length + " failed."));
        }
      }
      box.hidden = false;
      $("preview").textContent = "";
    }).catch(function (e) { $("preview").textContent = e.message; });
  }

  // ---- events
  document.addEventListener("click", function (ev) {
    var t = ev.target.closest ? ev.target.closest("[data-action]") : null;
    if (!t || t.disabled) { return; }
    var action = t.getAttribute("data-action");
    var gid = t.getAttribute("data-group");
    var path = t.getAttribute("data-path");
    if (action === "keep" || action === "not-duplicate") {
      decide({action: action, group: parseInt(gid, 10), path: path});
    } else if (action === "reject-group" || action === "accept-group" || action === "reset-group") {
      decide({action: action, group: parseInt(gid, 10)});
    } else if (action === "accept-page") {
      var size = pageSize();
      decide({action: "accept-page", groups: shown.slice(page * size, (page + 1) * size).map(function (g) { return g.id; })});
    } else if (action === "keep-best-all") {
      decide({action: "keep-best-all"});
    } else if (action === "prev-page") {
      page -= 1; render();
    } else if (action === "next-page") {
      page += 1; render();
    } else if (action === "jump") {
      page = (parseInt($("jump").value, 10) || 1) - 1; render();
    } else if (action === "enlarge") {
      var fig = t.closest("figure");
      var m = thumbOf(fig.getAttribute("data-path"));
      if (m) { viewer.show([{src: m.file, fallback: m.thumb, label: m.path}]); }
    } else if (action === "select-compare") {
      selected = selected.filter(function (s) { return s.path !== path; });
      if (t.checked) {
        selected.push(thumbOf(path));
        while (selected.length > 2) { selected.shift(); }
      }
      render();
    } else if (action === "compare") {
      if (selected.length === 2) {
        viewer.show(selected.map(function (s) { return {src: s.file, fallback: s.thumb, label: s.path}; }));
      }
    } else if (action === "quarantine") {
      openDialog();
    } else if (action === "preview-quarantine") {
      preview();
    } else if (action === "confirm-quarantine") {
      applyQuarantine();
    } else if (action === "close-dialog") {
      $("dialog").hidden = true;
      load();
    }
  });
  $("jump").addEventListener("keydown", function (ev) { if (ev.key === "Enter") { $("jump-go").click(); } });
  $("sort").addEventListener("change", function () { refilter(false); });
  $("page-size").addEventListener("change", function () { refilter(false); });
  var timer = null;
  $("filter").addEventListener("input", function () {
    if (timer !== null) { clearTimeout(timer); }
    timer = setTimeout(function () { refilter(false); }, 150);
  });
  $("filter").addEventListener("change", function () { refilter(false); });

  function load() {
    return api("GET", "/api/state").then(function (data) {
      groups = data.groups;
      byId = {};
      groups.forEach(function (g) { byId[g.id] = g; });
      info.base = data.base;
      info.quarantine = data.quarantine;
      applySummary(data);
      $("notes").textContent = (data.notes || []).join(" ");
      refilter(true);
      document.body.setAttribute("data-ready", "1");
    }).catch(function (e) { message(e.message, true); });
  }
  load();
}());
