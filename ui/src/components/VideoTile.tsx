/** One video tile: frames pulled from the app's `frames:` scheme and drawn on a canvas. */
import { useEffect, useRef, useState } from "react";
import { api, frameUrl } from "../api";
import { type Tile } from "../store";

/**
 * One video: pulls the newest frame from the `frames:` scheme whenever the last is drawn, while
 * the window is shown and the tile is in view.
 */
export function VideoTile({ tile, speaking, off }: { tile: Tile; speaking: boolean; off: boolean }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const figure = useRef<HTMLElement>(null);
  const [drawn, setDrawn] = useState(0);
  // The size a remote tile is drawn at, in device pixels, goes to the server (it picks the
  // simulcast layer that fills it); a tile that goes away is no longer shown.
  useEffect(() => {
    const el = figure.current;
    if (tile.local || !el) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let sent = "";
    const report = () => {
      const r = el.getBoundingClientRect();
      const w = Math.round(r.width * window.devicePixelRatio);
      const h = Math.round(r.height * window.devicePixelRatio);
      const key = `${w}x${h}`;
      if (key === sent) return;
      sent = key;
      api.setView(tile.trackId, w, h).catch(() => {});
    };
    const observer = new ResizeObserver(() => {
      clearTimeout(timer);
      timer = setTimeout(report, 250);
    });
    observer.observe(el);
    report();
    return () => {
      clearTimeout(timer);
      observer.disconnect();
      api.setView(tile.trackId, 0, 0).catch(() => {});
    };
  }, [tile.trackId, tile.local]);
  useEffect(() => {
    let stop = false;
    let seq = 0;
    let count = 0;
    // Out of view (scrolled away, behind a panel): its frames are not asked for either.
    let inView = true;
    const el = figure.current;
    const seen = el
      ? new IntersectionObserver((entries) => {
          inView = entries.some((e) => e.isIntersecting);
        })
      : null;
    if (el) seen?.observe(el);
    const pull = async () => {
      while (!stop) {
        // A hidden window draws nothing: its frames are not asked for (nor converted).
        if (document.hidden || !inView) {
          await new Promise((res) => setTimeout(res, 250));
          continue;
        }
        try {
          const r = await fetch(frameUrl(tile.trackId, seq));
          if (r.status === 200) {
            const w = Number(r.headers.get("x-width"));
            const h = Number(r.headers.get("x-height"));
            seq = Number(r.headers.get("x-seq"));
            const px = new Uint8ClampedArray(await r.arrayBuffer());
            const c = canvas.current;
            if (c && px.length === w * h * 4) {
              if (c.width !== w) c.width = w;
              if (c.height !== h) c.height = h;
              c.getContext("2d")?.putImageData(new ImageData(px, w, h), 0, 0);
              count += 1;
              c.dataset.frames = String(count);
              const win = window as unknown as { __firstRemoteFrameAt?: number };
              if (!tile.local && win.__firstRemoteFrameAt === undefined) win.__firstRemoteFrameAt = performance.now();
              if (count % 15 === 1) setDrawn(count);
            }
          }
        } catch {
          // The scheme is gone while the window closes: try again shortly.
        }
        await new Promise((res) => setTimeout(res, 30));
      }
    };
    pull();
    return () => {
      stop = true;
      seen?.disconnect();
    };
  }, [tile.trackId]);
  return (
    <figure ref={figure} className={`tile ${speaking ? "speaking" : ""} ${tile.kind}`} data-track={tile.trackId}>
      <canvas ref={canvas} data-track={tile.trackId} data-frames="0" />
      {off ? <div className="waiting">Camera off</div> : drawn === 0 && <div className="waiting">{tile.local ? (tile.kind === "screen" ? "Starting to share…" : "Starting camera…") : "Waiting for video…"}</div>}
      <figcaption>{tile.name}{tile.kind === "screen" ? " (screen)" : ""}{tile.reconnecting ? " · reconnecting…" : ""}</figcaption>
    </figure>
  );
}
