#!/usr/bin/env node
// Generates data/locale/locale.json, the reference data of the locale service, from
// npm packages with open licences, and copies the bundled IP-to-country database.
// Run by hand when the data should be refreshed; the build only reads the output.
//
//   npm install --prefix /tmp/locale-src --no-save \
//     i18n-iso-countries@7.14.0 countries-list@3.4.1 cldr-localenames-full@48.2.0 \
//     cldr-numbers-full@48.2.0 cldr-core@48.2.0 @ip-location-db/geo-whois-asn-country-mmdb@2.3.2026061719
//   node scripts/locale-data.mjs /tmp/locale-src/node_modules
//
// Update the versions above and in docs/locale-data.md together.
//
// Sources (docs/locale-data.md has their licences):
//   i18n-iso-countries     country names in 78 languages (the set of locales served)
//   countries-list         continents, calling codes, currencies per country, currency
//                          symbols and decimal digits, ISO 639-1 languages with native names
//   cldr-localenames-full  continent, language and locale names in every served locale
//   cldr-numbers-full      currency names (singular and plural) in every served locale
//   cldr-core              the members of the European Union (territory containment
//                          "EU") and currency rounding increments

import { readFileSync, writeFileSync, copyFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const modules = process.argv[2];
if (!modules) {
  console.error('usage: node scripts/locale-data.mjs NODE_MODULES_DIR');
  process.exit(2);
}
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'data', 'locale');
const read = (...path) => JSON.parse(readFileSync(join(modules, ...path), 'utf8'));
// CLDR has no data for a few of the served locales: their names fall back to English.
const readOr = (fallback, ...path) => (existsSync(join(modules, ...path)) ? read(...path) : fallback);

const expected = {
  'i18n-iso-countries': '7.14.0',
  'countries-list': '3.4.1',
  'cldr-localenames-full': '48.2.0',
  'cldr-numbers-full': '48.2.0',
  'cldr-core': '48.2.0',
  '@ip-location-db/geo-whois-asn-country-mmdb': '2.3.2026061719',
};
for (const [name, version] of Object.entries(expected)) {
  const found = read(name, 'package.json').version;
  if (found !== version) {
    throw new Error(`${name} is ${found}, expected ${version}: update both together`);
  }
}

// English first: it is the fallback of every other locale.
const supported = read('i18n-iso-countries', 'supportedLocales.json');
const locales = ['en', ...supported.filter((l) => l !== 'en').sort()];

const countryNames = Object.fromEntries(
  locales.map((l) => [l, read('i18n-iso-countries', 'langs', `${l}.json`).countries]),
);
const cldrNames = (locale, file) =>
  readOr(null, 'cldr-localenames-full', 'main', locale, `${file}.json`)?.main[locale].localeDisplayNames[file] ?? {};
const territories = Object.fromEntries(locales.map((l) => [l, cldrNames(l, 'territories')]));
const languageNames = Object.fromEntries(locales.map((l) => [l, cldrNames(l, 'languages')]));
const currencyNames = Object.fromEntries(
  locales.map((l) => [
    l,
    readOr(null, 'cldr-numbers-full', 'main', l, 'currencies.json')?.main[l].numbers.currencies ?? {},
  ]),
);

// A name per locale, "" where the locale has none or says the same as English (the
// server falls back to English): a third of the size.
const perLocale = (pick) => {
  const names = locales.map((l) => {
    const name = pick(l);
    return (Array.isArray(name) ? name[0] : name) || '';
  });
  if (!names[0]) throw new Error('an English name is missing');
  return names.map((name, i) => (i > 0 && name === names[0] ? '' : name));
};

const listCountries = read('countries-list', 'countries.min.json');
const listCurrencies = read('countries-list', 'currencies.min.json');
const listLanguages = read('countries-list', 'languages.all.min.json');
const listContinents = read('countries-list', 'continents.min.json');

// The EU's members as CLDR keeps them. 27 since the United Kingdom left (2020);
// a change here must be a real change of membership.
const eu = read('cldr-core', 'supplemental', 'territoryContainment.json').supplemental
  .territoryContainment.EU._contains;
