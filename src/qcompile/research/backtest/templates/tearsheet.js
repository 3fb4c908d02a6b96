// The tearsheet's charts: each <figure data-chart="N"> is drawn from the page's JSON (written by
// tearsheet.py) with uPlot. Problems are recorded on <html> (data-errors, data-csp) so that a
// test in a real browser can read them; the page itself never loads anything.
"use strict";
(function () {
  const root = document.documentElement;
  const record = (name, text) => {
    root.dataset[name] = (root.dataset[name] ? root.dataset[name] + " | " : "") + text;
  };
  window.addEventListener("error", (e) => record("errors", String(e.message)));
  document.addEventListener("securitypolicyviolation", (e) =>
    record("csp", e.violatedDirective + " " + (e.blockedURI || "inline"))
  );

  const percent = (v, digits) => (v == null ? "–" : (v * 100).toFixed(digits) + " %");
  const formats = {
    percent: (v) => percent(v, 1),
    money: (v) => (v == null ? "–" : Math.round(v).toLocaleString("en-US")),
    number: (v) => (v == null ? "–" : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2))),
    growth: (v) => (v == null ? "–" : v.toFixed(2) + "×"),
    count: (v) => (v == null ? "–" : v.toFixed(0)),
  };
  // Axis labels are short (1.2M, 500k); the legend shows the full value.
  const compact = (v) => {
    const size = Math.abs(v);
    if (size >= 1e6) return (v / 1e6).toFixed(size >= 1e7 ? 0 : 1) + "M";
    if (size >= 1e3) return (v / 1e3).toFixed(0) + "k";
    return formats.number(v);
  };
  const axisFormats = { ...formats, money: (v) => (v == null ? "" : compact(v)) };
  const nice = (value, up) => {
    const power = 10 ** Math.floor(Math.log10(value));
    const steps = up ? [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] : [10, 9, 8, 7, 6, 5, 4, 3, 2, 1];
    const step = steps.find((s) => (up ? s * power >= value : s * power <= value));
    return step * power;
  };
  const day = (seconds) => new Date(seconds * 1000).toISOString().slice(0, 10);

  function options(spec, width) {
    const format = formats[spec.y.format] || formats.number;
    const axisFormat = axisFormats[spec.y.format] || formats.number;
    const series = [
      spec.x === "time"
        ? { label: "date", value: (u, v) => (v == null ? "–" : day(v)) }
        : { label: spec.xLabel, value: (u, v) => (v == null ? "–" : formats.number(v)) },
    ];
    for (const s of spec.series) {
      const one = {
        label: s.label,
        stroke: s.color,
        width: s.width == null ? 1.5 : s.width,
        value: (u, v) => format(v),
        spanGaps: false,
      };
      if (s.dash) one.dash = s.dash;
      if (s.fill) one.fill = s.fill;
      if (s.kind === "markers") {
        one.paths = () => null;
        one.points = { show: true, size: 9, width: 1, stroke: s.color, fill: s.fill || s.color };
      } else if (s.kind === "bars") {
        one.paths = uPlot.paths.bars({ size: [0.9, 60] });
        one.points = { show: false };
        one.fill = s.color;
      } else {
        one.points = { show: false };
      }
      series.push(one);
    }
    return {
      width: width,
      height: spec.height || 300,
      series: series,
      bands: (spec.bands || []).map((b) => ({ series: [b[0], b[1]], fill: b[2] })),
      scales: {
        x: { time: spec.x === "time" },
        // a log axis fitted to the data (to a whole multiple of a power of ten), not whole decades
        y: spec.y.log ? { distr: 3, log: 10, range: (u, min, max) => [nice(min, false), nice(max, true)] } : {},
      },
      axes: [
        spec.x === "time" ? {} : { values: (u, ticks) => ticks.map(formats.number) },
        spec.y.format === "count"
          ? { size: 64, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }
          : { size: 64, values: (u, ticks) => ticks.map(axisFormat) },
      ],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    };
  }

  // A price chart's note under it: the trade open at the hovered bar, if any.
  function tradeNote(spec, note) {
    return (u) => {
      const i = u.cursor.idx;
      const trade = i == null ? null : spec.trades.find((t) => t.entry <= i && i <= t.exit);
      note.textContent = trade ? trade.text : spec.note;
      note.dataset.trade = trade ? String(spec.trades.indexOf(trade)) : "";
    };
  }

  function draw(figure, spec) {
    const holder = figure.querySelector(".plot");
    const width = Math.max(320, holder.clientWidth || 900);
    const opts = options(spec, width);
    if (spec.trades) {
      const note = figure.querySelector(".note");
      opts.hooks = { setCursor: [tradeNote(spec, note)] };
    }
    const plot = new uPlot(opts, spec.data, holder);
    figure.plot = plot; // for a reader's console (and the browser test): scales, data, positions
    figure.dataset.drawn = "yes";
    return plot;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = JSON.parse(document.getElementById("tearsheet-data").textContent);
    // a chart's x values may name one of the page's shared timelines instead of repeating it
    const specs = page.charts.map((spec) =>
      typeof spec.data[0] === "string"
        ? { ...spec, data: [page.timelines[spec.data[0]], ...spec.data.slice(1)] }
        : spec
    );
    const plots = [];
    for (const figure of document.querySelectorAll("figure[data-chart]")) {
      try {
        plots.push([figure, draw(figure, specs[Number(figure.dataset.chart)])]);
      } catch (error) {
        record("errors", figure.dataset.chart + ": " + error.message);
      }
    }
    window.addEventListener("resize", () => {
      for (const [figure, plot] of plots) {
        const width = Math.max(320, figure.querySelector(".plot").clientWidth);
        plot.setSize({ width: width, height: plot.height });
      }
    });
    root.dataset.charts = String(plots.length);
  });
})();
