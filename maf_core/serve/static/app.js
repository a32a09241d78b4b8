// maf serve's page: browse a run's predictions, try new tweets. Talks to this server only.
"use strict";

const PAGE_SIZE = 50;
const state = {data: null, shown: [], page: 0};
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// --- words with their entities -----------------------------------------------------------

function entitySpans(words, entities, marks, row) {
  // entities: [[type, start, end]]; marks: {start-end: mark} (predictions only)
  const line = el("div", {class: "words"});
  let at = 0;
  const sorted = [...entities].sort((a, b) => a[1] - b[1]);
  for (const [type, start, end] of sorted) {
    if (start > at) line.append(words.slice(at, start).join(" ") + " ");
    const mark = marks ? marks[`${start}-${end}`] : null;
    const span = el("span", {class: `ent ent-${type}` + (mark ? ` mark-${mark.kind}` : ""),
      "data-type": type, "data-start": String(start), "data-end": String(end), title: type},
    words.slice(start, end).join(" "), el("sub", {}, type));
    if (mark && mark.kind !== "correct") {
      span.title = describeMark(mark, words);
    }
    line.append(span, " ");
    at = end;
  }
  if (at < words.length) line.append(words.slice(at).join(" "));
  line.dataset.row = row;
  return line;
}

function describeMark(mark, words) {
  const text = words.slice(mark.start, mark.end).join(" ");
  switch (mark.kind) {
    case "wrong-type": return `wrong type: ${text} as ${mark.type}, gold ${mark.gold[0]}`;
    case "wrong-span": return `wrong span: ${text} (${mark.type}), gold ${words.slice(mark.gold[1], mark.gold[2]).join(" ")} (${mark.gold[0]})`;
    case "spurious": return `spurious: ${text} (${mark.type})`;
    case "missed": return `missed: ${text} (${mark.type})`;
    default: return `correct: ${text} (${mark.type})`;
  }
}

// --- the browse list ----------------------------------------------------------------------

function tweetCard(tweet) {
  const data = state.data;
  const picture = tweet.image_status === "ok" && data.images
    ? el("img", {src: `/api/image/${encodeURIComponent(tweet.id)}`, alt: `image ${tweet.id}`, loading: "lazy"})
    : el("div", {class: "no-image"}, `image: ${tweet.image_status}`);
  const info = el("div", {class: "info"}, el("b", {}, `#${tweet.n + 1}`), ` id ${tweet.id}`);
  if (tweet.relation) info.append(` · image ${tweet.image_class || ""} (${tweet.relation})`);
  const body = el("div", {class: "body"}, info);
  const missed = {};  // the gold entities the first run missed, outlined in the gold row
  for (const mark of tweet.runs[0].marks) if (mark.kind === "missed") missed[`${mark.start}-${mark.end}`] = mark;
  body.append(el("div", {class: "row-label"}, "gold"), entitySpans(tweet.words, tweet.gold, missed, "gold"));
  tweet.runs.forEach((run, r) => {
    const marks = {};
    for (const mark of run.marks) if (mark.kind !== "missed") marks[`${mark.start}-${mark.end}`] = mark;
    const label = el("div", {class: "row-label"}, `${data.runs[r].name}`,
      data.runs[r].has_matching ? ` · p ${run.match_prob.toFixed(2)}` : "");
    const line = entitySpans(tweet.words, run.entities, marks, `run-${r}`);
    line.classList.add("pred-row");
    line.dataset.run = String(r);
    const errors = run.marks.filter((m) => m.kind !== "correct");
    const list = el("ul", {class: "errors"});
    for (const mark of errors) list.append(el("li", {class: `err err-${mark.kind}`}, describeMark(mark, tweet.words)));
    body.append(label, line, errors.length ? list : null);
  });
  if (tweet.image_decided && tweet.image_decided.length) {
    body.append(el("div", {class: "decided"}, "image-decided: " +
      tweet.image_decided.map(([t, s, e]) => `${tweet.words.slice(s, e).join(" ")} (${t})`).join(", ")));
  }
  const visual = !data.runs[0].text_only;
  if (visual && tweet.image_status === "ok" && tweet.runs[0].entities.length) {
    body.append(el("button", {type: "button", class: "attention", onclick: () => openAttention(tweet)},
      "CI attention"));
  }
  const card = el("li", {class: "tweet" + (tweet.runs.some((r) => r.error) ? " has-error" : ""),
    "data-n": String(tweet.n), "data-id": tweet.id}, el("div", {class: "picture"}, picture), body);
  return card;
}

