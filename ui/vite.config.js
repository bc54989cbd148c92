import { defineConfig } from "vite";

// React's automatic JSX through esbuild (no plugin needed). The Tauri app loads `dist/`.
export default defineConfig({
  esbuild: { jsx: "automatic" },
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: { outDir: "dist", emptyOutDir: true, target: "es2021" },
  test: { include: ["test/**/*.test.{js,ts,tsx}"] },
});
