// maf serve's page: browse a run's predictions, try new tweets. Talks to this server only.
"use strict";

const PAGE_SIZE = 50;
const state = {data: null, shown: [], page: 0, key: null, opener: null};
const $ = (id) => document.getElementById(id);

// an element; children that are null, undefined or false are left out (append() would write "null")
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

// replace a node's children; nulls left out, arrays flattened (replaceChildren would write them as text)
function put(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// p, or what stands for it where the run's model has no CM (UMT, MT, text-only)
function showP(p) {
  return p == null ? "none (no CM)" : p.toFixed(2);
}

// --- words with their entities -----------------------------------------------------------

function entitySpans(words, entities, marks, row, untagged = 0) {
  // entities: [[type, start, end]]; marks: {start-end: mark} (predictions only);
  // untagged: the last words, past the run's length, that the model never saw
  const line = el("div", {class: "words"});
  const seen = words.length - untagged;
  let at = 0;
  const sorted = [...entities].sort((a, b) => a[1] - b[1]);
  for (const [type, start, end] of sorted) {
    if (start > at) line.append(words.slice(at, start).join(" ") + " ");
    const mark = marks ? marks[`${start}-${end}`] : null;
    const span = el("span", {class: `ent ent-${type}` + (mark ? ` mark-${mark.kind}` : ""),
      "data-type": type, "data-start": String(start), "data-end": String(end), title: type},
    words.slice(start, end).join(" "), el("sub", {}, type));
    if (mark && mark.kind !== "correct") span.title = describeMark(mark, words);
    line.append(span, " ");
    at = end;
  }
  if (at < seen) line.append(words.slice(at, seen).join(" ") + " ");
  if (untagged > 0) {
    line.append(el("span", {class: "untagged", title: "past the run's length: not tagged"},
      words.slice(Math.max(at, seen)).join(" ")));
  }
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
    ? el("img", {src: `/api/image/${encodeURIComponent(tweet.id)}`, alt: `photo of tweet #${tweet.n + 1}`,
      loading: "lazy", width: 160})
    : el("div", {class: "no-image"}, `image: ${tweet.image_status}`);
  const info = el("div", {class: "info"}, el("b", {}, `#${tweet.n + 1}`), ` id ${tweet.id}`,
    tweet.relation ? ` · image ${tweet.image_class || "of no class"} (${tweet.relation})` : null);
  const body = el("div", {class: "body"}, info);
  const missed = {};  // the gold entities the first run missed, outlined in the gold row
  for (const mark of tweet.runs[0].marks) if (mark.kind === "missed") missed[`${mark.start}-${mark.end}`] = mark;
  body.append(el("div", {class: "row-label"}, "gold"), entitySpans(tweet.words, tweet.gold, missed, "gold"));
  tweet.runs.forEach((run, r) => {
    const marks = {};
    for (const mark of run.marks) if (mark.kind !== "missed") marks[`${mark.start}-${mark.end}`] = mark;
    const label = el("div", {class: "row-label"}, data.runs[r].name,
      data.runs[r].has_matching && run.match_prob != null ? ` · p ${run.match_prob.toFixed(2)}` : null);
    const line = entitySpans(tweet.words, run.entities, marks, `run-${r}`, tweet.untagged);
    line.classList.add("pred-row");
    line.dataset.run = String(r);
    const errors = run.marks.filter((m) => m.kind !== "correct");
    const list = errors.length
      ? el("ul", {class: "errors"}, errors.map((m) => el("li", {class: `err err-${m.kind}`}, describeMark(m, tweet.words))))
      : null;
    body.append(label, line);
    if (list) body.append(list);
  });
  if (tweet.untagged) {
    body.append(el("div", {class: "decided untagged-note"}, `${tweet.untagged} words past the run's length ` +
      "were not tagged (greyed)"));
  }
  if (tweet.image_decided && tweet.image_decided.length) {
    body.append(el("div", {class: "decided"}, "image-decided: " +
      tweet.image_decided.map(([t, s, e]) => `${tweet.words.slice(s, e).join(" ")} (${t})`).join(", ")));
  }
  if (!data.runs[0].text_only && tweet.image_status === "ok" && tweet.runs[0].entities.length) {
    body.append(el("button", {type: "button", class: "attention", "aria-label": `attention of tweet #${tweet.n + 1}`,
      onclick: (e) => openAttention(tweet, e.currentTarget)}, "CI attention"));
  }
  // the red border follows the rule of "errors only": the first run's errors
  return el("li", {class: "tweet" + (tweet.runs[0].error ? " has-error" : ""), "data-n": String(tweet.n),
    "data-id": tweet.id}, el("div", {class: "picture"}, picture), body);
}

function matches(tweet, filters) {
  if (filters.errors && !tweet.runs[0].error) return false;
  if (filters.helped && tweet.versus !== "helped") return false;
  if (filters.hurt && tweet.versus !== "hurt") return false;
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

const CHECKS = ["errors", "helped", "hurt", "decided"];

function readFilters() {
  const number = (id, fallback) => {
    const value = parseFloat($(id).value);
    return Number.isFinite(value) ? value : fallback;
  };
  const filters = {type: $("f-type").value, status: $("f-status").value, pmin: number("f-pmin", 0),
    pmax: number("f-pmax", 1), text: $("f-text").value.trim().toLowerCase()};
  for (const name of CHECKS) filters[name] = $(`f-${name}`).checked;
  return filters;
}

// --- the address: the filters, the page and the open tweet live in its #fragment ----------

function writeAddress() {
  const params = new URLSearchParams();
  for (const name of CHECKS) if ($(`f-${name}`).checked) params.set(name, "1");
  for (const [name, id] of [["type", "f-type"], ["status", "f-status"], ["text", "f-text"]]) {
    if ($(id).value) params.set(name, $(id).value);
  }
  if ($("f-pmin").value !== "0") params.set("pmin", $("f-pmin").value);
  if ($("f-pmax").value !== "1") params.set("pmax", $("f-pmax").value);
  if (state.page) params.set("page", String(state.page + 1));
  if (!$("try").hidden) params.set("view", "try");
  if ($("overlay").open && $("overlay").dataset.n) params.set("tweet", String(+$("overlay").dataset.n + 1));
  const fragment = params.toString();
  history.replaceState(null, "", fragment ? `#${fragment}` : location.pathname);
}

function readAddress() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const name of CHECKS) $(`f-${name}`).checked = params.get(name) === "1" && !$(`f-${name}`).disabled;
  for (const [name, id] of [["type", "f-type"], ["status", "f-status"], ["text", "f-text"]]) {
    if (params.has(name)) $(id).value = params.get(name);
  }
  if (params.has("pmin")) $("f-pmin").value = params.get("pmin");
  if (params.has("pmax")) $("f-pmax").value = params.get("pmax");
  return {page: Math.max(0, (parseInt(params.get("page"), 10) || 1) - 1), tweet: parseInt(params.get("tweet"), 10),
    view: params.get("view")};
}

