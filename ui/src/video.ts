// Video from the app: each tile opens the app's video channel (a loopback WebSocket, see
// client-tauri/app/src/frame_ws.rs) for its track and is pushed I420 frames, which it draws with
// WebGL (the YUV → RGB conversion runs on the GPU), or, where WebGL is missing, converted here
// and drawn with a 2D canvas. A tile asks for a frame ("next") only while it is shown, so hidden
// tiles are sent nothing.

/** Bytes before the planes: "CVF1", width, height (u32 LE), seq (u64 LE), 4 reserved. */
export const HEADER = 24;
/** Frames asked for and not yet received (the app caps it at the same). */
export const CREDIT = 2;

export interface FrameHeader {
  width: number;
  height: number;
  seq: number;
}

/** The header of a frame message, or null when it is not one (or its planes are short). */
export function parseFrame(buf: ArrayBuffer): FrameHeader | null {
  if (buf.byteLength < HEADER) return null;
  const v = new DataView(buf);
  if (v.getUint32(0, false) !== 0x43564631) return null; // "CVF1"
  const width = v.getUint32(4, true);
  const height = v.getUint32(8, true);
  const seq = Number(v.getBigUint64(12, true));
  const cw = Math.ceil(width / 2);
  const ch = Math.ceil(height / 2);
  if (width === 0 || height === 0 || buf.byteLength < HEADER + width * height + 2 * cw * ch) return null;
  return { width, height, seq };
}

/** BT.601 limited range to RGBA, the same conversion the WebGL shader does. */
export function i420ToRgba(planes: Uint8Array, width: number, height: number, out: Uint8ClampedArray): void {
  const cw = Math.ceil(width / 2);
  const ch = Math.ceil(height / 2);
  const uo = width * height;
  const vo = uo + cw * ch;
  let o = 0;
  for (let row = 0; row < height; row++) {
    const yr = row * width;
    const cr = (row >> 1) * cw;
    for (let col = 0; col < width; col++) {
      const c = 298 * (planes[yr + col] - 16);
      const u = planes[uo + cr + (col >> 1)] - 128;
      const v = planes[vo + cr + (col >> 1)] - 128;
      out[o] = (c + 409 * v + 128) >> 8;
      out[o + 1] = (c - 100 * u - 208 * v + 128) >> 8;
      out[o + 2] = (c + 516 * u + 128) >> 8;
      out[o + 3] = 255;
      o += 4;
    }
  }
}

export interface Renderer {
  readonly kind: "webgl" | "2d";
  draw(planes: Uint8Array, width: number, height: number): void;
  dispose(): void;
}

const VERTEX = `
attribute vec2 pos;
varying vec2 uv;
void main() {
  uv = vec2((pos.x + 1.0) * 0.5, (1.0 - pos.y) * 0.5);
  gl_Position = vec4(pos, 0.0, 1.0);
}`;

const FRAGMENT = `
precision mediump float;
varying vec2 uv;
uniform sampler2D ty;
uniform sampler2D tu;
uniform sampler2D tv;
void main() {
  float y = 1.1643836 * (texture2D(ty, uv).r - 0.0627451);
  float u = texture2D(tu, uv).r - 0.5019608;
  float v = texture2D(tv, uv).r - 0.5019608;
  gl_FragColor = vec4(y + 1.5960268 * v, y - 0.3917623 * u - 0.8129676 * v, y + 2.0172321 * u, 1.0);
}`;

class GlRenderer implements Renderer {
  readonly kind = "webgl" as const;
  private textures: WebGLTexture[] = [];

  constructor(private canvas: HTMLCanvasElement, private gl: WebGLRenderingContext) {
    const compile = (type: number, src: string) => {
      const s = gl.createShader(type);
      if (!s) throw new Error("no shader");
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s) ?? "shader");
      return s;
    };
    const prog = gl.createProgram();
    if (!prog) throw new Error("no program");
    gl.attachShader(prog, compile(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(prog, compile(gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog) ?? "link");
    gl.useProgram(prog);
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const pos = gl.getAttribLocation(prog, "pos");
    gl.enableVertexAttribArray(pos);
    gl.vertexAttribPointer(pos, 2, gl.FLOAT, false, 0, 0);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    ["ty", "tu", "tv"].forEach((name, i) => {
      const t = gl.createTexture();
      if (!t) throw new Error("no texture");
      gl.activeTexture(gl.TEXTURE0 + i);
      gl.bindTexture(gl.TEXTURE_2D, t);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.uniform1i(gl.getUniformLocation(prog, name), i);
      this.textures.push(t);
    });
  }

  draw(planes: Uint8Array, width: number, height: number): void {
    const { gl, canvas } = this;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    gl.viewport(0, 0, width, height);
    const cw = Math.ceil(width / 2);
    const ch = Math.ceil(height / 2);
    const parts: [number, number, number, number][] = [
      [0, width, height, 0],
      [1, cw, ch, width * height],
      [2, cw, ch, width * height + cw * ch],
    ];
    for (const [i, w, h, offset] of parts) {
      gl.activeTexture(gl.TEXTURE0 + i);
      gl.bindTexture(gl.TEXTURE_2D, this.textures[i]);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.LUMINANCE, w, h, 0, gl.LUMINANCE, gl.UNSIGNED_BYTE, planes.subarray(offset, offset + w * h));
    }
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }

  dispose(): void {
    this.gl.getExtension("WEBGL_lose_context")?.loseContext();
  }
}

