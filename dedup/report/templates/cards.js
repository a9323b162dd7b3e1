/* dedup: the cards of a duplicate group, shared by the static HTML report and the review page.
 *
 * DedupCards.card(group, member, opts) builds one <figure class="thumb" data-path="..."> with the
 * thumbnail, the file name, its folder, pixel size and file size, the similarity and the evidence badges
 * (kept, verified with N inliers, similar, mirrored, rotated, which extractors proposed it, the encoding).
 * DedupCards.Viewer shows one image enlarged, or two side by side at the same zoom (compare).
 * Text is always set with textContent: any file name is displayed as it is.
 */
(function (root) {
  "use strict";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }

  function human(n) {
    if (typeof n !== "number") { return "?"; }
    var units = ["B", "KB", "MB", "GB", "TB"];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(n) < 1000 || i === units.length - 1) { return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i]; }
      n /= 1000;
    }
    return n + " B";
  }

  function baseName(p) { return p.slice(Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\")) + 1); }

  function dirName(p) {
    var i = Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\"));
    return i <= 0 ? p.slice(0, i + 1) : p.slice(0, i);
  }

  /* The folder of ``path`` relative to ``base`` (the scanned folders' common parent): "photos/2024" or "." */
  function folderOf(path, base) {
    var dir = dirName(path);
    if (base && (dir === base || dir.indexOf(base.replace(/\/$/, "") + "/") === 0)) {
      var rel = dir.slice(base.replace(/\/$/, "").length + 1);
      return rel || ".";
    }
    return dir;
  }

  function pct(x) { return (x * 100).toFixed(1) + " %"; }

  /* The encoding of a member as shown: "JPEG q85", "PNG lossless", "WEBP" ... (empty when unknown). */
  function encoding(m) {
    if (!m.format) { return ""; }
    var text = m.format;
    if (typeof m.quality === "number") { text += " q" + m.quality + (m.recompressed ? " (re-saved)" : ""); }
    else if (m.lossless) { text += " lossless"; }
    return text;
  }

  /* The evidence badges of a member: why it is in the group (and, for the kept image, that it is kept). */
  function badges(g, m) {
    var out = el("div", "badges");
    var kept = m.path === g.keep;
    if (kept) { out.appendChild(el("span", "badge keep", "kept")); }
    if (m.reference) { out.appendChild(el("span", "badge reference", "reference")); }
    if (!kept && m.evidence === "verified") {
      var v = el("span", "badge verified", "verified" + (typeof m.inliers === "number" ? " \u00b7 " + m.inliers + " inliers" : ""));
      if (typeof m.coverage === "number") { v.title = "keypoints agreeing with one transform: " + pct(m.coverage) + " of those in the overlap"; }
      out.appendChild(v);
    } else if (!kept && m.evidence === "similar") {
      out.appendChild(el("span", "badge similar", "similar"));
    }
    if (!kept && m.mirrored) { out.appendChild(el("span", "badge mirrored", "mirrored")); }
    if (!kept && typeof m.rotation === "number" && Math.abs(m.rotation) >= 3) {
      out.appendChild(el("span", "badge rotated", "rotated " + Math.abs(m.rotation) + "\u00b0"));
    }
    if (m.derived) { out.appendChild(el("span", "badge derived", "edited/converted copy")); }
    if (m.grayscale) { out.appendChild(el("span", "badge gray", "grayscale")); }
    return out;
  }

  /* One card. opts: thumb (URL or null), base (folder the card's folder is shown relative to), lazy (load
     the thumbnail when it scrolls into view), extra (a function(fig) adding controls). */
  function card(g, m, opts) {
    opts = opts || {};
    var kept = m.path === g.keep;
    var fig = el("figure", kept ? "thumb kept" : "thumb");
    fig.title = m.path;
    fig.setAttribute("data-path", m.path);
    if (opts.thumb) {
      var img = el("img");
      img.src = opts.thumb;
      img.alt = baseName(m.path);
      if (opts.lazy) { img.loading = "lazy"; }
      img.setAttribute("data-action", "enlarge");
      fig.appendChild(img);
    } else {
      fig.appendChild(el("div", "placeholder", "image not available (moved or unreadable since the scan)"));
    }
    var cap = el("figcaption");
    cap.appendChild(el("div", "name", baseName(m.path)));
    cap.appendChild(el("div", "folder", folderOf(m.path, opts.base || "")));
    var facts = (m.w && m.h ? m.w + "\u00d7" + m.h : "?") + " \u00b7 " + human(m.bytes);
    var enc = encoding(m);
    if (enc) { facts += " \u00b7 " + enc; }
    cap.appendChild(el("div", "meta", facts));
    if (!kept && m.evidence === "keep") {
      cap.appendChild(el("div", "sim", "the scan's kept image (the others' evidence is against it)"));
    } else if (!kept) {
      var sim = el("div", "sim", pct(m.sim) + " similar");
      if (m.proposed_by && m.proposed_by.length) {
        sim.appendChild(el("span", "proposed", " \u00b7 proposed by " + m.proposed_by.join(", ")));
      }
      cap.appendChild(sim);
    }
    cap.appendChild(badges(g, m));
    fig.appendChild(cap);
    if (opts.extra) { opts.extra(fig); }
    return fig;
  }

  /* Reclaimable bytes of a group: every member but the kept one. */
  function reclaimable(g) {
    var n = 0;
    g.members.forEach(function (m) { if (m.path !== g.keep) { n += m.bytes || 0; } });
    return n;
  }

  /* How sure the group is: its weakest member's evidence (keypoint coverage when verified, else the
     similarity to the kept image), 1 for a group of identical files. */
  function confidence(g) {
    var c = 1;
    g.members.forEach(function (m) {
      if (m.path === g.keep) { return; }
      var v = m.evidence === "verified" && typeof m.coverage === "number" ? m.coverage : m.sim;
      if (typeof v === "number" && v < c) { c = v; }
    });
    return c;
  }

  /* A full-screen viewer: one image (fit, click for 100 %) or two side by side at the same zoom. Each
     item: {src, fallback, label}. */
  function Viewer() {
    var self = this;
    this.overlay = el("div", "viewer");
    this.overlay.hidden = true;
    this.overlay.setAttribute("role", "dialog");
    var bar = el("div", "viewer-bar");
    this.title = el("span", "viewer-title");
    this.zoomOut = el("button", null, "\u2212");
    this.zoomOut.type = "button";
    this.zoomOut.setAttribute("data-action", "zoom-out");
    this.zoomLabel = el("span", "viewer-zoom");
    this.zoomIn = el("button", null, "+");
    this.zoomIn.type = "button";
    this.zoomIn.setAttribute("data-action", "zoom-in");
    this.fit = el("button", null, "Fit");
    this.fit.type = "button";
    this.fit.setAttribute("data-action", "zoom-fit");
    this.close = el("button", null, "Close \u00d7");
    this.close.type = "button";
    this.close.setAttribute("data-action", "close-viewer");
    [this.title, this.zoomOut, this.zoomLabel, this.zoomIn, this.fit, this.close].forEach(function (e) { bar.appendChild(e); });
    this.panes = el("div", "viewer-panes");
    this.overlay.appendChild(bar);
    this.overlay.appendChild(this.panes);
    document.body.appendChild(this.overlay);
    this.zoom = null;
    this.items = [];
    this.close.addEventListener("click", function () { self.hide(); });
    this.zoomIn.addEventListener("click", function () { self.setZoom(self.current() * 1.25); });
    this.zoomOut.addEventListener("click", function () { self.setZoom(self.current() / 1.25); });
    this.fit.addEventListener("click", function () { self.setZoom(null); });
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape" && !self.overlay.hidden) { self.hide(); } });
    this.syncing = false;
  }
  Viewer.prototype.show = function (items) {
    var self = this;
    this.items = items;
    this.zoom = null;
    this.panes.replaceChildren();
    this.panes.className = "viewer-panes n" + items.length;
    this.title.textContent = items.map(function (it) { return it.label; }).join("  \u2194  ");
    this.imgs = items.map(function (it) {
      var pane = el("div", "viewer-pane");
      var img = el("img");
      img.alt = it.label;
      img.addEventListener("error", function () {
        if (it.fallback && img.src !== it.fallback) { img.src = it.fallback; }
      });
      img.addEventListener("load", function () { self.apply(); });
      img.addEventListener("click", function () { self.setZoom(self.zoom === null ? 1 : null); });
      img.src = it.src || it.fallback || "";
      pane.appendChild(img);
      pane.appendChild(el("div", "viewer-label", it.label));
      pane.addEventListener("scroll", function () { self.sync(pane); });
      pane.addEventListener("wheel", function (ev) {
        if (!ev.ctrlKey) { return; }
        ev.preventDefault();
        self.setZoom(self.current() * (ev.deltaY < 0 ? 1.1 : 1 / 1.1));
      }, {passive: false});
      self.panes.appendChild(pane);
      return img;
    });
    this.overlay.hidden = false;
    this.apply();
  };
  Viewer.prototype.hide = function () { this.overlay.hidden = true; this.panes.replaceChildren(); this.imgs = []; };
  /* The zoom that fits every image into its pane (the same factor for all: pixels compare 1:1). */
  Viewer.prototype.fitZoom = function () {
    var z = Infinity;
    var panes = this.panes.children;
    (this.imgs || []).forEach(function (img, i) {
      var w = img.naturalWidth, h = img.naturalHeight;
      if (!w || !h) { return; }
      var pane = panes[i];
      z = Math.min(z, (pane.clientWidth - 8) / w, (pane.clientHeight - 28) / h);
    });
    return isFinite(z) && z > 0 ? z : 1;
  };
  Viewer.prototype.current = function () { return this.zoom === null ? this.fitZoom() : this.zoom; };
  Viewer.prototype.setZoom = function (z) {
    this.zoom = z === null ? null : Math.min(16, Math.max(0.05, z));
    this.apply();
  };
  Viewer.prototype.apply = function () {
    var z = this.current();
    (this.imgs || []).forEach(function (img) {
      if (img.naturalWidth) {
        img.style.width = Math.round(img.naturalWidth * z) + "px";
        img.style.height = Math.round(img.naturalHeight * z) + "px";
      }
    });
    this.zoomLabel.textContent = Math.round(z * 100) + " %";
    this.overlay.setAttribute("data-zoom", String(z));
  };
  Viewer.prototype.sync = function (source) {
    if (this.syncing) { return; }
    this.syncing = true;
    Array.prototype.forEach.call(this.panes.children, function (pane) {
      if (pane !== source) { pane.scrollLeft = source.scrollLeft; pane.scrollTop = source.scrollTop; }
    });
    this.syncing = false;
  };

  root.DedupCards = {
    el: el,
    human: human,
    baseName: baseName,
    folderOf: folderOf,
    pct: pct,
    encoding: encoding,
    badges: badges,
    card: card,
    reclaimable: reclaimable,
    confidence: confidence,
    Viewer: Viewer
  };
}(window));
