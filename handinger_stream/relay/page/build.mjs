// Bundles src/ into dist/ (committed), so the relay serves the page with no npm at run time.
//   npm ci && node build.mjs
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('.', import.meta.url));
const dist = `${root}dist`;

// esbuild keeps every member of a namespace that a module exports as a value, and zod
// exports its `z` that way; so `z.locales`, 40-odd translations of zod's error messages,
// would be a third of the bundle. Nothing here reads z.locales: it becomes empty. The
// English messages zod uses by default are imported on their own and stay.
const dropZodLocales = {
  name: 'drop-zod-locales',
  setup(build) {
    build.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]zod[\\/]v4[\\/]/.test(args.importer) ? { path: 'zod-locales', namespace: 'empty' } : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: 'export {};' }));
  },
};

await rm(dist, { recursive: true, force: true });
await mkdir(dist);
await esbuild.build({
  absWorkingDir: root,
  entryPoints: { app: 'src/main.jsx' },
  outdir: dist,
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  jsx: 'automatic',
  // React picks its production build from this; nothing else reads it in a browser.
  define: { 'process.env.NODE_ENV': '"production"' },
  charset: 'utf8',
  plugins: [dropZodLocales],
  logLevel: 'warning',
});
await copyFile(`${root}src/index.html`, `${dist}/index.html`);

for (const name of ['index.html', 'app.js', 'app.css']) {
  const { size } = await stat(`${dist}/${name}`);
  console.log(`dist/${name}  ${(size / 1024).toFixed(1)} KiB`);
}