class CanvasRenderer implements Renderer {
  readonly kind = "2d" as const;
  private image: ImageData | null = null;

  constructor(private canvas: HTMLCanvasElement, private ctx: CanvasRenderingContext2D) {}

  draw(planes: Uint8Array, width: number, height: number): void {
    const { canvas, ctx } = this;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    if (!this.image || this.image.width !== width || this.image.height !== height) {
      this.image = ctx.createImageData(width, height);
    }
    i420ToRgba(planes, width, height, this.image.data);
    ctx.putImageData(this.image, 0, 0);
  }

  dispose(): void {}
}

/** WebGL contexts a page may hold at once are few (WebKit drops the oldest past 16). */
export const MAX_GL_TILES = 12;
let glTiles = 0;
let glWorks: boolean | null = null;

/** Whether WebGL and the shader work here (tried once, on a scratch canvas). */
function webglWorks(): boolean {
  if (glWorks === null) {
    try {
      const c = document.createElement("canvas");
      const gl = c.getContext("webgl");
      glWorks = !!gl;
      if (gl) new GlRenderer(c, gl).dispose();
    } catch {
      glWorks = false;
    }
  }
  return glWorks;
}

/** WebGL where the webview has it (for the first `MAX_GL_TILES` tiles), else a 2D canvas. */
export function renderer(canvas: HTMLCanvasElement): Renderer | null {
  if (glTiles < MAX_GL_TILES && webglWorks()) {
    const gl = canvas.getContext("webgl", { alpha: false, antialias: false, depth: false, preserveDrawingBuffer: true });
    if (gl) {
      const r = new GlRenderer(canvas, gl);
      glTiles += 1;
      const dispose = r.dispose.bind(r);
      r.dispose = () => {
        glTiles -= 1;
        dispose();
      };
      return r;
    }
  }
  const ctx = canvas.getContext("2d");
  return ctx ? new CanvasRenderer(canvas, ctx) : null;
}

export interface ChannelInfo {
  port: number;
  secret: string;
}

export interface Feed {
  /** Shown (window visible, tile in view): frames are asked for; hidden: none are. */
  setShown(shown: boolean): void;
  close(): void;
}

/**
 * Streams `trackId`'s frames to `onFrame`, asking for the next as each is handed over, while
 * shown. Reconnects if the channel drops.
 */
export function openFeed(
  channel: () => Promise<ChannelInfo>,
  trackId: string,
  onFrame: (h: FrameHeader, planes: Uint8Array) => void,
): Feed {
  let ws: WebSocket | null = null;
  let closed = false;
  let shown = true;
  let outstanding = 0;
  let retry: ReturnType<typeof setTimeout> | undefined;
  const ask = () => {
    while (ws && ws.readyState === WebSocket.OPEN && shown && outstanding < CREDIT) {
      ws.send("next");
      outstanding += 1;
    }
  };
  const connect = async () => {
    let info: ChannelInfo;
    try {
      info = await channel();
    } catch {
      retry = setTimeout(connect, 1000);
      return;
    }
    if (closed) return;
    const sock = new WebSocket(`ws://127.0.0.1:${info.port}/${encodeURIComponent(trackId)}?s=${info.secret}`);
    sock.binaryType = "arraybuffer";
    ws = sock;
    outstanding = 0;
    sock.onopen = ask;
    sock.onmessage = (e: MessageEvent) => {
      outstanding = Math.max(0, outstanding - 1);
      if (e.data instanceof ArrayBuffer) {
        const h = parseFrame(e.data);
        if (h) onFrame(h, new Uint8Array(e.data, HEADER));
      }
      ask();
    };
    sock.onclose = () => {
      if (ws === sock) ws = null;
      if (!closed) retry = setTimeout(connect, 500);
    };
  };
  connect();
  return {
    setShown(s: boolean) {
      shown = s;
      ask();
    },
    close() {
      closed = true;
      clearTimeout(retry);
      ws?.close();
      ws = null;
    },
  };
}