function applyFilters() {
  const filters = readFilters();
  const key = JSON.stringify(filters);
  if (key === state.key) return;  // nothing changed (a blur, a click): the list under the pointer stays
  state.key = key;
  state.shown = state.data.tweets.filter((t) => matches(t, filters));
  state.page = 0;
  render();
  writeAddress();
}

function render() {
  const pages = Math.max(1, Math.ceil(state.shown.length / PAGE_SIZE));
  state.page = Math.min(Math.max(0, state.page), pages - 1);
  const list = $("tweets");
  list.replaceChildren(...state.shown.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE).map(tweetCard));
  $("count").textContent = `${state.shown.length} of ${state.data.tweets.length} tweets`;
  $("page").textContent = `page ${state.page + 1} of ${pages}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
}

function turnPage(step) {
  state.page += step;
  render();
  writeAddress();
}

function scoresTable(runs, split) {
  const types = state.data.types;
  const table = el("table", {class: "scores"});
  const head = el("tr", {}, el("th", {scope: "col"}, split));
  for (const t of types.concat(["overall"])) head.append(el("th", {colSpan: 3, scope: "colgroup"}, t));
  const sub = el("tr", {}, el("th", {scope: "col"}, "run"));
  for (let i = 0; i <= types.length; i++) {
    sub.append(el("th", {scope: "col"}, "P"), el("th", {scope: "col"}, "R"), el("th", {scope: "col"}, "F1"));
  }
  table.append(el("caption", {class: "visually-hidden"}, "precision, recall and F1 per entity type"), head, sub);
  for (const run of runs) {
    const row = el("tr", {"data-run": run.name}, el("th", {scope: "row"}, run.name));
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

// --- attention over the regions, on one shared scale ---------------------------------------

function jet(x) {
  const c = (v) => Math.round(255 * Math.min(1, Math.max(0, v)));
  return [c(1.5 - Math.abs(4 * x - 3)), c(1.5 - Math.abs(4 * x - 2)), c(1.5 - Math.abs(4 * x - 1))];
}

// the top of the shared scale: the largest weight shown, and at least twice the uniform level
function scaleTop(maps, regions) {
  let top = 2 / regions;
  for (const weights of maps) for (const w of weights) top = Math.max(top, w);
  return top;
}

function heatmap(src, weights, top, caption) {
  const size = 224;
  const grid = Math.round(Math.sqrt(weights.length));
  const canvas = el("canvas", {width: size, height: size, class: "heat", role: "img",
    "aria-label": `attention of ${caption} over ${grid} by ${grid} regions`});
  const figure = el("figure", {class: "attention-map"}, canvas, el("figcaption", {}, caption));
  const image = new Image();
  image.onload = () => {
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0, size, size);
    const cell = size / grid;
    ctx.globalAlpha = 0.5;
    weights.forEach((w, i) => {
      const [r, g, b] = jet(w / top);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect((i % grid) * cell, Math.floor(i / grid) * cell, cell, cell);
    });
    figure.dataset.drawn = "true";
  };
  image.src = src;
  return figure;
}

function colourBar(top, regions) {
  const width = 280;
  const canvas = el("canvas", {width, height: 14, role: "img",
    "aria-label": `colour scale from 0 to ${top.toFixed(3)}; uniform attention is 1/${regions}`});
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < width; x++) {
    const [r, g, b] = jet(x / (width - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, 14);
  }
  const uniform = 1 / regions;
  const at = (v) => `${(100 * v / top).toFixed(1)}%`;
  ctx.fillStyle = "#000";
  ctx.fillRect(Math.round((width - 1) * uniform / top), 0, 2, 14);
  const scale = el("div", {class: "scale"},
    el("span", {style: "left: 0%"}, "0"),
    el("span", {class: "uniform", style: `left: ${at(uniform)}`}, `▲ uniform 1/${regions} = ${uniform.toFixed(3)}`),
    el("span", {style: "left: 100%"}, top.toFixed(3)));
  scale.firstChild.style.transform = "none";
  scale.lastChild.style.transform = "translateX(-100%)";
  return el("div", {class: "colour-bar", "data-top": String(top)},
    el("div", {}, "attention, one scale for every picture here (the overlay is this colour at half strength):"),
    canvas, scale);
}

// an entity's maps, one per word: /api/predict's word_attention, or /api/attention's list of maps
function wordMaps(e) {
  if (e.word_attention) return e.word_attention;
  return Array.isArray(e.attention[0]) ? e.attention : [e.attention];
}

// one box per entity: a picture per word, all on the scale `top`
function entityMaps(src, entities, top, words) {
  return entities.filter((e) => e.attention).map((e) => {
    const perWord = wordMaps(e);
    const names = e.words || e.text.split(" ");
    return el("div", {class: "entity-maps", "data-type": e.type},
      el("h3", {}, `${names.join(" ")} → ${e.type}`),
      el("div", {class: "maps"}, perWord.map((weights, w) => heatmap(src, weights, top,
        `${names[w] !== undefined ? names[w] : words[e.start + w]} → ${e.type}`))));
  });
}

function allMaps(entities) {
  return entities.filter((e) => e.attention).flatMap(wordMaps);
}

async function openAttention(tweet, opener) {
  const dialog = $("overlay");
  state.opener = opener || null;
  $("overlay-title").textContent = `CI attention, tweet #${tweet.n + 1} (id ${tweet.id})`;
  const body = $("overlay-body");
  const run = tweet.runs[0];
  const marks = {};
  for (const mark of run.marks) if (mark.kind !== "missed") marks[`${mark.start}-${mark.end}`] = mark;
  const text = entitySpans(tweet.words, run.entities, marks, "dialog");
  text.classList.add("tweet-text");
  put(body, text, el("p", {}, "tagging again …"));
  dialog.dataset.n = String(tweet.n);
  if (!dialog.open) dialog.showModal();
  $("overlay-close").focus();
  writeAddress();
  let answer, result;
  try {
    answer = await fetch(`/api/attention/${tweet.n}`, {method: "POST"});
    result = await answer.json();
  } catch (err) {
    result = {detail: String(err)};
  }
  if (!answer || !answer.ok) {
    put(body, text, el("p", {class: "error"}, result.detail || "the server did not answer"));
    return;
  }
  const regions = result.grid * result.grid;
  const maps = allMaps(result.entities);
  const top = scaleTop(maps, regions);
  const view = `/api/image/${encodeURIComponent(tweet.id)}?view=model`;
  const photo = el("figure", {class: "photo"},
    el("img", {src: `/api/image/${encodeURIComponent(tweet.id)}`, alt: `photo of tweet #${tweet.n + 1}`}),
    el("figcaption", {}, "the photo"));
  put(body, text,
    el("p", {}, `p = ${showP(result.match_prob)} · image ${result.image_status} · each picture: the image as the ` +
      `model saw it (${result.grid}×${result.grid} regions), under one word's attention, averaged over heads`),
    el("div", {class: "maps"}, photo, entityMaps(view, result.entities, top, tweet.words)),
    maps.length ? colourBar(top, regions) : el("p", {}, "no entity with an image to attend to"));
}

