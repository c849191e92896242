// The overview: how many jobs are queued, running and waiting now, and charts (uPlot) of the
// jobs that finished, the failures and the submit→finish latency over a window kept in the URL
// (`GET /stats`, read again every 5 s while the page is visible).

import uPlot from "./vendor/uplot.js";
import {
  ErrorNote,
  formatNumber,
  html,
  setQuery,
  useApp,
  useEffect,
  useEvery,
  useLoad,
  useLocation,
  useRef,
  useState,
} from "./lib.js";

/** The windows offered, as `GET /stats` takes them. */
const WINDOWS = [
  ["15m", "15 min"],
  ["1h", "1 hour"],
  ["6h", "6 hours"],
  ["24h", "24 hours"],
  ["7d", "7 days"],
];
const DEFAULT_WINDOW = "1h";

/** "1 min", "15 s", "2 h". @param {number} seconds */
function bucketText(seconds) {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

/** A latency, short: "850 ms", "4.2 s", "3.5 min". @param {number|null|undefined} seconds */
function latencyText(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  if (seconds === 0) return "0";
  if (seconds < 0.01) return `${(seconds * 1000).toFixed(1)} ms`;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** @param {number[]} values */
const sum = (values) => values.reduce((total, n) => total + (n ?? 0), 0);

export function OverviewPage() {
  const { client } = useApp();
  const { query } = useLocation();
  const asked = query.get("window") ?? DEFAULT_WINDOW;
  const span = WINDOWS.some(([value]) => value === asked) ? asked : DEFAULT_WINDOW;
  const { data, error, reload } = useLoad(() => client.stats(span), [client, span]);
  useEvery(reload, 5000);

  const stats = data && data.window_s ? data : null;
  const finished = stats?.finished ?? { succeeded: [], failed: [], cancelled: [] };
  const done = sum(finished.succeeded) + sum(finished.failed) + sum(finished.cancelled);
  const failed = sum(finished.failed);
  const xs = stats ? stats.buckets.map((at) => Date.parse(at) / 1000) : [];
  const per = stats ? `per ${bucketText(stats.bucket_s)}` : "";

  return html`<section class="page-overview">
    <div class="page-head">
      <h1>Overview</h1>
      <span class="grow"></span>
      <div class="segmented" role="group" aria-label="time window">
        ${WINDOWS.map(
          ([value, label]) => html`<button key=${value} type="button" aria-pressed=${value === span ? "true" : "false"}
            onClick=${() => setQuery({ window: value === DEFAULT_WINDOW ? null : value })}
            title=${`the last ${label}`}>${value}</button>`,
        )}
      </div>
    </div>
    <${ErrorNote} error=${error} />
    <div class="cards stat-cards">
      <${StatCard} name="queued" label="Queued now" value=${stats?.depth?.queued} />
      <${StatCard} name="running" label="Running now" value=${stats?.depth?.running} />
      <${StatCard} name="waiting" label="Waiting for an answer" value=${stats?.depth?.waiting} />
      <${StatCard} name="finished" label=${`Finished, last ${labelOf(span)}`} value=${stats ? done : undefined} />
      <${StatCard} name="failed" label=${`Failed, last ${labelOf(span)}`} value=${stats ? failed : undefined}
        note=${stats && done ? `${((100 * failed) / done).toFixed(1)} % of finished` : ""} />
    </div>
    ${stats === null && !error ? html`<p class="loading">Loading…</p>` : null}
    ${stats
      ? html`<div class="charts">
          <${Chart}
            name="throughput"
            title="Finished jobs"
            subtitle=${per}
            xs=${xs}
            series=${stacked([
              { label: "cancelled", color: "--cancelled", values: finished.cancelled },
              { label: "failed", color: "--failed", values: finished.failed },
              { label: "succeeded", color: "--succeeded", values: finished.succeeded },
            ])}
            bars=${true}
            counts=${true}
            empty=${done === 0 ? "No job finished in this window." : ""}
          />
          <${Chart}
            name="failures"
            title="Failures"
            subtitle=${per}
            xs=${xs}
            series=${[{ label: "failed", color: "--failed", values: finished.failed }]}
            bars=${true}
            counts=${true}
            empty=${failed === 0 ? "No failure in this window." : ""}
          />
          <${Chart}
            name="latency"
            title="Submit → finish latency"
            subtitle="percentiles of the jobs finished in each bucket"
            xs=${xs}
            series=${[
              { label: "p50", color: "--succeeded", values: stats.latency.p50 },
              { label: "p90", color: "--partial", values: stats.latency.p90 },
              { label: "p99", color: "--failed", values: stats.latency.p99 },
            ]}
            format=${latencyText}
            empty=${done === 0 ? "No latency to show: no job finished in this window." : ""}
          />
        </div>`
      : null}
  </section>`;
}

/**
 * Series stacked as bars: each drawn as the sum of itself and the ones below it, the top one
 * first so that each lower one covers its part; the legend shows each one's own values.
 * @param {{label: string, color: string, values: number[]}[]} top_first
 */
function stacked(top_first) {
  const sums = top_first.map((_, i) =>
    top_first[0].values.map((__, at) => top_first.slice(i).reduce((total, s) => total + (s.values[at] ?? 0), 0)),
  );
  return top_first.map((s, i) => ({ ...s, values: sums[i], own: s.values }));
}

/** @param {string} window */
const labelOf = (window) => WINDOWS.find(([value]) => value === window)?.[1] ?? window;

/** @param {{name: string, label: string, value: number|undefined, note?: string}} props */
function StatCard({ name, label, value, note }) {
  return html`<div class=${`card stat-card stat-${name}`} data-stat=${name}>
    <div class="stat-label">${label}</div>
    <div class="stat" data-role="value">${value === undefined ? "–" : formatNumber(value)}</div>
    ${note ? html`<div class="muted small">${note}</div>` : null}
  </div>`;
}

/** The colour of a CSS variable of the page (so that charts follow dark mode). @param {string} name */
function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** A colour made translucent: `#rrggbb` → `#rrggbbaa`. @param {string} color @param {number} alpha 0…1 */
function translucent(color, alpha) {
  if (/^#[0-9a-f]{6}$/i.test(color)) {
    return `${color}${Math.round(alpha * 255).toString(16).padStart(2, "0")}`;
  }
  return color;
}

/** Steps of a count axis: whole numbers only. */
const COUNT_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6];

/** Follows the system's colour scheme: a number that changes when it does. */
function useColorScheme() {
  const [scheme, setScheme] = useState(0);
  useEffect(() => {
    const media = matchMedia("(prefers-color-scheme: dark)");
    const changed = () => setScheme((n) => n + 1);
    media.addEventListener("change", changed);
    return () => media.removeEventListener("change", changed);
  }, []);
  return scheme;
}

/**
 * A uPlot chart of series over the buckets, as wide as its box (a ResizeObserver), in the
 * page's colours (made again when the colour scheme changes), destroyed on unmount.
 * @param {{name: string, title: string, subtitle?: string, xs: number[],
 *   series: {label: string, color: string, values: (number|null)[], own?: number[]}[], bars?: boolean,
 *   counts?: boolean,
 *   format?: (value: number) => string, empty?: string}} props
 */
function Chart({ name, title, subtitle, xs, series, bars, counts, format, empty }) {
  const box = useRef(/** @type {HTMLDivElement|null} */ (null));
  const plot = useRef(/** @type {any} */ (null));
  const latest = useRef({ xs, series });
  latest.current = { xs, series };
  const scheme = useColorScheme();
  const height = 220;
  const show = format ?? ((/** @type {number} */ v) => formatNumber(v));

  useEffect(() => {
    const element = box.current;
    if (!element) return undefined;
    const muted = cssColor("--muted");
    const line = cssColor("--line");
    const axis = {
      stroke: muted,
      grid: { stroke: line, width: 1 },
      ticks: { stroke: line, width: 1, size: 4 },
      font: "12px system-ui, sans-serif",
    };
    const options = {
      width: Math.max(200, element.clientWidth),
      height,
      padding: [12, 12, 0, 4],
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      legend: { live: true },
      scales: {
        x: { time: true },
        y: counts
          ? { range: (/** @type {any} */ u, /** @type {number} */ lo, /** @type {number} */ hi) => [0, Math.max(4, hi)] }
          : { range: (/** @type {any} */ u, /** @type {number} */ lo, /** @type {number} */ hi) => [0, Math.max(hi ?? 1, 0.001) * 1.1] },
      },
      axes: [
        { ...axis, space: 60 },
        {
          ...axis,
          size: 56,
          ...(counts ? { incrs: COUNT_STEPS } : {}),
          values: (/** @type {any} */ u, /** @type {number[]} */ splits) => splits.map((v) => show(v)),
        },
      ],
      series: [
        { value: (/** @type {any} */ u, /** @type {number} */ v) => (v == null ? "–" : new Date(v * 1000).toLocaleString()) },
        ...latest.current.series.map((s) => {
          const color = cssColor(s.color);
          return {
            label: s.label,
            stroke: color,
            width: bars ? 0 : 2,
            fill: bars ? color : translucent(color, 0.08),
            points: bars ? { show: false } : { show: true, size: 5, width: 1, fill: color },
            spanGaps: !bars,
            ...(bars ? { paths: uPlot.paths.bars?.({ size: [0.7, 24], gap: 1 }) } : {}),
            value: (/** @type {any} */ u, /** @type {number|null} */ v, /** @type {number} */ si, /** @type {number} */ at) => {
              const own = latest.current.series[si - 1]?.own;
              const value = own && at != null ? own[at] : v;
              return value == null ? "–" : show(value);
            },
          };
        }),
      ],
    };
    const { xs: x, series: s } = latest.current;
    const chart = new uPlot(options, [x, ...s.map((one) => one.values)], element);
    plot.current = chart;
    let width = element.clientWidth;
    const observer = new ResizeObserver(() => {
      const now = element.clientWidth;
      if (now > 0 && now !== width) {
        width = now;
        chart.setSize({ width: now, height });
      }
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.destroy();
      plot.current = null;
    };
  }, [scheme, bars, counts, series.map((s) => s.label).join(",")]);

  useEffect(() => {
    plot.current?.setData([xs, ...series.map((s) => s.values)]);
  }, [xs, series]);

  return html`<figure class="card chart" data-chart=${name}>
    <figcaption>
      <span class="chart-title">${title}</span>
      ${subtitle ? html` <span class="muted small">${subtitle}</span>` : null}
    </figcaption>
    <div class="chart-box" ref=${box}></div>
    ${empty ? html`<p class="chart-empty muted small">${empty}</p>` : null}
  </figure>`;
}
