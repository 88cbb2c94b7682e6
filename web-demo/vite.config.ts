import { defineConfig } from "vite";

// Static files for fedgate's edge (`web_root`): relative asset paths so the page works
// wherever the edge serves it.
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
  },
});