function closeAttention() {
  const dialog = $("overlay");
  if (dialog.open) dialog.close();
}

// --- try ----------------------------------------------------------------------------------

let chosenFile = null;
let previewUrl = null;

function chooseFile(file) {
  chosenFile = file || null;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = chosenFile ? URL.createObjectURL(chosenFile) : null;
  $("preview").hidden = !chosenFile;
  if (chosenFile) {
    $("preview-img").src = previewUrl;
    $("try-file").textContent = `${chosenFile.name} (${chosenFile.size.toLocaleString()} bytes)`;
  } else {
    $("preview-img").removeAttribute("src");
    $("try-file").textContent = "";
    $("try-image").value = "";
  }
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function ask(items, run) {
  const answer = await fetch(`/api/predict?attention=true&run=${run}`, {method: "POST",
    headers: {"content-type": "application/json"}, body: JSON.stringify({items})});
  const result = await answer.json();
  if (!answer.ok) throw new Error(result.detail || `error ${answer.status}`);
  return result.items;
}

function tryColumn(title, item, kind) {
  const entities = item.entities.map((e) => [e.type, e.start, e.end]);
  const line = entitySpans(item.words, entities, null, "try", item.untagged);
  line.classList.add("pred-row");
  return el("div", {class: "try-col", "data-case": kind}, el("h3", {}, title), line,
    el("p", {class: "try-info"}, `p = ${showP(item.match_prob)} · image ${item.image_status} · ` +
      `${item.entities.length} ${item.entities.length === 1 ? "entity" : "entities"}`),
    item.untagged ? el("p", {class: "try-info untagged-note"}, `${item.untagged} words past the run's length ` +
      "were not tagged (greyed)") : null);
}

async function tryTweet(event) {
  event.preventDefault();
  const runs = state.data.runs;
  const text = $("try-text").value;
  $("try-error").hidden = true;
  put($("try-result"), el("p", {}, "tagging …"));
  let columns = [], withImage = null;
  try {
    const image = chosenFile ? await readBase64(chosenFile) : null;
    const items = image ? [{text, image}, {text}] : [{text}];
    const asked = [ask(items, 0)];
    if (runs.length > 1) asked.push(ask([image ? {text, image} : {text}], 1));
    const [mine, theirs] = await Promise.all(asked);
    withImage = image ? mine[0] : null;
    columns.push(tryColumn(`${runs[0].name}${image ? ", with the image" : ""}`, mine[0], image ? "image" : "text"));
    if (image) columns.push(tryColumn(`${runs[0].name}, without the image`, mine[1], "text"));
    if (theirs) {
      columns.push(tryColumn(`${runs[1].name} (--compare)${image && !runs[1].text_only ? ", with the image" : ""}`,
        theirs[0], "compare"));
    }
  } catch (err) {
    $("try-result").replaceChildren();
    $("try-error").textContent = err.message;
    $("try-error").hidden = false;
    return;
  }
  columns = el("div", {class: "try-cols"}, columns);
  let maps = null;
  if (withImage && withImage.view && allMaps(withImage.entities).length) {
    const regions = allMaps(withImage.entities)[0].length;
    const top = scaleTop(allMaps(withImage.entities), regions);
    maps = el("div", {class: "try-maps"},
      el("h3", {}, `CI attention of each word of each entity (${runs[0].name}, with the image)`),
      el("div", {class: "maps"}, el("figure", {class: "photo"}, el("img", {src: previewUrl, alt: "the chosen image"}),
        el("figcaption", {}, "the photo")), entityMaps(withImage.view, withImage.entities, top, withImage.words)),
      colourBar(top, regions));
  }
  put($("try-result"), columns, maps);
}

// --- start --------------------------------------------------------------------------------

function showTab(name) {
  $("browse").hidden = name !== "browse";
  $("try").hidden = name !== "try";
  for (const tab of ["browse", "try"]) {
    $(`tab-${tab}`).classList.toggle("active", name === tab);
    $(`tab-${tab}`).setAttribute("aria-pressed", String(name === tab));
  }
  if (state.data) writeAddress();
}

function showNotes(runs) {
  const notes = runs.flatMap((run) => run.random.map((note) => el("p", {}, el("b", {}, run.name), `: ${note}.`)));
  put($("notes"), notes.length ? el("p", {}, el("b", {}, "Random weights. ")) : null, notes,
    notes.length ? el("p", {}, "Entities and attention then show what training on this corpus alone learnt, " +
      "not what a pretrained model would see.") : null);
  $("notes").hidden = !notes.length;
}

async function start() {
  $("tab-browse").onclick = () => showTab("browse");
  $("tab-try").onclick = () => showTab("try");
  $("overlay-close").onclick = closeAttention;
  $("overlay").addEventListener("click", (e) => { if (e.target === $("overlay")) closeAttention(); });
  $("overlay").addEventListener("close", () => {
    delete $("overlay").dataset.n;
    writeAddress();
    if (state.opener && state.opener.isConnected) state.opener.focus();
  });
  $("try-form").onsubmit = tryTweet;
  $("try-image").onchange = (e) => chooseFile(e.target.files[0]);
  $("try-remove").onclick = () => { chooseFile(null); $("try-image").focus(); };
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); chooseFile(e.dataTransfer.files[0]); };
  $("prev").onclick = () => turnPage(-1);
  $("next").onclick = () => turnPage(1);

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
  showNotes(data.runs);
  for (const t of data.types) $("f-type").append(el("option", {value: t}, t));
  for (const s of data.statuses) $("f-status").append(el("option", {value: s}, s));
  const compared = data.runs.length > 1;
  $("f-helped-label").hidden = $("f-hurt-label").hidden = !compared;
  $("f-helped").disabled = $("f-hurt").disabled = !compared;
  if (compared) {
    // "image helped" where the second run is the text-only baseline of a run with images
    const imageVsText = data.runs[1].text_only && !data.runs[0].text_only;
    $("f-helped-text").textContent = imageVsText ? "image helped" : `better than ${data.runs[1].name}`;
    $("f-hurt-text").textContent = imageVsText ? "image hurt" : `worse than ${data.runs[1].name}`;
    $("f-helped-label").title = `${data.runs[0].name} makes fewer errors on the tweet than ${data.runs[1].name}`;
    $("f-hurt-label").title = `${data.runs[0].name} makes more errors on the tweet than ${data.runs[1].name}`;
  }
  $("f-decided").disabled = !data.annotated;
  $("f-decided-label").title = data.annotated ? "" : "the corpus has no annotations.jsonl";
  put($("legend"), "types: ", data.types.map((t) => el("span", {class: `ent ent-${t}`}, t)),
    " · errors: ", ["wrong-type", "wrong-span", "spurious", "missed"].map((k) =>
      el("span", {class: `err err-${k}`}, k.replace("-", " "))),
    " · red border: ", data.runs[0].name, " has an error");
  const wanted = readAddress();
  // a text box's "change" comes on blur, with the click that blurs it: applyFilters rebuilds nothing then,
  // since the filters are those of the last "input"
  $("filters").addEventListener("input", applyFilters);
  $("filters").addEventListener("change", applyFilters);
  $("filters").onsubmit = (e) => e.preventDefault();
  applyFilters();
  state.page = wanted.page;
  render();
  if (wanted.view === "try") showTab("try");
  if (Number.isInteger(wanted.tweet)) {
    const tweet = data.tweets[wanted.tweet - 1];
    if (tweet) openAttention(tweet, null);
  }
  writeAddress();
  document.body.dataset.ready = "true";
}

start();
