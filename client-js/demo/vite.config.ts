// Vite config for the demo chat: `npm run dev` (dev server with Fast Refresh, proxying Socket.IO to a running
// palaver) and `npm run build:demo` (static files in demo/dist, which palaver serves at `/`).
//
// The page imports the SDK as an app does, `@palaver/client` and `@palaver/client/react`; here those names point at
// the SDK's source next door (client-js/src), so the demo always runs the SDK of this checkout, without a build of it.
import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const root = fileURLToPath(new URL(".", import.meta.url));
const sdk = (path: string) => fileURLToPath(new URL(`../src/${path}`, import.meta.url));
// Where `npm run dev` finds palaver; the page itself talks to its own origin and Vite forwards /socket.io.
const target = process.env.PALAVER_URL ?? "http://localhost:3000";
const proxy = { "/socket.io": { target, ws: true, changeOrigin: true } };

export default defineConfig({
  root,
  base: "./",
  plugins: [react()],
  resolve: {
    alias: [
      { find: /^@palaver\/client\/react$/, replacement: sdk("react/index.ts") },
      { find: /^@palaver\/client$/, replacement: sdk("index.ts") },
    ],
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
  },
  server: { proxy },
  preview: { proxy },
});
