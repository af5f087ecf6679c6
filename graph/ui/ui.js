// facegraph's web page: the API v1 drawn over the user's own pictures.
//
// Safe by construction: everything the API returns reaches the page through textContent,
// attribute values or SVG geometry, never parsed as markup. The API key lives
// in this script's memory only: sent as a header, never in a URL, a cookie or web storage.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const state = {
    apiKey: "",
    gallery: false,
    pictures: [], // [{file, url, answer, error, minScore}] as last analyzed
    selected: null, // {picture, face}
    subjects: [],
    urls: [], // object URLs to revoke when pictures change
    videoUrl: null, // the clip on show, as an object URL
  };

  class ApiFailure extends Error {
    constructor(status, code, message, data) {
      super(message);
      this.status = status;
      this.code = code;
      this.data = data;
    }
  }

  // ---- building DOM from data, as text only ---------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    return fill(node, attrs, children);
  }

  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    return fill(node, attrs, children);
  }

  function fill(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) throw new Error("listeners are added with addEventListener");
      node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fixed(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "-";
  }

  function showError(id, err) {
    const node = $(id);
    if (!err) {
      node.hidden = true;
      node.textContent = "";
      return;
    }
    const where = err.code ? ` (${err.code}${err.status ? `, HTTP ${err.status}` : ""})` : "";
    node.textContent = `${err.message}${where}`;
    node.hidden = false;
  }

  function say(id, text) {
    $(id).textContent = text;
  }

  // ---- the API -----------------------------------------------------------------------------

  // Paths are relative to the page, so the page works under any Serve route prefix.
  async function api(method, path, { query, body, json } = {}) {
    const headers = {};
    if (state.apiKey) headers["X-API-Key"] = state.apiKey;
    let payload = body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null) params.append(name, String(value));
    }
    const url = params.toString() ? `${path}?${params}` : path;
    let response;
    try {
      response = await fetch(url, { method, headers, body: payload, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
    } catch (err) {
      throw new ApiFailure(0, "unreachable", "the service could not be reached", null);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error;
      const message = error && typeof error.message === "string" ? error.message : `HTTP ${response.status} ${response.statusText}`;
      throw new ApiFailure(response.status, error && error.code, message, data);
    }
    return data;
  }

  function imageForm(field, file) {
    const form = new FormData();
    form.append(field, file, file.name || field);
    return form;
  }

  // ---- analyze -----------------------------------------------------------------------------

  function minScore() {
    const value = Number($("min-score").value);
    return value > 0 ? value : undefined;
  }

  async function analyze(files) {
    if (!files.length) return;
    showError("analyze-error", null);
    say("analyze-status", `Analyzing ${files.length} picture${files.length > 1 ? "s" : ""}...`);
    const min = minScore();
    const query = { min_score: min, identify: state.gallery && $("identify").checked ? "true" : undefined };
    let answers;
    try {
      if (files.length === 1) {
        answers = [await api("POST", "v1/analyze", { query, body: imageForm("image", files[0]) })];
      } else {
        const form = new FormData();
        for (const file of files) form.append("images", file, file.name || "image");
        answers = (await api("POST", "v1/analyze/batch", { query, body: form })).results;
      }
    } catch (err) {
      say("analyze-status", "");
      showError("analyze-error", err);
      return;
    }
    for (const url of state.urls) URL.revokeObjectURL(url);
    state.urls = [];
    state.pictures = files.map((file, i) => {
      const url = URL.createObjectURL(file);
      state.urls.push(url);
      const answer = answers[i];
      const error = answer && answer.error ? { code: answer.error.code, message: answer.error.message } : null;
      return { file, url, answer: error ? null : answer, error, minScore: min };
    });
    if (state.selected && !faceOf(state.selected)) state.selected = null;
    const faces = state.pictures.reduce((n, p) => n + (p.answer ? p.answer.faces.length : 0), 0);
    say("analyze-status", `${faces} face${faces === 1 ? "" : "s"} in ${files.length} picture${files.length > 1 ? "s" : ""}.`);
    renderPictures();
    renderSelection();
  }

  function faceOf(selection) {
    const picture = state.pictures[selection.picture];
    return picture && picture.answer ? picture.answer.faces[selection.face] : undefined;
  }

  function faceLabel(face, index) {
    if (face.identity) return `${face.identity.name} ${fixed(face.identity.distance, 2)}`;
    if (face.low_quality) return `#${index} too small to identify`;
    if ("identity" in face) return `#${index} unknown`;
    return `#${index}`;
  }

  function deepfakeText(face) {
    const verdict = face.deepfake;
    if (!verdict) return "not run";
    if (verdict.error) return verdict.error;
    return `${verdict.label} ${fixed(verdict.fake_probability, 3)}`;
  }

  function select(picture, face) {
    state.selected = { picture, face };
    // Classes change in place: redrawing would take the keyboard focus away from the face.
    for (const group of document.querySelectorAll("#results g.face")) {
      const on = Number(group.closest("figure").dataset.picture) === picture && Number(group.dataset.face) === face;
      group.classList.toggle("selected", on);
      group.setAttribute("aria-pressed", on ? "true" : "false");
    }
    renderSelection();
  }

  function renderSelection() {
    const sel = state.selected;
    const face = sel && faceOf(sel);
    say(
      "selected-face",
      face
        ? `Selected: face #${sel.face} of ${state.pictures[sel.picture].file.name || "the picture"} (score ${fixed(face.score, 3)}).`
        : 'No face selected: click a face in a picture, or its "Select" button.',
    );
    for (const button of document.querySelectorAll("button.enroll")) button.disabled = !face;
  }

  function overlay(answer, pictureIndex) {
    const { width, height } = answer;
    const names = (answer.models && answer.models.detector && answer.models.detector.landmarks) || [];
    const size = Math.max(12, Math.round(Math.max(width, height) / 45));
    const svg = s("svg", {
      class: "overlay",
      viewBox: `0 0 ${width} ${height}`,
      preserveAspectRatio: "none",
      role: "group",
      "aria-label": `${answer.faces.length} face${answer.faces.length === 1 ? "" : "s"} found`,
    });
    answer.faces.forEach((face, j) => {
      const [x1, y1, x2, y2] = face.bbox;
      const chosen = state.selected && state.selected.picture === pictureIndex && state.selected.face === j;
      const label = faceLabel(face, j);
      const group = s("g", {
        class: `face${chosen ? " selected" : ""}${face.identity ? " known" : ""}`,
        "data-face": j,
        tabindex: 0,
        role: "button",
        "aria-pressed": chosen ? "true" : "false",
        "aria-label": `face ${j}: ${label}, score ${fixed(face.score, 3)}`,
      });
      group.append(s("rect", { class: "face-box", x: x1, y: y1, width: Math.max(1, x2 - x1), height: Math.max(1, y2 - y1), "stroke-width": size / 6 }));
      (face.landmarks || []).forEach(([x, y], k) => {
        group.append(s("circle", { class: "landmark", cx: x, cy: y, r: size / 4 }, s("title", {}, names[k] || `point ${k}`)));
      });
      const above = y1 - size * 0.4 > size;
      // Near the right edge a label ends at the box's right side instead of starting at its left.
      const place = (text, scale) => (x1 + text.length * size * scale * 0.62 > width ? { x: x2, "text-anchor": "end" } : { x: x1 });
      group.append(s("text", { class: "face-label", ...place(label, 1), y: above ? y1 - size * 0.4 : y2 + size * 1.1, "font-size": size }, label));
      if (face.deepfake && !face.deepfake.error) {
        const text = `deepfake ${fixed(face.deepfake.fake_probability, 2)}`;
        group.append(s("text", { class: "face-deepfake", ...place(text, 0.8), y: above ? y2 + size * 1.1 : y2 + size * 2.2, "font-size": size * 0.8 }, text));
      }
      group.addEventListener("click", () => select(pictureIndex, j));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          select(pictureIndex, j);
        }
      });
      svg.append(group);
    });
    return svg;
  }

  function faceTable(answer, pictureIndex) {
    const rows = answer.faces.map((face, j) =>
      h(
        "tr",
        {},
        h("td", {}, String(j)),
        h("td", {}, fixed(face.score, 3)),
        h("td", { class: "identity" }, face.identity ? face.identity.name : face.low_quality ? "too small to identify" : "identity" in face ? "unknown" : "-"),
        h("td", {}, face.identity ? fixed(face.identity.distance, 3) : "-"),
        h("td", { class: "deepfake" }, deepfakeText(face)),
        h("td", {}, face.landmarks ? String(face.landmarks.length) : "none"),
        h("td", {}, selectButton(pictureIndex, j)),
      ),
    );
    return h(
      "table",
      { class: "faces" },
      h("caption", {}, "Faces, best scored first"),
      h("thead", {}, h("tr", {}, ["#", "Score", "Identity", "Distance", "Deepfake", "Landmarks", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    );
  }

  function selectButton(pictureIndex, j) {
    const button = h("button", { type: "button", class: "select" }, "Select");
    button.setAttribute("aria-label", `select face ${j}`);
    button.addEventListener("click", () => select(pictureIndex, j));
    return button;
  }

  function timings(answer) {
    const items = Object.entries(answer.timings_ms || {}).map(([stage, ms]) => [h("dt", {}, stage), h("dd", {}, `${fixed(ms, 1)} ms`)]);
    const decision = answer.identification;
    if (decision) items.push([h("dt", {}, "match threshold"), h("dd", { title: decision.reason }, `${fixed(decision.threshold, 3)} (${decision.rule})`)]);
    return h("dl", { class: "timings", "aria-label": "timings per stage" }, items);
  }

  function renderPictures() {
    const figures = state.pictures.map((picture, i) => {
      const name = picture.file.name || `picture ${i + 1}`;
      const frame = h("div", { class: "frame" }, h("img", { src: picture.url, alt: name }));
      const figure = h("figure", { class: "picture", "data-picture": i }, frame);
      if (picture.error) {
        figure.append(h("figcaption", {}, name), h("p", { class: "error", role: "alert" }, `${picture.error.message} (${picture.error.code})`));
        return figure;
      }
      const answer = picture.answer;
      frame.append(overlay(answer, i));
      const degraded = answer.degraded ? ` Degraded: ${answer.degraded.join(", ")}.` : "";
      figure.append(
        h("figcaption", {}, `${name}: ${answer.faces.length} face${answer.faces.length === 1 ? "" : "s"}, ${answer.width} x ${answer.height} px.${degraded}`),
        faceTable(answer, i),
        timings(answer),
      );
      return figure;
    });
    $("results").replaceChildren(...figures);
  }

  // ---- subjects, enroll, verify --------------------------------------------------------------

  async function loadGallery() {
    try {
      await api("GET", "v1/gallery");
      state.gallery = true;
      showError("subjects-error", null);
    } catch (err) {
      state.gallery = false;
      showError("subjects-error", err);
    }
    const box = $("identify");
    box.disabled = !state.gallery;
    box.checked = state.gallery;
    if (state.gallery) await loadSubjects();
    else {
      state.subjects = [];
      renderSubjects();
    }
  }

  async function loadSubjects() {
    try {
      const page = await api("GET", "v1/subjects", { query: { limit: 1000 } });
      state.subjects = page.subjects;
      say("subject-count", `Subjects (${page.total}${page.total > page.subjects.length ? `, first ${page.subjects.length} shown` : ""})`);
      showError("subjects-error", null);
    } catch (err) {
      showError("subjects-error", err);
    }
    renderSubjects();
  }

  function renderSubjects() {
    const rows = state.subjects.map((subject) => {
      const enroll = h("button", { type: "button", class: "enroll", "aria-label": `enroll the selected face into ${subject.name}` }, "Enroll selected face");
      enroll.disabled = !(state.selected && faceOf(state.selected));
      enroll.addEventListener("click", () => enrollSelected(subject));
      const remove = h("button", { type: "button", class: "delete", "aria-label": `delete ${subject.name}` }, "Delete");
      remove.addEventListener("click", () => deleteSubject(subject, remove));
      const metadata = Object.keys(subject.metadata || {}).length ? JSON.stringify(subject.metadata) : "";
      return h(
        "tr",
        { "data-subject": subject.id },
        h("td", { class: "subject-name" }, subject.name),
        h("td", { class: "subject-faces" }, String(subject.faces)),
        h("td", { class: "subject-metadata" }, metadata),
        h("td", {}, h("code", {}, subject.id)),
        h("td", { class: "actions" }, enroll, remove),
      );
    });
    $("subject-rows").replaceChildren(...rows);
    if (!state.subjects.length) say("subject-count", state.gallery ? "Subjects (none yet)" : "Subjects (no gallery)");
  }

  async function createSubject(event) {
    event.preventDefault();
    showError("subjects-error", null);
    const name = $("subject-name").value.trim();
    const raw = $("subject-metadata").value.trim();
    let metadata = {};
    if (raw) {
      try {
        metadata = JSON.parse(raw);
      } catch (err) {
        metadata = null;
      }
      if (!metadata || typeof metadata !== "object" || Array.isArray(metadata)) {
        showError("subjects-error", { message: "metadata must be a JSON object, such as {\"team\": \"blue\"}" });
        return;
      }
    }
    try {
      const subject = await api("POST", "v1/subjects", { json: { name, metadata } });
      say("subjects-status", `Created subject ${subject.name}.`);
      $("subject-name").value = "";
      $("subject-metadata").value = "";
    } catch (err) {
      showError("subjects-error", err);
    }
    await loadSubjects();
  }

  async function enrollSelected(subject) {
    const sel = state.selected;
    const picture = sel && state.pictures[sel.picture];
    if (!picture || !faceOf(sel)) return;
    showError("subjects-error", null);
    try {
      // The same min_score as the analysis that numbered the faces, so face_index names the same face.
      await api("POST", `v1/subjects/${encodeURIComponent(subject.id)}/faces`, {
        query: { face_index: sel.face, min_score: picture.minScore },
        body: imageForm("image", picture.file),
      });
      say("subjects-status", `Enrolled face #${sel.face} into ${subject.name}.`);
    } catch (err) {
      showError("subjects-error", err);
      return;
    }
    await loadSubjects();
    await reanalyze();
  }

  async function deleteSubject(subject, button) {
    if (button.dataset.armed !== "yes") {
      // A second press confirms: an erasure cannot be undone.
      button.dataset.armed = "yes";
      button.textContent = "Really delete?";
      setTimeout(() => {
        button.dataset.armed = "";
        button.textContent = "Delete";
      }, 6000);
      return;
    }
    showError("subjects-error", null);
    try {
      const answer = await api("DELETE", `v1/subjects/${encodeURIComponent(subject.id)}`);
      say("subjects-status", `Deleted ${subject.name} and ${answer.faces_erased} face${answer.faces_erased === 1 ? "" : "s"}.`);
    } catch (err) {
      showError("subjects-error", err);
    }
    await loadSubjects();
    await reanalyze();
  }

  async function reanalyze() {
    if (state.pictures.length) await analyze(state.pictures.map((p) => p.file));
  }

  async function verify(event) {
    event.preventDefault();
    showError("verify-error", null);
    say("verify-answer", "");
    const a = $("verify-a").files[0];
    const b = $("verify-b").files[0];
    if (!a || !b) return;
    const form = new FormData();
    form.append("image_a", a, a.name || "a");
    form.append("image_b", b, b.name || "b");
    let answer;
    try {
      answer = await api("POST", "v1/verify", { body: form });
    } catch (err) {
      showError("verify-error", err);
      $("verify-pictures").replaceChildren();
      return;
    }
    const rule = answer.metric === "euclidean" ? `distance below ${answer.threshold}` : `similarity at least ${answer.threshold}`;
    say(
      "verify-answer",
      `${answer.same ? "Same person" : "Different people"}: distance ${fixed(answer.distance, 3)}, similarity ${fixed(answer.similarity, 3)} (same when ${rule}).`,
    );
    $("verify-pictures").replaceChildren(verifyPicture(a, answer.a.face), verifyPicture(b, answer.b.face));
  }

  function verifyPicture(file, face) {
    const url = URL.createObjectURL(file);
    const img = h("img", { src: url, alt: file.name || "picture" });
    const frame = h("div", { class: "frame" }, img);
    img.addEventListener("load", () => {
      // verify answers carry no picture size: the decoded picture's (EXIF-turned, as the service's) is the same.
      const [x1, y1, x2, y2] = face.bbox;
      const size = Math.max(12, Math.round(Math.max(img.naturalWidth, img.naturalHeight) / 45));
      const svg = s("svg", { class: "overlay", viewBox: `0 0 ${img.naturalWidth} ${img.naturalHeight}`, preserveAspectRatio: "none", "aria-hidden": "true" });
      svg.append(s("g", { class: "face selected" }, s("rect", { class: "face-box", x: x1, y: y1, width: x2 - x1, height: y2 - y1, "stroke-width": size / 6 })));
      frame.append(svg);
      URL.revokeObjectURL(url);
    });
    return h("figure", { class: "picture" }, frame, h("figcaption", {}, `${file.name || "picture"}: score ${fixed(face.score, 3)}`));
  }

  // ---- models and readiness ------------------------------------------------------------------

  function replicaText(replicas) {
    if (!replicas) return "-";
    return Object.entries(replicas).map(([stateName, n]) => `${stateName} ${n}`).join(", ") || "-";
  }

  function batchText(batching) {
    if (!batching) return "-";
    const counts = Object.entries(batching.batch_size_counts || {}).map(([size, n]) => `${size} x ${n}`);
    const mean = batching.mean_batch_size ? `; mean ${batching.mean_batch_size}, max ${batching.max_batch_size}` : `; max ${batching.max_batch_size}`;
    return counts.length ? `${counts.join(", ")}${mean}` : `none yet${mean}`;
  }

  async function loadModels() {
    showError("models-error", null);
    let models;
    try {
      models = await api("GET", "v1/models");
    } catch (err) {
      showError("models-error", err);
      return;
    }
    const rows = ["detector", "recognizer", "deepfake"].map((stage) => {
      const m = models[stage] || {};
      if (!m.configured) return h("tr", { "data-stage": stage }, h("th", { scope: "row" }, stage), h("td", { colspan: 6 }, "not configured"));
      const fallbacks = (m.fallbacks || []).map((f) => `${f.provider} fell back: ${f.reason}`).join("; ");
      return h(
        "tr",
        { "data-stage": stage },
        h("th", { scope: "row" }, stage),
        h("td", {}, m.family || "-"),
        h("td", {}, m.variant || "-"),
        h("td", {}, m.provider || "-", fallbacks ? h("div", { class: "note" }, fallbacks) : null),
        h("td", {}, m.device || "-"),
        h("td", {}, `${replicaText(m.replicas)} (${m.answered} answered)`),
        h("td", {}, batchText(m.batching)),
      );
    });
    $("model-rows").replaceChildren(...rows);
  }

  async function loadReady() {
    let answer;
    try {
      answer = await api("GET", "ready");
    } catch (err) {
      answer = err.data && typeof err.data.ready === "boolean" ? err.data : null;
      if (!answer) {
        say("ready", `readiness unknown: ${err.message}`);
        return;
      }
    }
    const badge = $("ready");
    badge.textContent = answer.ready ? "ready" : "not ready";
    badge.classList.toggle("ok", answer.ready);
    badge.classList.toggle("bad", !answer.ready);
    const rows = Object.entries(answer.deployments || {}).map(([name, value]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, value)));
    $("ready-rows").replaceChildren(...rows);
  }

  async function refreshAll() {
    await Promise.all([loadReady(), loadGallery(), loadModels()]);
  }

  // ---- video -------------------------------------------------------------------------------

  // POST the clip with Accept: application/x-ndjson: a progress line per batch of frames, then the answer.
  async function streamVideo(file, query, onProgress) {
    const headers = { Accept: "application/x-ndjson" };
    if (state.apiKey) headers["X-API-Key"] = state.apiKey;
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) if (value !== undefined) params.append(name, String(value));
    let response;
    try {
      const url = params.toString() ? `v1/analyze/video?${params}` : "v1/analyze/video";
      response = await fetch(url, { method: "POST", headers, body: imageForm("video", file), cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
    } catch (err) {
      throw new ApiFailure(0, "unreachable", "the service could not be reached", null);
    }
    if (!response.ok) {
      let data = null;
      try {
        data = await response.json();
      } catch (err) {
        data = null;
      }
      const error = data && data.error;
      throw new ApiFailure(response.status, error && error.code, error ? error.message : `HTTP ${response.status}`, data);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffered += decoder.decode(value || new Uint8Array(), { stream: !done });
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines.filter((l) => l.trim())) {
        const event = JSON.parse(line);
        if (event.progress) onProgress(event.progress);
        if (event.error) throw new ApiFailure(200, event.error.code, event.error.message, event);
        if (event.answer) return event.answer;
      }
      if (done) throw new ApiFailure(200, "incomplete", "the answer stopped before it was complete", null);
    }
  }

  async function analyzeVideo(file) {
    if (!file) return;
    showError("video-error", null);
    const bar = $("video-progress");
    bar.value = 0;
    bar.hidden = false;
    say("video-status", "Sending the clip...");
    const query = { identify: state.gallery && $("identify").checked ? "true" : undefined };
    let answer;
    try {
      answer = await streamVideo(file, query, (p) => {
        bar.max = Math.max(p.frames_total, 1);
        bar.value = p.frames_done;
        say("video-status", `${p.frames_done} of ${p.frames_total} sampled frames...`);
      });
    } catch (err) {
      bar.hidden = true;
      say("video-status", "");
      showError("video-error", err);
      return;
    }
    bar.hidden = true;
    if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
    state.videoUrl = URL.createObjectURL(file);
    const player = $("player");
    player.src = state.videoUrl;
    player.hidden = false;
    const tracks = answer.tracks.length;
    say("video-status", `${tracks} track${tracks === 1 ? "" : "s"} in ${answer.sampling.frames} sampled frames.`);
    renderTimeline(answer);
  }

  function trackName(track) {
    if (track.identity) return track.identity.name;
    return track.low_quality ? "unknown (too small)" : "unknown";
  }

  function renderTimeline(answer) {
    const list = $("timeline");
    const duration = Math.max(answer.video.duration_s || 0, ...answer.tracks.map((t) => t.end_s), 0.001);
    list.replaceChildren(
      ...answer.tracks.map((track) => {
        const thumb = h("canvas", { width: 64, height: 64, class: "best-face", "aria-hidden": "true" });
        const x = (t) => fixed((100 * t) / duration, 2);
        const bar = s(
          "svg",
          { viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true" },
          s("rect", { class: "span", x: x(track.start_s), y: 2, width: fixed(Math.max(0.5, (100 * (track.end_s - track.start_s)) / duration), 2), height: 6 }),
          track.faces.map((f) => s("rect", { class: "seen", x: x(f.time_s), y: 2, width: 0.6, height: 6 })),
        );
        const deepfake = track.deepfake ? `${track.deepfake.label} (mean ${fixed(track.deepfake.mean, 2)})` : "not scored";
        const label = h(
          "span",
          { class: "track-label" },
          h("strong", { class: "track-name" }, `#${track.track_id} ${trackName(track)}`),
          h("br", {}),
          h("span", { class: "track-span" }, `${fixed(track.start_s, 1)}-${fixed(track.end_s, 1)} s, ${track.frames.length} frames`),
          h("br", {}),
          h("span", { class: "track-deepfake" }, `deepfake: ${deepfake}`),
        );
        const button = h("button", { type: "button", class: "track", "data-track-id": track.track_id, "data-start": track.start_s }, thumb, label, bar);
        button.addEventListener("click", () => {
          const player = $("player");
          player.currentTime = track.start_s;
          player.play().catch(() => {});
        });
        return h("li", {}, button);
      }),
    );
    drawBestFaces(answer.tracks);
  }

  // Each track's best face, cut from the clip in the browser: a second, hidden player seeks to it.
  async function drawBestFaces(tracks) {
    const url = state.videoUrl;
    const seeker = h("video", { muted: true, preload: "auto" });
    seeker.src = url;
    await new Promise((resolve) => seeker.addEventListener("loadeddata", resolve, { once: true }));
    for (const track of tracks) {
      if (state.videoUrl !== url) return; // another clip took its place
      seeker.currentTime = track.best.time_s;
      await new Promise((resolve) => seeker.addEventListener("seeked", resolve, { once: true }));
      const canvas = document.querySelector(`button.track[data-track-id="${track.track_id}"] canvas`);
      if (!canvas) continue;
      const [x1, y1, x2, y2] = track.best.bbox;
      const side = Math.max(x2 - x1, y2 - y1);
      const cx = (x1 + x2) / 2;
      const cy = (y1 + y2) / 2;
      canvas.getContext("2d").drawImage(seeker, cx - side / 2, cy - side / 2, side, side, 0, 0, 64, 64);
      canvas.setAttribute("data-drawn", "true");
    }
  }

  // ---- wiring --------------------------------------------------------------------------------

  function start() {
    const key = $("api-key");
    key.addEventListener("change", () => {
      state.apiKey = key.value.trim();
      refreshAll();
    });
    $("pictures").addEventListener("change", (event) => analyze([...event.target.files]));
    $("clip").addEventListener("change", (event) => analyzeVideo(event.target.files[0]));
    const slider = $("min-score");
    slider.addEventListener("input", () => say("min-score-value", Number(slider.value).toFixed(2)));
    slider.addEventListener("change", reanalyze);
    $("identify").addEventListener("change", reanalyze);
    const drop = $("drop");
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      analyze([...event.dataTransfer.files]);
    });
    $("create-subject").addEventListener("submit", createSubject);
    $("verify").addEventListener("submit", verify);
    $("refresh-models").addEventListener("click", () => Promise.all([loadModels(), loadReady()]));
    refreshAll();
  }

  start();
})();
