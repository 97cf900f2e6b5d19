"""Time to first render of a 10,000-task session in headless Chromium, and the DAG's pan/zoom cost.

    .venv/bin/python bench/ui_render.py [N]          (default 10000)

The session is a `for_range>` fan-out of N tasks compiled and run by the real engine
(tests/browser/fixtures.py), served by `kudig ui --fixtures` and opened in Debian's headless
Chromium (hack/chromium, Selenium). Prints, best and median of 3 fresh page loads each:

* the session page (task table) and the DAG tab: navigation start -> the app's
  `kudig:session-rendered` / `kudig:dag-rendered` performance mark (its data fetched and the first
  render committed), and -> the first frame painted after it (target: < 1.5 s);
* pan and zoom of the DAG at zoom 1 and at "fit" (the farthest zoom, 0.02, for a 10,000-task column): per step,
  the main-thread work (the event, the render, style and layout) and the interval between frames
  during a continuous pan (one step per animation frame).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tests.browser import fixtures  # noqa: E402
from tests.browser.conftest import UiServer, start_browser  # noqa: E402

LOADS = 3

FIRST_RENDER = """
const [mark, selector, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const t0 = performance.now();
(function poll() {
  const m = performance.getEntriesByName(mark)[0];
  if (m && document.querySelector(selector)) {
    requestAnimationFrame(() => setTimeout(() => done([m.startTime, performance.now()]), 0));
  } else if (performance.now() - t0 > 60000) {
    done(null);
  } else {
    setTimeout(poll, 5);
  }
})();
"""

# Per step: dispatch a real event on the DAG, let preact render, force style + layout.
STEPS = """
const [kind, n, reset, done] = [arguments[0], arguments[1], arguments[2], arguments[arguments.length - 1]];
const el = document.querySelector('[data-test=dag]');
const button = () => [...document.querySelectorAll('.dag-tools button')].find((b) => b.textContent === reset);
// moves that keep the same nodes in view: a circle of 60 px around the start
const dx = (i) => Math.round(60 * Math.sin(i / 6)), dy = (i) => Math.round(60 * Math.cos(i / 6) - 60);
const r = el.getBoundingClientRect();
const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
const work = [];
const settle = () => new Promise((res) => setTimeout(res, 0));
(async () => {
  button().click();
  await settle();
  const drawn = document.querySelector('[data-test=dag-count]').textContent;
  if (kind === 'pan') el.dispatchEvent(new PointerEvent('pointerdown', {clientX: cx, clientY: cy, button: 0, bubbles: true}));
  await settle();
  for (let i = 1; i <= n; i++) {
    const t = performance.now();
    if (kind === 'pan') {
      el.dispatchEvent(new PointerEvent('pointermove', {clientX: cx + dx(i), clientY: cy + dy(i), bubbles: true}));
    } else {
      el.dispatchEvent(new WheelEvent('wheel', {deltaY: i % 20 < 10 ? 60 : -60, clientX: cx, clientY: cy, bubbles: true, cancelable: true}));
    }
    await settle();
    el.querySelector('svg').getBoundingClientRect();
    void el.offsetHeight;
    work.push(performance.now() - t);
  }
  if (kind === 'pan') el.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));
  // continuous pan: one step per animation frame, frame-to-frame intervals
  button().click();
  await settle();
  const frames = [];
  let last = null, i = 0;
  el.dispatchEvent(new PointerEvent('pointerdown', {clientX: cx, clientY: cy, button: 0, bubbles: true}));
  await new Promise((res) => {
    const tick = (ts) => {
      if (last !== null) frames.push(ts - last);
      last = ts;
      if (++i > n) return res();
      el.dispatchEvent(new PointerEvent('pointermove', {clientX: cx + dx(i), clientY: cy + dy(i), bubbles: true}));
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  el.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));
  done({work, frames, drawn});
})();
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory(prefix="ui-render-") as tmp:
        t = time.perf_counter()
        fixtures.fanout(Path(tmp), n=n, namespace="bench", name="fanout")
        print(
            f"fixture: a for_range> fan-out of {n} tasks run by the engine in {time.perf_counter() - t:.1f} s"
        )
        server = UiServer(Path(tmp))
        browser = start_browser(1400, 900)
        browser.set_script_timeout(120)
        try:
            tasks = len(server.api("/sessions/bench/fanout")["tasks"])
            nodes = len(server.api("/sessions/bench/fanout/dag")["nodes"])
            print(
                f"session: {tasks} task rows, {nodes} DAG nodes; Chromium {browser.capabilities.get('browserVersion')}"
            )
            pages = [
                (
                    "session page",
                    "/sessions/bench/fanout",
                    "kudig:session-rendered",
                    "[data-test=tasks] .trow[data-task]",
                ),
                (
                    "DAG tab",
                    "/sessions/bench/fanout?tab=dag",
                    "kudig:dag-rendered",
                    "[data-test=dag] [data-node]",
                ),
            ]
            for label, path, mark, selector in pages:
                marks, painted = [], []
                for _ in range(LOADS):
                    browser.get("about:blank")
                    browser.get(server.url + path)
                    got = browser.execute_async_script(FIRST_RENDER, mark, selector)
                    if got is None:
                        print(f"{label}: did not render within 60 s")
                        return 1
                    marks.append(got[0] / 1000)
                    painted.append(got[1] / 1000)
                print(
                    f"{label:13s} first render {min(marks):.3f} s (median {statistics.median(marks):.3f}), "
                    f"painted {min(painted):.3f} s (median {statistics.median(painted):.3f})  "
                    f"[target < 1.5 s: {'ok' if statistics.median(painted) < 1.5 else 'MISSED'}]"
                )
            browser.get("about:blank")
            browser.get(server.url + "/sessions/bench/fanout?tab=dag")
            browser.execute_async_script(FIRST_RENDER, "kudig:dag-rendered", "[data-test=dag]")
            for view, reset in (("zoom 1", "reset"), ("fit (zoom 0.02)", "fit")):
                for kind in ("pan", "zoom"):
                    r = browser.execute_async_script(STEPS, kind, 60, reset)
                    print(
                        f"DAG {view:16s} {kind:4s}: work per step median {statistics.median(r['work']):.1f} ms, "
                        f"p95 {pct(r['work'], 95):.1f} ms; frame interval median {statistics.median(r['frames']):.1f} ms, "
                        f"p95 {pct(r['frames'], 95):.1f} ms  ({r['drawn']})"
                    )
        finally:
            browser.quit()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
