#!/usr/bin/env node
// Writes the browser and credit-card icons of the avatars service into
// data/avatars/browsers/ and data/avatars/credit-cards/: one SVG per code that
// Appwrite's getBrowser and getCreditCard take. Where simple-icons (CC0, Android:
// CC BY 3.0) has the brand's mark, the mark in the brand's colour; where it has none,
// a neutral badge with the brand's name, its letters turned into outlines of the
// bundled DejaVu Sans Bold (so the server draws them without a text engine). Run by
// hand when the icons should be refreshed; the build embeds the files (build.rs).
//
//   npm install --prefix /tmp/icon-src --no-save simple-icons@16.37.0 opentype.js@2.0.0
//   node scripts/icons-data.mjs /tmp/icon-src/node_modules
//
// Update the versions above, `expected` below and docs/avatars-data.md together.

import { readFileSync, writeFileSync, copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const modules = process.argv[2];
if (!modules) {
  console.error('usage: node scripts/icons-data.mjs NODE_MODULES_DIR');
  process.exit(2);
}
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const expected = { 'simple-icons': '16.37.0', 'opentype.js': '2.0.0' };
for (const [name, version] of Object.entries(expected)) {
  const pkg = JSON.parse(readFileSync(join(modules, name, 'package.json'), 'utf8'));
  if (pkg.version !== version) {
    console.error(`${name} is ${pkg.version}, expected ${version}`);
    process.exit(1);
  }
}
const opentype = await import(pathToFileURL(join(modules, 'opentype.js', 'dist', 'opentype.mjs')).href);
const fontBytes = readFileSync(join(root, 'data', 'avatars', 'fonts', 'DejaVuSans-Bold-subset.ttf'));
const font = opentype.parse(fontBytes.buffer.slice(fontBytes.byteOffset, fontBytes.byteOffset + fontBytes.byteLength));

const catalogue = JSON.parse(readFileSync(join(modules, 'simple-icons', 'data', 'simple-icons.json'), 'utf8'));
const bySlug = new Map((Array.isArray(catalogue) ? catalogue : catalogue.icons).map((i) => [i.slug, i]));

// Appwrite's codes, the brand's name (shown on a badge), and the simple-icons slug
// of its mark, or null where simple-icons has none.
const browsers = [
  ['aa', 'Avant', null],
  ['an', 'Android WebView', 'android'],
  ['ch', 'Chrome', 'googlechrome'],
  ['ci', 'Chrome', 'googlechrome'],
  ['cm', 'Chrome', 'googlechrome'],
  ['cr', 'Chromium', null],
  ['ff', 'Firefox', 'firefoxbrowser'],
  ['sf', 'Safari', 'safari'],
  ['mf', 'Safari', 'safari'],
  ['ps', 'Microsoft Edge', null],
  ['oi', 'Microsoft Edge', null],
  ['om', 'Opera Mini', 'opera'],
  ['op', 'Opera', 'opera'],
  ['on', 'Opera', 'opera'],
];
const cards = [
  ['amex', 'American Express', 'americanexpress'],
  ['argencard', 'Argencard', null],
  ['cabal', 'Cabal', null],
  ['cencosud', 'Cencosud', null],
  ['diners', 'Diners Club', 'dinersclub'],
  ['discover', 'Discover', 'discover'],
  ['elo', 'Elo', null],
  ['hipercard', 'Hipercard', null],
  ['jcb', 'JCB', 'jcb'],
  ['mastercard', 'Mastercard', 'mastercard'],
  ['naranja', 'Naranja', null],
  ['targeta-shopping', 'Tarjeta Shopping', null],
  ['union-china-pay', 'UnionPay', null],
  ['visa', 'Visa', 'visa'],
  ['mir', 'Mir', null],
  ['maestro', 'Maestro', null],
  ['rupay', 'RuPay', null],
];

const BADGE = '#5F6368';

/// The mark's path data (simple-icons draws every mark as one path in 24×24).
function mark(slug) {
  const svg = readFileSync(join(modules, 'simple-icons', 'icons', `${slug}.svg`), 'utf8');
  const d = svg.match(/<path d="([^"]+)"/);
  if (!d || !bySlug.has(slug)) throw new Error(`simple-icons has no ${slug}`);
  return { d: d[1], hex: bySlug.get(slug).hex, license: bySlug.get(slug).license };
}

/// `name` as outlines centred in a box of `width`×`height` at (`x`, `y`): one line,
/// or two split at a space when one would be too small.
function lettering(name, x, y, width, height, maxSize) {
  const fit = (lines) => {
    const widest = Math.max(...lines.map((l) => font.getAdvanceWidth(l, 1)));
    return Math.min(maxSize, width / widest, height / (lines.length * 1.15));
  };
  let lines = [name];
  const words = name.split(' ');
  if (words.length > 1) {
    const two = [words.slice(0, Math.ceil(words.length / 2)).join(' '), words.slice(Math.ceil(words.length / 2)).join(' ')];
    if (fit(two) > fit(lines) * 1.2) lines = two;
  }
  const size = fit(lines);
  const lineHeight = size * 1.15;
  const top = y + (height - lineHeight * lines.length) / 2;
  return lines
    .map((line, i) => {
      const w = font.getAdvanceWidth(line, size);
      // The baseline sits about 0.8 of a line below its top (DejaVu's ascent).
      return font.getPath(line, x + (width - w) / 2, top + i * lineHeight + size * 0.9, size).toPathData(2);
    })
    .join('');
}

const svg = (w, h, body) => `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}">${body}</svg>\n`;

function browser([, name, slug]) {
  if (slug) {
    const m = mark(slug);
    return { svg: svg(24, 24, `<path fill="#${m.hex}" d="${m.d}"/>`), source: slug, license: m.license };
  }
  return {
    svg: svg(24, 24, `<rect width="24" height="24" rx="5" fill="${BADGE}"/><path fill="#FFFFFF" d="${lettering(name, 2, 3, 20, 18, 7)}"/>`),
    source: null,
  };
}

// A card is 60×40 (3:2) with rounded corners: white with the mark, or grey with the name.
function card([, name, slug]) {
  if (slug) {
    const m = mark(slug);
    return {
      svg: svg(60, 40, `<rect x="0.5" y="0.5" width="59" height="39" rx="4" fill="#FFFFFF" stroke="#D0D5DD"/><path fill="#${m.hex}" transform="translate(16 6) scale(1.1667)" d="${m.d}"/>`),
      source: slug,
      license: m.license,
    };
  }
  return {
    svg: svg(60, 40, `<rect width="60" height="40" rx="4" fill="${BADGE}"/><path fill="#FFFFFF" d="${lettering(name, 5, 5, 50, 30, 12)}"/>`),
    source: null,
  };
}

const report = [];
for (const [dir, set, draw] of [['browsers', browsers, browser], ['credit-cards', cards, card]]) {
  const out = join(root, 'data', 'avatars', dir);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  for (const entry of set) {
    const icon = draw(entry);
    writeFileSync(join(out, `${entry[0]}.svg`), icon.svg);
    const license = icon.source ? (icon.license ? icon.license.type : 'CC0-1.0') : 'generated badge';
    report.push(`${dir}/${entry[0]}: ${icon.source ?? '-'} (${license})`);
  }
}
copyFileSync(join(modules, 'simple-icons', 'LICENSE.md'), join(root, 'data', 'avatars', 'licenses', 'simple-icons.txt'));
console.log(report.join('\n'));
