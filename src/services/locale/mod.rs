//! Locale: where the caller is (its country, continent, EU membership and
//! currency, from its client address) and the world's reference data — countries,
//! EU members, calling codes, continents, currencies, languages and the locales
//! served — translated into the language the request asks for. Read-only and
//! public; the data is compiled in, so it needs no database, file or network.
//! It owns no table and writes nothing.

pub mod cache;
pub mod data;
pub mod geoip;
pub mod negotiate;
pub mod schema;

pub use schema::register;
