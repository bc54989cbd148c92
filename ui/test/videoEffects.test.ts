import { beforeEach, describe, expect, it, vi } from "vitest";

// The app's commands are not there in a unit test; nothing here reaches them.
vi.mock("@tauri-apps/api/core", () => ({ invoke: vi.fn(), Channel: class {} }));
vi.mock("@tauri-apps/api/event", () => ({ listen: vi.fn(async () => () => {}) }));

const store = new Map<string, string>();
beforeEach(() => {
  store.clear();
  Object.assign(globalThis, {
    localStorage: {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => store.set(k, v),
      removeItem: (k: string) => store.delete(k),
    },
  });
});

describe("video effects settings", () => {
  it("start with no effect and a mirrored self view", async () => {
    const { loadEffects } = await import("../src/videoEffects");
    expect(loadEffects()).toEqual({ background: { kind: "none" }, touch_up: false, mirror: true });
  });

  it("keep what was chosen, and survive what is not JSON", async () => {
    const { loadEffects } = await import("../src/videoEffects");
    store.set("videoEffects", JSON.stringify({ background: { kind: "blur", strong: true }, mirror: false }));
    expect(loadEffects()).toEqual({ background: { kind: "blur", strong: true }, touch_up: false, mirror: false });
    store.set("videoEffects", "{not json");
    expect(loadEffects().background).toEqual({ kind: "none" });
  });

  it("tell backgrounds apart for the picker", async () => {
    const { backgroundKey } = await import("../src/videoEffects");
    expect(backgroundKey({ kind: "none" })).toBe("none");
    expect(backgroundKey({ kind: "blur", strong: false })).toBe("blur");
    expect(backgroundKey({ kind: "blur", strong: true })).toBe("blur-strong");
    expect(backgroundKey({ kind: "builtin", id: "dusk" })).toBe("builtin:dusk");
    expect(backgroundKey({ kind: "file", path: "/home/me/beach.jpg" })).toBe("file");
  });
});
