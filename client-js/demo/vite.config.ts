// Vite config for the demo chat: `npm run dev` (dev server, proxying Socket.IO to a running palaver) and
// `npm run build:demo` (static files in demo/dist, which palaver serves at `/`).
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const root = fileURLToPath(new URL(".", import.meta.url));
// Where `npm run dev` finds palaver; the page itself talks to its own origin and Vite forwards /socket.io.
const target = process.env.PALAVER_URL ?? "http://localhost:3000";
const proxy = { "/socket.io": { target, ws: true, changeOrigin: true } };

export default defineConfig({
  root,
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
  },
  server: { proxy },
  preview: { proxy },
});
