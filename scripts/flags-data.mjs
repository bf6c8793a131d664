#!/usr/bin/env node
// Copies the flags of the avatars service into data/avatars/flags/: one SVG (4:3) per
// ISO 3166-1 alpha-2 country of data/locale/locale.json, from the npm package
// flag-icons (MIT), with its licence. Run by hand when the flags should be refreshed;
// the build embeds the files (build.rs lists them).
//
//   npm install --prefix /tmp/flag-src --no-save flag-icons@7.5.0
//   node scripts/flags-data.mjs /tmp/flag-src/node_modules
//
// Update the version above, `expected` below and docs/avatars-data.md together.

import { readFileSync, writeFileSync, copyFileSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const modules = process.argv[2];
if (!modules) {
  console.error('usage: node scripts/flags-data.mjs NODE_MODULES_DIR');
  process.exit(2);
}
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'data', 'avatars', 'flags');
const expected = '7.5.0';
const pkg = JSON.parse(readFileSync(join(modules, 'flag-icons', 'package.json'), 'utf8'));
if (pkg.version !== expected) {
  console.error(`flag-icons is ${pkg.version}, expected ${expected}`);
  process.exit(1);
}

const locale = JSON.parse(readFileSync(join(root, 'data', 'locale', 'locale.json'), 'utf8'));
const codes = locale.countries.map((c) => c.code.toLowerCase()).sort();
const missing = codes.filter((code) => !existsSync(join(modules, 'flag-icons', 'flags', '4x3', `${code}.svg`)));
if (missing.length) {
  console.error(`flag-icons has no flag for ${missing.join(', ')}`);
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
mkdirSync(join(root, 'data', 'avatars', 'licenses'), { recursive: true });
for (const code of codes) {
  // The `id` attribute names the package's CSS class; nothing reads it here.
  const svg = readFileSync(join(modules, 'flag-icons', 'flags', '4x3', `${code}.svg`), 'utf8')
    .replace(/ id="flag-icons-[a-z-]+"/, '');
  writeFileSync(join(out, `${code}.svg`), svg);
}
copyFileSync(join(modules, 'flag-icons', 'LICENSE'), join(root, 'data', 'avatars', 'licenses', 'flag-icons.txt'));
console.log(`${codes.length} flags written to ${out}`);