if (eu.length !== 27) throw new Error(`CLDR lists ${eu.length} EU members, expected 27`);

const countries = Object.keys(countryNames.en)
  .sort()
  .map((code) => {
    const data = listCountries[code];
    if (!data) throw new Error(`countries-list has no ${code}`);
    return {
      code,
      continent: data.continent,
      phones: data.phone.map((p) => `+${p}`),
      currencies: data.currency.filter((c) => listCurrencies[c]),
      eu: eu.includes(code),
      names: perLocale((l) => countryNames[l][code]),
    };
  });

// countries-list's continent codes and the CLDR regions that name them.
const continentRegions = { AF: '002', AN: 'AQ', AS: '142', EU: '150', NA: '003', OC: '009', SA: '005' };
const continents = Object.keys(listContinents)
  .sort()
  .map((code) => ({
    code,
    names: perLocale((l) => (l === 'en' ? listContinents[code] : territories[l][continentRegions[code]])),
  }));

const fractions = read('cldr-core', 'supplemental', 'currencyData.json').supplemental.currencyData.fractions;
const currencies = Object.keys(listCurrencies)
  .sort()
  .map((code) => {
    const data = listCurrencies[code];
    const cldr = fractions[code] ?? fractions.DEFAULT;
    const digits = data.decimals;
    const english = currencyNames.en[code] ?? {};
    return {
      code,
      symbol: data.symbol,
      symbolNative: data.symbolNative,
      decimalDigits: digits,
      // CLDR counts the rounding increment in units of the smallest fraction.
      rounding: Number(cldr._rounding) / 10 ** digits,
      names: perLocale((l) => (l === 'en' ? data.name : currencyNames[l][code]?.displayName)),
      plurals: perLocale((l) =>
        l === 'en'
          ? english['displayName-count-other'] ?? data.name
          : currencyNames[l][code]?.['displayName-count-other'],
      ),
    };
  });

const languages = Object.keys(listLanguages)
  .sort()
  .map((code) => ({
    code,
    nativeName: listLanguages[code].native,
    names: perLocale((l) => (l === 'en' ? listLanguages[code].name : languageNames[l][code])),
  }));

const localeCodes = locales.map((code) => ({
  code,
  names: perLocale((l) => languageNames[l][code] ?? (l === 'en' ? code : '')),
}));

// One entry a line: compact, and a refresh reads as a diff.
const lines = (list) => list.map((item) => '  ' + JSON.stringify(item)).join(',\n');
const json = [
  '{',
  `"locales": ${JSON.stringify(locales)},`,
  `"countries": [\n${lines(countries)}\n],`,
  `"continents": [\n${lines(continents)}\n],`,
  `"currencies": [\n${lines(currencies)}\n],`,
  `"languages": [\n${lines(languages)}\n],`,
  `"localeCodes": [\n${lines(localeCodes)}\n]`,
  '}',
  '',
].join('\n');
writeFileSync(join(out, 'locale.json'), json);

const mmdb = join(modules, '@ip-location-db', 'geo-whois-asn-country-mmdb');
copyFileSync(join(mmdb, 'geo-whois-asn-country.mmdb'), join(out, 'geo-whois-asn-country.mmdb'));
// The licences that ask to travel with the data.
const licenses = join(out, 'licenses');
copyFileSync(join(mmdb, 'NRO_LICENSE'), join(licenses, 'NRO_LICENSE.txt'));
copyFileSync(join(modules, 'i18n-iso-countries', 'LICENSE'), join(licenses, 'i18n-iso-countries.txt'));
copyFileSync(join(modules, 'countries-list', 'LICENSE'), join(licenses, 'countries-list.txt'));
copyFileSync(join(modules, 'cldr-core', 'LICENSE'), join(licenses, 'unicode-cldr.txt'));

console.log(
  `${locales.length} locales, ${countries.length} countries (${eu.length} in the EU), ` +
    `${countries.reduce((n, c) => n + c.phones.length, 0)} calling codes, ${continents.length} continents, ` +
    `${currencies.length} currencies, ${languages.length} languages`,
);
