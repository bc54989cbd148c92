/** One video tile: frames pushed by the app's video channel, drawn on a canvas with WebGL. */
import { useEffect, useRef, useState } from "react";
import { api, videoChannel } from "../api";
import { openFeed, renderer } from "../video";
import { type Tile } from "../store";

/**
 * One video: the app pushes each new frame of the tile's track while the window is shown and
 * the tile is in view; drawn as it comes (I420 planes to RGB on the GPU).
 */
export function VideoTile({ tile, speaking, off, mirror }: { tile: Tile; speaking: boolean; off: boolean; mirror?: boolean }) {
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
    const c = canvas.current;
    const el = figure.current;
    if (!c || !el) return;
    const draw = renderer(c);
    if (draw) c.dataset.renderer = draw.kind;
    let count = 0;
    const feed = openFeed(videoChannel, tile.trackId, (h, planes) => {
      draw?.draw(planes, h.width, h.height);
      count += 1;
      c.dataset.frames = String(count);
      c.dataset.seq = String(h.seq);
      // When this frame was drawn (wall clock, as the synthetic camera stamps its capture), so a
      // test can tell how old each frame was when it reached the screen.
      c.dataset.drawnAt = String(Date.now() % 4294967296);
      const win = window as unknown as { __firstRemoteFrameAt?: number };
      if (!tile.local && win.__firstRemoteFrameAt === undefined) win.__firstRemoteFrameAt = performance.now();
      if (count % 15 === 1) setDrawn(count);
    });
    // A hidden window, or a tile out of view (scrolled away, behind a panel): its frames are
    // not asked for, so the app neither sends nor copies them.
    let inView = true;
    const update = () => feed.setShown(!document.hidden && inView);
    const seen = new IntersectionObserver((entries) => {
      inView = entries.some((e) => e.isIntersecting);
      update();
    });
    seen.observe(el);
    document.addEventListener("visibilitychange", update);
    return () => {
      feed.close();
      seen.disconnect();
      document.removeEventListener("visibilitychange", update);
      draw?.dispose();
    };
  }, [tile.trackId]);
  return (
    <figure ref={figure} className={`tile ${speaking ? "speaking" : ""} ${tile.kind} ${mirror && tile.local && tile.kind === "video" ? "mirrored" : ""}`} data-track={tile.trackId}>
      <canvas key={tile.trackId} ref={canvas} data-track={tile.trackId} data-frames="0" />
      {off ? <div className="waiting">Camera off</div> : drawn === 0 && <div className="waiting">{tile.local ? (tile.kind === "screen" ? "Starting to share…" : "Starting camera…") : "Waiting for video…"}</div>}
      <figcaption>{tile.name}{tile.kind === "screen" ? " (screen)" : ""}{tile.reconnecting ? " · reconnecting…" : ""}</figcaption>
    </figure>
  );
}