function matches(tweet, filters) {
  if (filters.errors && !tweet.runs[0].error) return false;
  if (filters.disagree && !tweet.disagree) return false;
  if (filters.type) {
    const all = tweet.gold.concat(...tweet.runs.map((r) => r.entities));
    if (!all.some((e) => e[0] === filters.type)) return false;
  }
  if (filters.decided && !(tweet.image_decided && tweet.image_decided.length)) return false;
  if (filters.status && tweet.image_status !== filters.status) return false;
  const p = tweet.runs[0].match_prob;
  if (p != null && (p < filters.pmin || p > filters.pmax)) return false;  // null: a run without CM
  if (filters.text) {
    const text = (tweet.id + " " + tweet.words.join(" ")).toLowerCase();
    if (!text.includes(filters.text)) return false;
  }
  return true;
}

function readFilters() {
  const number = (id, fallback) => {
    const value = parseFloat($(id).value);
    return Number.isFinite(value) ? value : fallback;
  };
  return {errors: $("f-errors").checked, disagree: $("f-disagree").checked, type: $("f-type").value,
    decided: $("f-decided").checked, status: $("f-status").value, pmin: number("f-pmin", 0),
    pmax: number("f-pmax", 1), text: $("f-text").value.trim().toLowerCase()};
}

function applyFilters() {
  const filters = readFilters();
  state.shown = state.data.tweets.filter((t) => matches(t, filters));
  state.page = 0;
  render();
}

