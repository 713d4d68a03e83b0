/* The gallery page: filters by origin, camera and the filter's decision; pages of identities drawn from the data
   files beside this one (data/index.js, then data/chunk-NNNN.js as a page needs them). Opens from disk (file://):
   data files load as scripts, which browsers allow there, and thumbnails load lazily as they scroll into view. */
(function () {
  "use strict";
  const X = window.VM_INDEX;
  const state = { origin: "all", camera: "all", kept: "all", page: 0 };
  const chunks = {};  // chunk number -> Map(pid -> identity record)
  const waiting = {};  // chunk number -> [[resolve, reject]] while its script loads
  const main = document.getElementById("identities");
  let matched = X.ids;  // the index entries [key, chunk, real camera bits, card keys, name] that pass the filters
  let renderToken = 0;

  window.VM_CHUNK = function (n, records) {
    chunks[n] = new Map(records.map((r) => [r[0], r]));
    (waiting[n] || []).forEach((w) => w[0]());
    delete waiting[n];
  };

  function loadChunk(n) {
    return new Promise((resolve, reject) => {
      if (chunks[n]) { resolve(); return; }
      const first = !waiting[n];
      (waiting[n] = waiting[n] || []).push([resolve, reject]);
      if (!first) return;
      const s = document.createElement("script");
      s.src = "data/chunk-" + String(n).padStart(4, "0") + ".js";
      s.onerror = () => {
        (waiting[n] || []).forEach((w) => w[1](new Error(s.src + " did not load")));
        delete waiting[n];
      };
      document.head.appendChild(s);
    });
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const want = (selected, value) => selected === "all" || selected === String(value);
  // a card key packs (origin index, camera, kept) as ((origin * 64) + camera) * 2 + kept
  const cardOk = (origin, cam, kept) =>
    want(state.origin, X.origins[origin]) && want(state.camera, cam) && want(state.kept, kept ? "kept" : "rejected");
  const realOk = (cam) => want(state.origin, "real") && want(state.camera, cam);

  function identityOk(entry) {
    const realBits = entry[2];
    if (state.kept === "all" && want(state.origin, "real")
        && (state.camera === "all" ? realBits !== 0 : (realBits >> Number(state.camera)) & 1)) return true;
    return entry[3].some((k) => cardOk(k >> 7, (k >> 1) & 63, k & 1));
  }

  function picture(thumb, cam, role, title, note, cls) {
    const f = el("figure", cls);
    f.dataset.cam = cam;
    if (thumb >= 0) {
      const img = document.createElement("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.width = X.thumb[1];
      img.height = X.thumb[0];
      img.alt = (role ? role + " " : "") + title;
      img.title = title + (note ? " (" + note + ")" : "");
      img.src = "t/" + Math.floor(thumb / 1000) + "/" + thumb + ".jpg";
      f.append(img);
    } else {
      f.append(el("div", "sampled", note || "sampled"));
      note = "";
    }
    const cap = el("figcaption");
    if (role) cap.append(el("span", "role", role));
    cap.append(el("span", "cam", cam ? "c" + cam : "\u00a0"));
    f.append(cap);
    if (note) f.append(el("small", "note", note));
    return f;
  }

  function card(item) {
    const [thumb, cam, o, kept, reason, title, parts, label] = item;
    const origin = X.origins[o];
    const c = el("div", kept ? "card" : "card rejected");
    c.dataset.origin = origin;
    c.dataset.cam = cam;
    c.dataset.kept = kept ? "kept" : "rejected";
    c.style.setProperty("--o", X.colors[origin] || "#888");
    parts.forEach((p) => c.append(picture(p[1], p[2], X.roles[p[0]], p[3], X.notes[p[4]], "part")));
    if (parts.length) c.append(el("span", "arrow", "\u2192"));
    c.append(picture(thumb, cam, X.notes[label], title, "", "result"));
    if (!kept) c.append(el("p", "reason", "rejected: " + reason));
    return c;
  }

  function section(rec) {
    const [pid, label, real, items, shown] = rec;
    const sec = el("section", "identity");
    sec.dataset.pid = pid;
    const h = el("h2");
    const counts = el("span", "counts");
    if (real.length) counts.append(el("b", "n-real", String(real.length)), " real \u00b7 ");
    counts.append(el("b", "n-gen", String(items.length)), " " + X.itemWord);
    h.append(el("span", "pid", shown), " ", el("span", "kind", label), " ", counts);
    sec.append(h);
    const shownReal = real.filter((r) => realOk(r[1]));
    if (shownReal.length) {
      const row = el("div", "real");
      row.append(el("span", "rowlabel", "real"));
      shownReal.forEach((r) => row.append(picture(r[0], r[1], "", r[2], X.notes[r[3]], "realpic")));
      sec.append(row);
    }
    const cards = el("div", "cards");
    items.forEach((it) => { if (cardOk(it[2], it[1], it[3])) cards.append(card(it)); });
    if (cards.childElementCount < items.length) counts.append(" \u00b7 " + cards.childElementCount + " shown");
    sec.append(cards);
    return sec;
  }

  function pager(pages, first, last) {
    document.querySelectorAll(".where").forEach((w) => {
      w.textContent = matched.length ? "page " + (state.page + 1) + " of " + pages + " \u00b7 identities " + first
        + "\u2013" + last + " of " + matched.length : "no identity matches these filters";
    });
    document.querySelectorAll("button.prev").forEach((b) => { b.disabled = state.page === 0; });
    document.querySelectorAll("button.next").forEach((b) => { b.disabled = state.page >= pages - 1; });
  }

  async function render() {
    const token = ++renderToken;
    document.body.dataset.state = "loading";
    const per = X.perPage;
    const pages = Math.max(1, Math.ceil(matched.length / per));
    state.page = Math.min(Math.max(state.page, 0), pages - 1);
    const entries = matched.slice(state.page * per, (state.page + 1) * per);
    try {
      await Promise.all([...new Set(entries.map((e) => e[1]))].map(loadChunk));
    } catch (err) {
      main.replaceChildren(el("p", "error", String(err.message || err)));
      document.body.dataset.state = "error";
      return;
    }
    if (token !== renderToken) return;
    main.replaceChildren(...entries.map((e) => section(chunks[e[1]].get(e[0]))));
    pager(pages, state.page * per + 1, state.page * per + entries.length);
    document.body.dataset.page = String(state.page);
    document.body.dataset.state = "ready";
  }

  function go(page) {
    if (page < 0 || page * X.perPage >= Math.max(matched.length, 1)) return Promise.resolve();
    state.page = page;
    window.scrollTo(0, 0);
    return render();
  }

  document.querySelectorAll(".filters .group").forEach((g) => g.addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    state[g.dataset.filter] = b.dataset.value;
    g.querySelectorAll("button").forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
    matched = X.ids.filter(identityOk);
    go(0);
  }));
  document.querySelectorAll("button.prev").forEach((b) => b.addEventListener("click", () => go(state.page - 1)));
  document.querySelectorAll("button.next").forEach((b) => b.addEventListener("click", () => go(state.page + 1)));
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT") return;
    if (ev.key === "ArrowRight") go(state.page + 1);
    if (ev.key === "ArrowLeft") go(state.page - 1);
  });
  const find = document.getElementById("pid");
  find.addEventListener("change", async () => {
    // "7", "pid 7", or where training and test people are numbered apart "test 7" / "test pid 7" (entry[4] is how
    // the page names an identity); a bare number finds the first identity of that pid
    const m = find.value.trim().toLowerCase().match(/^(?:([a-z]+)\s+)?(?:pid\s*)?(-?\d+)$/);
    const name = m ? (m[1] ? m[1] + " " : "") + "pid " + m[2] : "";
    let i = m ? matched.findIndex((e) => e[4] === name) : -1;
    if (i < 0 && m && !m[1]) i = matched.findIndex((e) => e[4].endsWith(" " + name));
    find.setCustomValidity(i < 0 ? find.value + " is not shown with these filters" : "");
    find.reportValidity();
    if (i < 0) return;
    await go(Math.floor(i / X.perPage));
    const target = main.querySelector('section[data-pid="' + matched[i][0] + '"]');
    if (target) target.scrollIntoView();
  });
  render();
})();
