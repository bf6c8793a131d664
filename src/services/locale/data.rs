//! The reference data of the locale service: countries, continents, calling codes,
//! currencies, languages and the locales names come in, generated from open
//! datasets by `scripts/locale-data.mjs` into `data/locale/locale.json` (sources
//! and licences in `docs/locale-data.md`) and compiled into the binary, so the
//! server needs no file and no network for it. Read-only: nothing here changes
//! after the first read.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

/// The generated data, as committed.
const SOURCE: &str = include_str!("../../../data/locale/locale.json");

/// A locale of the data: the index of its names in every `names` list. English,
/// the fallback, is index 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locale(usize);

impl Locale {
    pub const ENGLISH: Locale = Locale(0);

    /// Its code, as listed by `localeCodes` (`en`, `de`, `zh`).
    pub fn code(self) -> &'static str {
        &data().locales[self.0]
    }
}

/// A name in every locale: "" where a locale has none of its own, or says the same
/// as English.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Names(Vec<String>);

impl Names {
    /// The name in `locale`, else in English.
    pub fn get(&self, locale: Locale) -> &str {
        match self.0.get(locale.0).map(String::as_str) {
            Some("") | None => &self.0[0],
            Some(name) => name,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Country {
    /// ISO 3166-1 alpha-2.
    pub code: String,
    /// The code of its continent (`continents`).
    pub continent: String,
    /// Its international calling codes, `+` included.
    pub phones: Vec<String>,
    /// ISO 4217 codes of the currencies used there, the main one first.
    pub currencies: Vec<String>,
    /// Whether it is a member state of the European Union.
    pub eu: bool,
    pub names: Names,
}

#[derive(Debug, Deserialize)]
pub struct Continent {
    /// `AF`, `AN`, `AS`, `EU`, `NA`, `OC`, `SA`.
    pub code: String,
    pub names: Names,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Currency {
    /// ISO 4217.
    pub code: String,
    pub symbol: String,
    pub symbol_native: String,
    pub decimal_digits: u32,
    pub rounding: f64,
    pub names: Names,
    pub plurals: Names,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Language {
    /// ISO 639-1.
    pub code: String,
    /// Its name in itself.
    pub native_name: String,
    pub names: Names,
}

#[derive(Debug, Deserialize)]
pub struct LocaleCode {
    pub code: String,
    pub names: Names,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocaleData {
    locales: Vec<String>,
    pub countries: Vec<Country>,
    pub continents: Vec<Continent>,
    pub currencies: Vec<Currency>,
    pub languages: Vec<Language>,
    pub locale_codes: Vec<LocaleCode>,
    #[serde(skip)]
    by_locale: HashMap<String, usize>,
    #[serde(skip)]
    by_country: HashMap<String, usize>,
    #[serde(skip)]
    by_continent: HashMap<String, usize>,
}

impl LocaleData {
    fn parse(source: &str) -> serde_json::Result<Self> {
        let mut data: LocaleData = serde_json::from_str(source)?;
        data.by_locale = index(data.locales.iter());
        data.by_country = index(data.countries.iter().map(|c| &c.code));
        data.by_continent = index(data.continents.iter().map(|c| &c.code));
        Ok(data)
    }

    /// The locale of a code in lower case (`pt`), if the data has it.
    pub fn locale(&self, code: &str) -> Option<Locale> {
        self.by_locale.get(code).map(|&i| Locale(i))
    }

    pub fn country(&self, code: &str) -> Option<&Country> {
        self.by_country.get(code).map(|&i| &self.countries[i])
    }

    pub fn continent(&self, code: &str) -> Option<&Continent> {
        self.by_continent.get(code).map(|&i| &self.continents[i])
    }
}

fn index<'a>(codes: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    codes.enumerate().map(|(i, c)| (c.clone(), i)).collect()
}

/// The data, parsed on first use. It is compiled in and checked by the tests
/// below, so it cannot fail to parse in a built server.
pub fn data() -> &'static LocaleData {
    static DATA: LazyLock<LocaleData> =
        LazyLock::new(|| LocaleData::parse(SOURCE).expect("data/locale/locale.json is valid"));
    &DATA
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_data_parses_and_names_everything_in_english() {
        let data = LocaleData::parse(SOURCE).unwrap();
        assert_eq!(data.locales[0], "en");
        for country in &data.countries {
            assert!(
                !country.names.get(Locale::ENGLISH).is_empty(),
                "{}",
                country.code
            );
            assert!(
                data.continent(&country.continent).is_some(),
                "{}",
                country.code
            );
        }
        for list in [
            data.languages.iter().map(|l| &l.names).collect::<Vec<_>>(),
            data.currencies.iter().map(|c| &c.names).collect(),
            data.continents.iter().map(|c| &c.names).collect(),
            data.locale_codes.iter().map(|c| &c.names).collect(),
        ] {
            assert!(
                list.iter()
                    .all(|names| !names.get(Locale::ENGLISH).is_empty())
            );
        }
    }

    #[test]
    fn the_european_union_has_its_27_members() {
        // Kept by CLDR (territory containment "EU"); the generator checks the count too.
        let members: Vec<_> = data()
            .countries
            .iter()
            .filter(|c| c.eu)
            .map(|c| c.code.as_str())
            .collect();
        assert_eq!(members.len(), 27);
        for code in [
            "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
            "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
        ] {
            assert!(members.contains(&code), "{code}");
        }
        assert!(!members.contains(&"GB"));
    }

    #[test]
    fn a_missing_translation_falls_back_to_english() {
        let names = Names(vec!["Japan".into(), "".into(), "日本".into()]);
        assert_eq!(names.get(Locale(1)), "Japan");
        assert_eq!(names.get(Locale(2)), "日本");
        assert_eq!(names.get(Locale(9)), "Japan");
    }
}
