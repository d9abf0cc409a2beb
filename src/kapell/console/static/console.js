// The console's plots: uPlot charts built from each <figure class="chart"> and refreshed from
// the series endpoint. Tables are refreshed by htmx; nothing here draws by hand.
"use strict";

const REFRESH_MS = 2000;

// Which columns of /series/... each kind of chart shows, with their labels and colours.
const KINDS = {
  tokens: [["tokens_per_s", "tokens/s", "#2563eb"]],
  latency: [["latency_p50_ms", "p50 ms", "#059669"], ["latency_p95_ms", "p95 ms", "#d97706"]],
  replicas: [
    ["queue_depth", "queued", "#dc2626"], ["in_flight", "in flight", "#7c3aed"],
    ["ready", "ready", "#059669"], ["desired", "desired", "#6b7280"],
  ],
  carbon: [["g_per_kwh", "gCO2/kWh", "#15803d"]],
};

function options(figure, kind) {
  const width = Math.max(figure.clientWidth - 8, 240);
  return {
    width: width,
    height: 180,
    series: [{}].concat(KINDS[kind].map(([, label, stroke]) => ({
      label: label, stroke: stroke, width: 2, spanGaps: false,
    }))),
    axes: [{}, {size: 56}],
    scales: {x: {time: true}},
  };
}

function columns(data, kind) {
  return [data.t].concat(KINDS[kind].map(([name]) => data[name]));
}

function build(figure) {
  const kind = figure.dataset.kind;
  const inline = figure.querySelector("script[type='application/json']");
  if (inline) {
    const data = JSON.parse(inline.textContent);
    new uPlot(options(figure, kind), columns(data, kind), figure);
    figure.dataset.drawn = "true";
    return;
  }
  let chart = null;
  const refresh = () => fetch(figure.dataset.src)
    .then((answer) => answer.ok ? answer.json() : Promise.reject(answer.status))
    .then((data) => {
      if (chart === null) {
        chart = new uPlot(options(figure, kind), columns(data, kind), figure);
        figure.dataset.drawn = "true";
      } else {
        chart.setData(columns(data, kind));
      }
      figure.dataset.points = String(data.t.length);
    })
    .catch(() => { figure.dataset.error = "true"; });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.querySelectorAll("figure.chart").forEach(build);
