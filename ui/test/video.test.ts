import { describe, expect, it } from "vitest";
import { HEADER, i420ToRgba, parseFrame } from "../src/video";

/** A frame message as the app's video channel sends it. */
function message(width: number, height: number, seq: number, planes: number[]): ArrayBuffer {
  const buf = new ArrayBuffer(HEADER + planes.length);
  const v = new DataView(buf);
  [0x43, 0x56, 0x46, 0x31].forEach((b, i) => v.setUint8(i, b));
  v.setUint32(4, width, true);
  v.setUint32(8, height, true);
  v.setBigUint64(12, BigInt(seq), true);
  new Uint8Array(buf, HEADER).set(planes);
  return buf;
}

describe("frames from the video channel", () => {
  it("reads the header", () => {
    const m = message(2, 2, 7, [16, 16, 16, 16, 128, 128]);
    expect(parseFrame(m)).toEqual({ width: 2, height: 2, seq: 7 });
  });

  it("refuses what is not a whole frame", () => {
    expect(parseFrame(new ArrayBuffer(4))).toBeNull();
    expect(parseFrame(message(2, 2, 1, [16, 16]))).toBeNull();
    const bad = message(2, 2, 1, [16, 16, 16, 16, 128, 128]);
    new DataView(bad).setUint8(0, 0x58);
    expect(parseFrame(bad)).toBeNull();
    expect(parseFrame(message(0, 0, 1, []))).toBeNull();
  });

  it("converts BT.601 limited range like the shader", () => {
    const out = new Uint8ClampedArray(4 * 4);
    // Mid grey, then pure red (Y 81, U 90, V 240), each a 2 × 2 picture.
    i420ToRgba(new Uint8Array([126, 126, 126, 126, 128, 128]), 2, 2, out);
    expect(Math.abs(out[0] - 128)).toBeLessThanOrEqual(2);
    expect(out[0]).toBe(out[1]);
    expect(out[1]).toBe(out[2]);
    expect(out[3]).toBe(255);
    i420ToRgba(new Uint8Array([81, 81, 81, 81, 90, 240]), 2, 2, out);
    expect(out[0]).toBeGreaterThan(240);
    expect(out[1]).toBeLessThan(15);
    expect(out[2]).toBeLessThan(15);
  });

  it("handles odd sizes (chroma rounded up)", () => {
    // 3 × 1: chroma is 2 × 1.
    const out = new Uint8ClampedArray(3 * 4);
    i420ToRgba(new Uint8Array([16, 235, 235, 128, 128, 128, 128]), 3, 1, out);
    expect(out[0]).toBe(0);
    expect(out[4]).toBe(255);
    expect(out[8]).toBe(255);
    expect(parseFrame(message(3, 1, 1, [16, 235, 235, 128, 128, 128, 128]))).not.toBeNull();
  });
});