function render() {
  const pages = Math.max(1, Math.ceil(state.shown.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const list = $("tweets");
  list.replaceChildren(...state.shown.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE).map(tweetCard));
  $("count").textContent = `${state.shown.length} of ${state.data.tweets.length} tweets`;
  $("page").textContent = `page ${state.page + 1} of ${pages}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
}

function scoresTable(runs, split) {
  const types = state.data.types;
  const table = el("table", {class: "scores"});
  const head = el("tr", {}, el("th", {}, `${split}`));
  for (const t of types.concat(["overall"])) head.append(el("th", {colSpan: 3}, t));
  const sub = el("tr", {}, el("th", {}, "run"));
  for (let i = 0; i <= types.length; i++) sub.append(el("th", {}, "P"), el("th", {}, "R"), el("th", {}, "F1"));
  table.append(head, sub);
  for (const run of runs) {
    const row = el("tr", {"data-run": run.name}, el("th", {}, run.name));
    for (const t of types.concat(["overall"])) {
      const s = t === "overall" ? run.scores.overall : run.scores.types[t];
      for (const key of ["precision", "recall", "f1"]) {
        row.append(el("td", {"data-type": t, "data-key": key}, s ? s[key].toFixed(2) : "–"));
      }
    }
    table.append(row);
  }
  return table;
}

// --- attention over the 7x7 regions, as the case study draws it ---------------------------

function jet(x) {
  const c = (v) => Math.round(255 * Math.min(1, Math.max(0, v)));
  return [c(1.5 - Math.abs(4 * x - 3)), c(1.5 - Math.abs(4 * x - 2)), c(1.5 - Math.abs(4 * x - 1))];
}

function heatmap(src, weights, grid, caption) {
  const size = 224;
  const canvas = el("canvas", {width: size, height: size, class: "heat"});
  const figure = el("figure", {class: "attention-map"}, canvas, el("figcaption", {}, caption));
  const image = new Image();
  image.onload = () => {
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0, size, size);
    const low = Math.min(...weights), high = Math.max(...weights);
    const cell = size / grid;
    ctx.globalAlpha = 0.45;
    weights.forEach((w, i) => {
      const [r, g, b] = jet(high > low ? (w - low) / (high - low) : 0.5);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect((i % grid) * cell, Math.floor(i / grid) * cell, cell, cell);
    });
    figure.dataset.drawn = "true";
  };
  image.src = src;
  return figure;
}

async function openAttention(tweet) {
  $("overlay-title").textContent = `CI attention of each predicted entity's first word: ${tweet.id}`;
  const body = $("overlay-body");
  body.replaceChildren(el("p", {}, "tagging again …"));
  $("overlay").hidden = false;
  const answer = await fetch(`/api/attention/${tweet.n}`, {method: "POST"});
  const result = await answer.json();
  if (!answer.ok) {
    body.replaceChildren(el("p", {class: "error"}, result.detail));
    return;
  }
  const src = `/api/image/${encodeURIComponent(tweet.id)}?view=model`;
  const maps = result.entities.filter((e) => e.attention).map((e) =>
    heatmap(src, e.attention, result.grid, `${e.words.join(" ")} → ${e.type}`));
  body.replaceChildren(el("p", {}, `p = ${showP(result.match_prob)} · image ${result.image_status}`),
    maps.length ? el("div", {class: "maps"}, ...maps) : el("p", {}, "no entity with an image to attend to"));
}

// p, or what stands for it where the run's model has no CM (UMT, MT)
function showP(p) {
  return p == null ? "none (no CM)" : p.toFixed(2);
}

// --- try ----------------------------------------------------------------------------------

let chosenFile = null;

function chooseFile(file) {
  chosenFile = file || null;
  $("try-file").textContent = chosenFile ? `${chosenFile.name} (${chosenFile.size.toLocaleString()} bytes)` : "";
}

async function tryTweet(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("text", $("try-text").value);
  if (chosenFile) form.append("image", chosenFile);
  $("try-error").hidden = true;
  $("try-result").replaceChildren(el("p", {}, "tagging …"));
  let answer, result;
  try {
    answer = await fetch("/api/predict?attention=true", {method: "POST", body: form});
    result = await answer.json();
  } catch (err) {
    result = {detail: String(err)};
  }
  if (!answer || !answer.ok) {
    $("try-result").replaceChildren();
    $("try-error").textContent = result.detail || `error ${answer.status}`;
    $("try-error").hidden = false;
    return;
  }
  const item = result.items[0];
  const entities = item.entities.map((e) => [e.type, e.start, e.end]);
  const line = entitySpans(item.words, entities, null, "try");
  line.classList.add("pred-row");
  const maps = item.view ? item.entities.filter((e) => e.attention).map((e) =>
    heatmap(item.view, e.attention, Math.round(Math.sqrt(e.attention.length)), `${e.text} → ${e.type}`)) : [];
  $("try-result").replaceChildren(line,
    el("p", {class: "try-info"}, `p = ${showP(item.match_prob)} · image ${item.image_status} · ` +
      `${item.entities.length} entities`),
    maps.length ? el("div", {class: "maps"}, ...maps) : null);
}

// --- start --------------------------------------------------------------------------------

function showTab(name) {
  $("browse").hidden = name !== "browse";
  $("try").hidden = name !== "try";
  $("tab-browse").classList.toggle("active", name === "browse");
  $("tab-try").classList.toggle("active", name === "try");
}

async function start() {
  $("tab-browse").onclick = () => showTab("browse");
  $("tab-try").onclick = () => showTab("try");
  $("overlay-close").onclick = () => { $("overlay").hidden = true; };
  $("overlay").onclick = (e) => { if (e.target === $("overlay")) $("overlay").hidden = true; };
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("overlay").hidden = true; });
  $("try-form").onsubmit = tryTweet;
  $("try-image").onchange = (e) => chooseFile(e.target.files[0]);
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); chooseFile(e.dataTransfer.files[0]); };
  $("prev").onclick = () => { state.page -= 1; render(); };
  $("next").onclick = () => { state.page += 1; render(); };

  // the printed address carries the token off loopback: the server set a cookie, the address forgets it
  const address = new URL(location.href);
  if (address.searchParams.has("token")) {
    address.searchParams.delete("token");
    history.replaceState(null, "", address);
  }
  const answer = await fetch("/api/browse");
  const data = await answer.json();
  if (!answer.ok) {
    $("browse").replaceChildren(el("p", {class: "error"}, data.detail || `error ${answer.status}`));
    document.body.dataset.ready = "true";
    return;
  }
  state.data = data;
  $("run-names").textContent = "· " + data.runs.map((r) => r.name).join(" vs ") + ` · ${data.split}`;
  $("scores").replaceChildren(scoresTable(data.runs, data.split));
  for (const t of data.types) $("f-type").append(el("option", {value: t}, t));
  for (const s of data.statuses) $("f-status").append(el("option", {value: s}, s));
  $("f-disagree-label").hidden = data.runs.length < 2;
  $("f-decided").disabled = !data.annotated;
  $("f-decided-label").title = data.annotated ? "" : "the corpus has no annotations.jsonl";
  $("legend").replaceChildren("types: ", ...data.types.map((t) => el("span", {class: `ent ent-${t}`}, t)),
    " · errors: ", ...["wrong-type", "wrong-span", "spurious", "missed"].map((k) =>
      el("span", {class: `err err-${k}`}, k.replace("-", " "))));
  $("filters").oninput = applyFilters;
  $("filters").onchange = applyFilters;
  $("filters").onsubmit = (e) => e.preventDefault();
  applyFilters();
  document.body.dataset.ready = "true";
}

start();
