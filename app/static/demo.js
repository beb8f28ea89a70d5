// The demo page: choose, drop or paste an image; POST it to the model; draw the top classes as bars.
// A multi-label model's answer lists every label: its labels over the threshold are shown as chips, and the
// threshold slider re-reads the same answer (strictly over, as learn.predict decodes) without asking again.
// A regression's values are listed by name; key points are drawn on the image (they come in its own pixels); a
// segmentation's mask (a PNG of code indexes, the image's size) is coloured over the image with the answer's
// legend colours, and each code is listed with its colour and share of the pixels.
// With several models, a picker chooses which (GET /models; POST /models/{name}/predict).
// The "why?" toggle asks POST /explain for the same image and shows its Grad-CAM overlay beside the answer.
// When the server captures (GET /capture), "wrong? tell us" sends a classifier's answer's right label to
// POST /feedback, by the answer's X-Request-ID.
// Every string from the server or the user goes into the page as text (textContent), never as markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let apiKey = ""; // typed by the user when the server asks; kept in this variable only
  let topK = 5;
  let multiLabel = null; // { threshold } for a multi-label model, else null
  let lastAnswer = null;
  let waitingFile = null; // an image chosen before the key was given
  let model = null; // the chosen model's name; null: the server's default model
  let lastFile = null; // the image the answer is for, explained when "why?" is on
  let capturing = false; // the server records feedback (GET /capture)
  let answerId = null; // the X-Request-ID of the answer feedback is about

  // One decimal, or two where one would round to 100% or 0% (99.98%, not "100%" beside "0%").
  const percent = (p) => {
    for (const digits of [1, 2]) {
      const text = (p * 100).toFixed(digits);
      const rounded = Number(text);
      if ((rounded < 100 || p >= 1) && (rounded > 0 || p <= 0)) return `${text}%`;
    }
    return p < 0.5 ? "<0.01%" : ">99.99%";
  };
  const modelPath = (suffix) => (model ? `/models/${encodeURIComponent(model)}${suffix}` : suffix === "" ? "/metadata" : suffix);

  function setStatus(text, isError = false) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  async function call(path, options = {}) {
    const headers = { ...(options.headers || {}), ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}) };
    const response = await fetch(path, { ...options, headers });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return { response, body };
  }

  function describeError(response, body) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    return `${response.status}: ${detail || "the request failed"}`;
  }

  function askForKey(response, body) {
    $("key-panel").hidden = false;
    setStatus(apiKey ? "That API key was not accepted." : describeError(response, body), true);
    $("api-key").focus();
  }

  async function loadModels() {
    const status = await call("/capture");
    capturing = Boolean(status.response.ok && status.body && status.body.enabled === true);
    const { response, body } = await call("/models");
    if (response.status === 401) {
      $("model-name").textContent = "API key needed";
      askForKey(response, body);
      return false;
    }
    const ready = response.ok && body && Array.isArray(body.models) ? body.models.filter((m) => m.ready) : [];
    const picker = $("model-picker");
    if (ready.length > 1) {
      picker.replaceChildren(
        ...ready.map((m) => {
          const option = document.createElement("option");
          option.value = m.name;
          option.textContent = m.name;
          return option;
        }),
      );
      model = body.default && ready.some((m) => m.name === body.default) ? body.default : ready[0].name;
      picker.value = model;
      picker.hidden = false;
    } else {
      model = null;
      picker.hidden = true;
    }
    return loadModel();
  }

  async function loadModel() {
    const { response, body } = await call(modelPath(""));
    if (response.status === 401) {
      $("model-name").textContent = "API key needed";
      askForKey(response, body);
      return false;
    }
    if (!response.ok || !body) {
      setStatus(`Could not read the model's metadata (${describeError(response, body)}).`, true);
      return false;
    }
    const model = body.model || {};
    const classes = Array.isArray(model.classes) ? model.classes : [];
    const accuracy = model.metrics && model.metrics.accuracy;
    $("model-name").textContent = model.name || "unnamed model";
    // An imported model without --data has no validation figure: say so rather than a dash.
    $("model-accuracy").textContent =
      typeof accuracy === "number" ? `${(accuracy * 100).toFixed(1)}%` : model.metrics === null ? "not validated" : "–";
    $("model-classes").textContent = classes.length ? String(classes.length) : "–";
    $("model-arch").textContent = model.arch || "–";
    $("model-device").textContent = (body.runtime && body.runtime.device) || "–";
    document.title = `${model.name || "model"} · learnserve`;
    multiLabel = model.kind === "multi-label classifier" ? { threshold: Number(model.threshold ?? 0.5) } : null;
    $("threshold-row").hidden = !multiLabel;
    // Only classifiers are explained (a regression's or key points' answer has no class to look for).
    const classifier = !model.kind || model.kind.endsWith("classifier");
    // top_k cuts a classifier's classes; the server refuses it for other kinds (top_k_not_applicable).
    topK = !classifier ? null : multiLabel ? Math.max(1, classes.length) : Math.max(1, Math.min(5, classes.length || 5));
    $("why").parentElement.hidden = !classifier;
    if (!classifier) $("why").checked = false;
    if (multiLabel) setThreshold(multiLabel.threshold);
    const choose = document.createElement("option");
    choose.value = "";
    choose.textContent = "the right label…";
    $("feedback-label").replaceChildren(
      choose,
      ...(classifier ? classes : []).map((c) => {
        const option = document.createElement("option");
        option.value = String(c);
        option.textContent = String(c);
        return option;
      }),
    );
    $("key-panel").hidden = true;
    return true;
  }

  function showPreview(file) {
    const preview = $("preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    $("points-layer").replaceChildren();
    clearMask();
    preview.onload = () => {
      const { naturalWidth: w, naturalHeight: h } = preview;
      $("points-layer").setAttribute("viewBox", `0 0 ${w} ${h}`);
      $("points-layer").setAttribute("preserveAspectRatio", "none");
      const small = Math.max(w, h) < 160; // upscale tiny images with crisp pixels
      preview.classList.toggle("pixelated", small);
      preview.style.width = small ? `${Math.round((w * 240) / Math.max(w, h))}px` : "";
    };
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    $("drop").classList.add("has-image");
    $("file-name").textContent =
      `${file.name || "pasted image"} · ${(file.size / 1024).toFixed(1)} KB · click, drop or paste to try another`;
  }

  function bar(row, best) {
    const item = document.createElement("li");
    item.className = best ? "bar best" : "bar";
    const name = document.createElement("span");
    name.className = "bar-name";
    name.textContent = row.label;
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(row.probability);
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    track.append(fill);
    item.append(name, value, track);
    requestAnimationFrame(() => {
      fill.style.width = `${Math.max(0.5, row.probability * 100).toFixed(1)}%`;
    });
    return item;
  }

  function clearResult(message) {
    const preview = $("preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.removeAttribute("src");
    preview.hidden = true;
    $("drop").classList.remove("has-image");
    $("file-name").textContent = "";
    $("label").textContent = "–";
    $("confidence").textContent = message;
    $("bars").replaceChildren();
    $("chips").replaceChildren();
    $("chips").hidden = true;
    $("points-layer").replaceChildren();
    clearMask();
    clearWhy();
    hideFeedback();
    lastAnswer = null;
    lastFile = null;
  }

  function hideFeedback() {
    $("feedback").hidden = true;
    answerId = null;
  }

  // Offered for a classifier's answer, only when the server records feedback.
  function offerFeedback(result, id) {
    hideFeedback();
    if (!capturing || !id || !Array.isArray(result.top)) return;
    answerId = id;
    $("feedback-label").value = "";
    $("feedback").hidden = false;
  }

  async function sendFeedback(label) {
    if (!answerId || !label) return;
    const id = answerId;
    let response, body;
    try {
      ({ response, body } = await call("/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ request_id: id, label }),
      }));
    } catch (error) {
      setStatus(`Could not reach the server: ${error.message}`, true);
      return;
    }
    if (!response.ok || !body) {
      setStatus(`The feedback was not recorded (${describeError(response, body)}).`, true);
      return;
    }
    hideFeedback();
    setStatus(body.agrees ? `Thanks: recorded that “${body.label}” is right.` : `Thanks: recorded “${body.label}” as the right label.`);
  }

  function output(name, text) {
    const item = document.createElement("li");
    item.className = "bar";
    const label = document.createElement("span");
    label.className = "bar-name";
    label.textContent = name;
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = text;
    item.append(label, value);
    return item;
  }

  function drawPoints(points) {
    const preview = $("preview");
    const radius = Math.max(1.5, Math.max(preview.naturalWidth, preview.naturalHeight) / 60);
    const dots = points.map((p) => {
      const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      dot.setAttribute("cx", String(p.x));
      dot.setAttribute("cy", String(p.y));
      dot.setAttribute("r", String(radius));
      return dot;
    });
    $("points-layer").replaceChildren(...dots);
  }

  function clearMask() {
    const layer = $("mask-layer");
    layer.hidden = true;
    layer.width = 0;
    layer.height = 0;
  }

  // The mask PNG's grey value of each pixel is its code: painted in that code's legend colour, half transparent.
  function drawMask(result) {
    const picture = new Image();
    picture.onload = () => {
      const layer = $("mask-layer");
      layer.width = result.width;
      layer.height = result.height;
      const context = layer.getContext("2d", { willReadFrequently: true });
      context.drawImage(picture, 0, 0);
      const pixels = context.getImageData(0, 0, result.width, result.height);
      const colours = result.codes.map((code) => rgb(result.legend[code]));
      const data = pixels.data;
      for (let i = 0; i < data.length; i += 4) {
        const [r, g, b] = colours[data[i]] || [255, 255, 255];
        data[i] = r;
        data[i + 1] = g;
        data[i + 2] = b;
        data[i + 3] = 128;
      }
      context.putImageData(pixels, 0, 0);
      layer.hidden = false;
    };
    picture.src = `data:image/png;base64,${result.mask}`;
  }

  function rgb(hex) {
    const value = parseInt(String(hex || "#ffffff").slice(1), 16);
    return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
  }

  function legendRow(code, colour, share) {
    const item = output(code, percent(share));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = colour;
    item.firstChild.prepend(swatch);
    return item;
  }

  function number(x) {
    return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
  }

  function setThreshold(value) {
    $("threshold").value = String(value);
    $("threshold-value").textContent = `${Math.round(value * 100)}%`;
  }

  function chip(row) {
    const item = document.createElement("li");
    item.className = "chip";
    item.textContent = `${row.label} · ${percent(row.probability)}`;
    return item;
  }

  function showResult(result) {
    lastAnswer = result;
    $("chips").hidden = true;
    if (Array.isArray(result.values)) {
      $("label").textContent = result.values.map((v) => number(v.value)).join(" · ");
      $("confidence").textContent = result.values.length === 1 ? "predicted value" : "predicted values";
      $("bars").replaceChildren(...result.values.map((v) => output(v.name, number(v.value))));
      return;
    }
    if (typeof result.mask === "string" && Array.isArray(result.codes)) {
      const ranked = [...result.codes].sort((a, b) => result.shares[b] - result.shares[a]);
      $("label").textContent = ranked[0] || "–";
      $("confidence").textContent = `mask of ${result.codes.length} codes over the image; share of its pixels`;
      $("bars").replaceChildren(...result.codes.map((c) => legendRow(c, result.legend[c], result.shares[c])));
      drawMask(result);
      return;
    }
    if (Array.isArray(result.points)) {
      $("label").textContent = `${result.points.length} point${result.points.length === 1 ? "" : "s"}`;
      $("confidence").textContent = "drawn on the image; x, y in its own pixels";
      $("bars").replaceChildren(...result.points.map((p) => output(p.name, `${number(p.x)}, ${number(p.y)}`)));
      drawPoints(result.points);
      return;
    }
    if (multiLabel && Array.isArray(result.top)) {
      const threshold = Number($("threshold").value);
      const over = result.top.filter((row) => row.probability > threshold);
      $("label").textContent = over.length ? over.map((row) => row.label).join(" · ") : "no label";
      $("confidence").textContent = `${over.length} of ${result.top.length} labels over ${Math.round(threshold * 100)}%`;
      $("chips").replaceChildren(...over.map(chip));
      $("chips").hidden = over.length === 0;
      $("bars").replaceChildren(...result.top.map((row) => bar(row, row.probability > threshold)));
      return;
    }
    $("label").textContent = result.label;
    $("confidence").textContent = `${percent(result.probability)} probability`;
    $("bars").replaceChildren(...result.top.map((row, i) => bar(row, i === 0)));
  }

  function clearWhy() {
    $("why-figure").hidden = true;
    $("overlay").removeAttribute("src");
    $("why-caption").textContent = "";
  }

  async function explain(file) {
    clearWhy();
    if (!file || !$("why").checked) return;
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    let response, body;
    try {
      ({ response, body } = await call(modelPath("/explain"), { method: "POST", body: form }));
    } catch (error) {
      setStatus(`Could not reach the server: ${error.message}`, true);
      return;
    }
    if (file !== lastFile) return; // another image was chosen meanwhile
    if (!response.ok || !body || typeof body.overlay !== "string" || !body.overlay.startsWith("data:image/png;base64,")) {
      setStatus(`No explanation: ${describeError(response, body)}`, true);
      return;
    }
    $("overlay").src = body.overlay;
    $("why-caption").textContent = `Where the evidence for “${body.target}” is (red: most)`;
    $("why-figure").hidden = false;
  }

  async function classify(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      clearResult("Nothing was classified."); // the previous answer must not look like this file's
      setStatus(`${file.name || "That file"} is not an image.`, true);
      return;
    }
    showPreview(file);
    setStatus("Classifying…");
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    const started = performance.now();
    let response, body;
    try {
      ({ response, body } = await call(modelPath("/predict") + (topK ? `?top_k=${topK}` : ""), { method: "POST", body: form }));
    } catch (error) {
      setStatus(`Could not reach the server: ${error.message}`, true);
      return;
    }
    if (response.status === 401) {
      waitingFile = file;
      askForKey(response, body);
      return;
    }
    if (!response.ok || !body) {
      $("label").textContent = "–";
      $("confidence").textContent = "The server could not classify this file.";
      $("bars").replaceChildren();
      clearWhy();
      hideFeedback();
      lastFile = null;
      setStatus(describeError(response, body), true);
      return;
    }
    showResult(body);
    lastFile = file;
    const id = response.headers.get("X-Request-ID");
    offerFeedback(body, id);
    setStatus(`Answered in ${Math.round(performance.now() - started)} ms${id ? ` · request ${id}` : ""}`);
    await explain(file);
  }

  function imageFrom(items) {
    for (const item of items || []) {
      const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
      if (file && (!file.type || file.type.startsWith("image/"))) return file;
    }
    return null;
  }

  function wire() {
    const drop = $("drop");
    const input = $("file");
    drop.addEventListener("click", () => input.click());
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      classify(input.files[0]);
      input.value = ""; // choosing the same file again still classifies it
    });
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (event) => {
        event.preventDefault();
        drop.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, () => drop.classList.remove("dragging"));
    }
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      const file = imageFrom(event.dataTransfer && event.dataTransfer.files);
      if (file) {
        classify(file);
      } else {
        clearResult("Nothing was classified.");
        setStatus("Drop an image file.", true);
      }
    });
    document.addEventListener("paste", (event) => {
      const file = imageFrom(event.clipboardData && event.clipboardData.items);
      if (file) {
        event.preventDefault();
        classify(file);
      }
    });
    $("key-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      apiKey = $("api-key").value.trim();
      $("api-key").value = "";
      setStatus("");
      if ((await loadModels()) && waitingFile) {
        const file = waitingFile;
        waitingFile = null;
        classify(file);
      }
    });
  }

  $("threshold").addEventListener("input", (event) => {
    setThreshold(Number(event.target.value));
    if (lastAnswer) showResult(lastAnswer);
  });

  $("why").addEventListener("change", () => explain(lastFile));

  $("feedback").addEventListener("submit", (event) => {
    event.preventDefault();
    sendFeedback($("feedback-label").value);
  });
  $("feedback-right").addEventListener("click", () => sendFeedback("correct"));

  $("model-picker").addEventListener("change", (event) => {
    model = event.target.value;
    clearResult("Choose an image to see what this model thinks.");
    loadModel().catch((error) => setStatus(`Could not reach the server: ${error.message}`, true));
  });

  wire();
  loadModels().catch((error) => setStatus(`Could not reach the server: ${error.message}`, true));
})();
