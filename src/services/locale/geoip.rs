//! The country of a client address: a MaxMind DB lookup, in the bundled
//! IP-to-country database (ip-location-db's `geo-whois-asn-country`, CC0, compiled
//! into the binary and read in place) or in the operator's own file
//! (`NIMBUS_GEOIP_DB`, e.g. GeoLite2-Country), read once at start-up. A file that
//! is missing or not a MaxMind DB stops the start, with the path in the message:
//! answering every client "unknown" instead would hide the mistake.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use maxminddb::Reader;
use serde::Deserialize;

/// The bundled database (7.5 MiB; gzip would save 60% of it in the binary but
/// cost a copy in memory and a decompression at every start).
const BUNDLED: &[u8] = include_bytes!("../../../data/locale/geo-whois-asn-country.mmdb");

/// The largest file read into memory (MaxMind's largest, GeoIP2-City, is about 130
/// MB): a wrong path to some huge file must not exhaust memory at start.
const MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;

pub struct GeoIp {
    reader: Reader<Cow<'static, [u8]>>,
}

/// What a record says of its country, in both layouts: ip-location-db's flat
/// `country_code`, and MaxMind's `country.iso_code` (else `registered_country`).
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow)]
    registered_country: Option<CountryRecord<'a>>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl GeoIp {
    /// The operator's database at `path`, or the bundled one.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let source = match path {
            None => Cow::Borrowed(BUNDLED),
            Some(path) => Cow::Owned(read_bounded(path)?),
        };
        let reader = Reader::from_source(source).with_context(|| match path {
            Some(path) => format!(
                "NIMBUS_GEOIP_DB: {} is not a MaxMind DB file",
                path.display()
            ),
            None => "the bundled GeoIP database is not a MaxMind DB file".to_string(),
        })?;
        Ok(GeoIp { reader })
    }

    /// The ISO 3166-1 alpha-2 code of the country `ip` is in, when the database
    /// knows it. Never for an address that is not public: the bundled data places
    /// some private ranges (192.168.0.0/16) in a country.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        if !is_public(ip) {
            return None;
        }
        let found = self.reader.lookup(ip).ok()?;
        let record: Record = found.decode().ok()??;
        record
            .country_code
            .or(record.country.and_then(|c| c.iso_code))
            .or(record.registered_country.and_then(|c| c.iso_code))
            .filter(|code| code.len() == 2)
            .map(|code| code.to_ascii_uppercase())
    }
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let cannot = || format!("NIMBUS_GEOIP_DB: cannot read {}", path.display());
    let size = std::fs::metadata(path).with_context(cannot)?.len();
    if size > MAX_FILE_BYTES {
        anyhow::bail!(
            "NIMBUS_GEOIP_DB: {} has {size} bytes, more than any MaxMind DB file ({MAX_FILE_BYTES} at most)",
            path.display()
        );
    }
    std::fs::read(path).with_context(cannot)
}

pub use crate::outbound::is_public;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_database_places_public_addresses_and_not_private_ones() {
        let geoip = GeoIp::open(None).unwrap();
        assert_eq!(
            geoip.country("8.8.8.8".parse().unwrap()).as_deref(),
            Some("US")
        );
        assert!(geoip.country("2a00:1450::1".parse().unwrap()).is_some());
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.5.4",
            "192.168.0.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:192.168.1.1",
            "2001:db8::1",
        ] {
            assert_eq!(geoip.country(private.parse().unwrap()), None, "{private}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bogus.mmdb");
        std::fs::write(&path, b"not a database").unwrap();
        let err = GeoIp::open(Some(&path)).err().unwrap().to_string();
        assert!(err.contains("bogus.mmdb"), "{err}");
    }
}
