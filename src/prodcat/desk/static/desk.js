// The desk: one product at a time. Every answer is POSTed and acknowledged (committed on the
// server) before the next product is fetched.
"use strict";
(function () {
  const desk = document.getElementById("desk");
  const csrf = desk.dataset.csrf;
  const taxonomy = JSON.parse(document.getElementById("taxonomy").textContent);
  const $ = (id) => document.getElementById(id);
  const search = $("search"), results = $("results"), ack = $("ack");
  let task = null, busy = false, matches = [], sel = 0;

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    if (r.status === 401) { location.href = "/login?next=/desk"; throw new Error("logged out"); }
    const data = await r.json();
    if (!r.ok) throw new Error(data.detail || r.statusText);
    return data;
  }

  function say(text, bad) { ack.textContent = text; ack.classList.toggle("bad", !!bad); }

  function show(t, counts) {
    task = t;
    $("empty").hidden = !!t;
    desk.querySelector(".photo").hidden = !t;
    if (counts) $("counts").textContent = `${counts.left} left · ${counts.mine} by you`;
    const list = $("suggestions");
    list.replaceChildren();
    search.value = ""; renderResults(); search.blur();  // keys 1-5 / s / u work again
    if (!t) { $("title").textContent = ""; $("pid").textContent = ""; $("decision").textContent = ""; return; }
    $("photo").src = t.image_url || "";
    $("title").textContent = t.title;
    $("pid").textContent = "product " + t.product_id;
    // The decision, not the model's name (that is in the header): "unknown" = like no known class.
    // A label check (prodcat audit --to-desk) names neither option as the catalogue's label.
    $("decision").textContent = t.decision === "check"
      ? "check this label: which category is right?"
      : t.decision === "unknown"
      ? "decision: unknown (unlike every class the model knows)" : "decision: review (the model is unsure)";
    t.top.forEach((s, i) => {
      const b = document.createElement("button");
      b.type = "button"; b.dataset.category = s.category;
      const k = document.createElement("span"); k.className = "k"; k.textContent = i + 1;
      const c = document.createElement("span"); c.textContent = s.category;
      const p = document.createElement("span"); p.className = "p";
      if (s.probability !== null) {  // a label check's options carry none: nothing to nudge
        const bar = document.createElement("span"); bar.className = "bar";
        bar.style.width = Math.max(2, Math.round(s.probability * 80)) + "px";
        p.append(bar, " " + (100 * s.probability).toFixed(1) + "%");
      }
      b.append(k, c, p);
      b.addEventListener("click", () => choose(s.category, false));
      const li = document.createElement("li"); li.append(b); list.append(li);
    });
    showWhy(t.explanation);
  }

  // The model's reasons beside its suggestions: words, photo against title, similar products.
  function showWhy(e) {
    const why = $("why");
    why.hidden = !e;
    if (!e) return;
    $("why-category").textContent = e.category;
    $("why-runner").textContent = e.runner_up || "-";
    const pct = (x) => (100 * x).toFixed(0) + "%";
    $("why-shares").textContent = e.photo === null ? "" :
      `photo ${pct(e.photo)} · title ${pct(e.title)} of the decision ` +
      `(alone: photo ${pct(e.photo_alone)}, title ${pct(e.title_alone)})`;
    const words = $("why-words");
    words.replaceChildren();
    e.words.forEach((w) => {
      const s = document.createElement("span");
      s.className = w.weight >= 0 ? "word for" : "word against";
      s.textContent = `${w.word} ${w.weight >= 0 ? "+" : ""}${w.weight.toFixed(2)}`;
      words.append(s, " ");
    });
    const list = $("why-neighbours");
    list.replaceChildren();
    e.neighbours.forEach((n) => {
      const li = document.createElement("li");
      if (n.image_url) {
        const img = document.createElement("img");
        img.src = n.image_url; img.alt = ""; img.className = "thumb";
        img.addEventListener("error", () => img.remove());  // the file is gone: no photo
        li.append(img);
      }
      const text = document.createElement("span");
      text.textContent = `${n.title} — ${n.category} (${n.similarity.toFixed(2)})`;
      li.append(text);
      list.append(li);
    });
  }

  async function next() {
    const r = await fetch("/api/next", { credentials: "same-origin" });
    if (r.status === 401) { location.href = "/login?next=/desk"; return; }
    const data = await r.json();
    show(data.task, data);
  }

  async function choose(category, isNew) {
    if (!task || busy) return;
    busy = true;
    try {
      const saved = await post("/api/answer", { product_id: task.product_id, category, new_category: isNew });
      await next();  // the next product appears only after the server committed this one
      say(`Saved: ${saved.product_id} → ${saved.category}`);
    } catch (e) { say("Not saved: " + e.message, true); }
    finally { busy = false; }
  }

  async function skip() {
    if (!task || busy) return;
    busy = true;
    try { const id = task.product_id; await post("/api/skip", { product_id: id }); await next(); say(`Skipped ${id}`); }
    catch (e) { say("Not skipped: " + e.message, true); }
    finally { busy = false; }
  }

  async function undo() {
    if (busy) return;
    busy = true;
    try {
      const data = await post("/api/undo");
      if (data.task) { say(`Undone: ${data.task.product_id} is back`); show(data.task); }
      else say("Nothing to undo");
    } catch (e) { say("Not undone: " + e.message, true); }
    finally { busy = false; }
  }

  function renderResults() {
    const q = search.value.trim().toLowerCase();
    results.replaceChildren(); matches = []; sel = 0;
    if (!q) return;
    const words = q.split(/\s+/);
    matches = taxonomy.filter((p) => words.every((w) => p.toLowerCase().includes(w)))
      .slice(0, 40).map((p) => ({ path: p, isNew: false }));
    if (!taxonomy.some((p) => p.toLowerCase() === q)) {
      matches.push({ path: search.value.trim(), isNew: true });
    }
    matches.forEach((m, i) => {
      const li = document.createElement("li");
      li.textContent = m.isNew ? `Propose a new category: “${m.path}”` : m.path;
      if (m.isNew) li.className = "new";
      li.addEventListener("click", () => choose(m.path, m.isNew));
      results.append(li);
    });
    highlight();
  }

  function highlight() {
    [...results.children].forEach((li, i) => li.classList.toggle("sel", i === sel));
    const cur = results.children[sel];
    if (cur) cur.scrollIntoView({ block: "nearest" });
  }

  search.addEventListener("input", renderResults);
  search.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") { sel = Math.min(sel + 1, matches.length - 1); highlight(); e.preventDefault(); }
    else if (e.key === "ArrowUp") { sel = Math.max(sel - 1, 0); highlight(); e.preventDefault(); }
    else if (e.key === "Enter") { e.preventDefault(); const m = matches[sel]; if (m) choose(m.path, m.isNew); }
    else if (e.key === "Escape") { search.value = ""; renderResults(); search.blur(); }
  });

  document.addEventListener("keydown", (e) => {
    if (e.target === search || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key >= "1" && e.key <= "5") {
      const s = task && task.top[Number(e.key) - 1];
      if (s) { e.preventDefault(); choose(s.category, false); }
    } else if (e.key === "/" || e.key === "n") { e.preventDefault(); search.focus(); }
    else if (e.key === "s") { e.preventDefault(); skip(); }
    else if (e.key === "u") { e.preventDefault(); undo(); }
  });

  next();
})();
