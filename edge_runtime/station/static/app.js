// The station page: uploads one file per request (results appear as they come), renders every
// value as text (never as HTML), and reads the model card and the day's log from the JSON API.
"use strict";

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const pct = (p) => (p === null || p === undefined ? "" : (100 * p).toFixed(1) + " %");

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(await oneLine(response));
  return response.json();
}

async function oneLine(response) {
  const text = await response.text();
  try { return JSON.parse(text).error || text; } catch (e) { return text.split("\n")[0] || response.statusText; }
}

function resultCard(item) {
  const card = el("article", { class: "result-card", "data-result": item.result || "" });
  card.append(el("h3", {}, item.file_name + (item.reference ? "  ·  " + item.reference : "")));
  card.append(el("p", { class: "verdict " + (item.result || "") }, item.label_text || item.result));
  if (item.probability !== null && item.probability !== undefined) {
    const bar = el("div", { class: "bar", role: "img",
      "aria-label": "P(pneumonia) " + pct(item.probability) + ", threshold " + pct(item.threshold) });
    const fill = el("div", { class: "fill" });
    fill.style.width = (100 * item.probability).toFixed(1) + "%";
    const mark = el("div", { class: "mark", title: "threshold" });
    mark.style.left = (100 * item.threshold).toFixed(1) + "%";
    bar.append(fill, mark);
    card.append(el("p", { class: "message probability" },
      "P(pneumonia) " + pct(item.probability) + " against the threshold " + pct(item.threshold)), bar);
  }
  if (item.warnings) card.append(el("p", { class: "message warning" }, "warning: " + item.warnings));
  if (item.error) card.append(el("p", { class: "message error" }, item.error));
  if (item.gate && item.result !== "unreadable") {
    const gate = item.gate === "accepted" ? "input gate: accepted as a chest X-ray" : "input gate: " + item.gate;
    card.append(el("p", { class: "message gate" }, gate));
  }
  if (item.monitor_message) card.append(el("p", { class: "message monitor" }, "site monitor: " + item.monitor_message));
  // The answer first, the pictures after: on a phone the verdict must not be below the fold.
  const images = el("div", { class: "images" });
  if (item.film) {
    images.append(el("figure", {}, el("img", { class: "film", src: item.film, alt: "film" }),
                     el("figcaption", {}, "film")));
  }
  if (item.heatmap) {
    images.append(el("figure", {}, el("img", { class: "heatmap", src: item.heatmap, alt: "heat map" }),
                     el("figcaption", {}, "heat map: where the model's evidence lies")));
  }
  card.append(images);
  return card;
}

// The CSRF token only this page can read (same-origin); every POST carries it back.
let csrfToken = null;
async function csrf() {
  if (csrfToken === null) csrfToken = (await getJSON("/api/session")).csrf;
  return csrfToken;
}

async function upload(files) {
  const reference = $("#reference").value.trim();
  const list = Array.from(files);
  for (let i = 0; i < list.length; i++) {
    $("#status").textContent = "analysing " + (i + 1) + " of " + list.length + ": " + list[i].name;
    const form = new FormData();
    form.append("reference", reference);
    form.append("file", list[i], list[i].name);
    let items;
    try {
      const response = await fetch("/api/predict", { method: "POST", body: form, credentials: "same-origin",
                                                     headers: { "X-Edgecxr-CSRF": await csrf() } });
      if (!response.ok) throw new Error(await oneLine(response));
      items = (await response.json()).results;
    } catch (error) {
      items = [{ file_name: list[i].name, result: "error", label_text: "not analysed", error: String(error.message || error) }];
    }
    for (const item of items) $("#results").prepend(resultCard(item));
  }
  $("#status").textContent = list.length ? "done: " + list.length + " file(s)" : "";
  refreshDay();
}

async function refreshDay() {
  try {
    // The newest page of the day's results (the CSV export has them all).
    const page = await getJSON("/api/results");
    const rows = page.rows;
    const body = $("#today tbody");
    body.replaceChildren(...rows.map((r) => el("tr", { "data-id": String(r.id) },
      el("td", {}, new Date(r.time).toLocaleTimeString()), el("td", {}, r.reference), el("td", {}, r.file_name),
      el("td", {}, r.result === "not_cxr" ? "not a chest X-ray" : r.result), el("td", {}, pct(r.probability)))));
    $("#day-count").textContent = "(" + (page.total > rows.length ? rows.length + " newest of " : "") + page.total + ")";
  } catch (error) {
    $("#status").textContent = "could not load today's results: " + error.message;
  }
}

function interval(figure) {
  if (!figure || figure.value === null) return "n/a";
  const [low, high] = figure.ci95;
  return figure.value.toFixed(3) + " (95% CI " + low.toFixed(3) + "-" + high.toFixed(3) + ", n=" + figure.n + ")";
}

async function showCard() {
  const body = $("#card-body");
  try {
    const c = await getJSON("/api/card");
    const list = el("dl");
    const add = (term, value) => list.append(el("dt", {}, term), el("dd", {}, value));
    add("Intended use", c.intended_use);
    add("Model", c.model_file + " (" + c.arch + ", " + c.format + " " + c.quantization + ", " + c.runtime + ")");
    add("Model sha256", c.sha256);
    add("edgecxr version", c.edgecxr_version || "unknown");
    add("Threshold", c.threshold.toFixed(4) + " — " + c.threshold_rule);
    if (c.validated) {
      add("Validated (" + c.validated.source + ", threshold " + c.validated.threshold.toFixed(4) + ")",
          "sensitivity " + interval(c.validated.sensitivity) + "; specificity " + interval(c.validated.specificity) +
          "; accuracy " + interval(c.validated.accuracy));
    } else {
      add("Validated", "not recorded in this model's metadata (exported before edgecxr sealed its card: re-export it)");
    }
    for (const site of c.other_sites || []) {
      add("At another site (" + site.data + ", " + String(site.date).slice(0, 10) + ")",
          "sensitivity " + interval(site.sensitivity) + "; specificity " + interval(site.specificity) +
          "; accuracy " + interval(site.accuracy) + " — what a new clinic should expect before commissioning");
    }
    if (c.commissioned) {
      const s = c.commissioned.at_site_threshold || {};
      add("Commissioned for site " + c.commissioned.site + " on " + String(c.commissioned.date).slice(0, 10),
          "site threshold " + Number(c.commissioned.threshold).toFixed(4) + "; sensitivity " + interval(s.sensitivity) +
          "; specificity " + interval(s.specificity));
    } else {
      add("Commissioned", "no: the validated threshold is used (edgecxr commission sets a site's)");
    }
    add("Input gate", "cheap checks on; learned check " + c.input_gate.learned_check);
    body.replaceChildren(list);
  } catch (error) {
    body.replaceChildren(el("p", { class: "message error" }, error.message));
  }
  $("#card").showModal();
}

async function init() {
  $("#files").addEventListener("change", (event) => { upload(event.target.files); event.target.value = ""; });
  const drop = $("#drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => { event.preventDefault(); upload(event.dataTransfer.files); });
  $("#card-button").addEventListener("click", showCard);
  try {
    const c = await getJSON("/api/card");
    $("#model-line").textContent = c.model_file + " · threshold " + c.threshold.toFixed(4) +
      (c.commissioned ? " (site " + c.commissioned.site + ")" : "");
  } catch (error) {
    $("#model-line").textContent = error.message;
  }
  refreshDay();
}

document.addEventListener("DOMContentLoaded", init);
