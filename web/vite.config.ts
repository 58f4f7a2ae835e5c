import { defineConfig, type Plugin } from "vite";

// The Rust binary embeds dist/index.html, dist/app.js and dist/app.css with include_str!,
// and the offline report inlines app.js and app.css into index.html: so one classic
// (IIFE) script with fixed names, no hashes, no chunks, no module preload.
function classicScript(): Plugin {
  return {
    name: "drover-classic-script",
    enforce: "post",
    transformIndexHtml: {
      order: "post",
      handler(html) {
        return html
          .replace(/<script type="module" crossorigin src="([^"]+)"><\/script>/, '<script defer src="$1"></script>')
          .replace(/<link rel="stylesheet" crossorigin href="([^"]+)">/, '<link rel="stylesheet" href="$1">');
      },
    },
  };
}

export default defineConfig({
  base: "./",
  plugins: [classicScript()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2020",
    modulePreload: false,
    cssCodeSplit: false,
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: false,
    // Vite 8 bundles with Rolldown (rollupOptions is its deprecated alias).
    rolldownOptions: {
      output: {
        format: "iife",
        codeSplitting: false, // one bundle (Rollup's inlineDynamicImports)
        entryFileNames: "app.js",
        chunkFileNames: "app-[name].js",
        assetFileNames: (info) => (info.names?.[0] ?? info.name ?? "").endsWith(".css") ? "app.css" : "[name][extname]",
      },
    },
  },
});
