//! Which locale a request is answered in: the first of the languages it asks for
//! (`X-Nimbus-Locale`, else `Accept-Language` with its q-values) that the data has,
//! by full tag and then by primary language (`de-AT` is answered in `de`); English
//! when none is, as Appwrite does. The header is the client's: its size and entry
//! count are bounded before any work, and nothing in it can fail the request.

use super::data::{Locale, LocaleData};

/// A longer header is ignored: no real client sends one.
const MAX_HEADER_BYTES: usize = 1024;
/// Entries past this many are not read.
const MAX_ENTRIES: usize = 16;

/// The locale to answer `requested` in.
pub fn pick(data: &LocaleData, requested: &str) -> Locale {
    if requested.len() > MAX_HEADER_BYTES {
        return Locale::ENGLISH;
    }
    let mut wanted: Vec<(&str, f32)> = requested
        .split(',')
        .take(MAX_ENTRIES)
        .filter_map(entry)
        .filter(|&(_, q)| q > 0.0)
        .collect();
    // Stable: entries of equal weight keep the client's order.
    wanted.sort_by(|a, b| b.1.total_cmp(&a.1));
    wanted
        .into_iter()
        .find_map(|(tag, _)| matching(data, tag))
        .unwrap_or(Locale::ENGLISH)
}

/// One `tag;q=0.5` entry; a q-value that is not a number in 0..=1 drops it.
fn entry(entry: &str) -> Option<(&str, f32)> {
    let mut parts = entry.split(';');
    let tag = parts.next()?.trim();
    let mut q = 1.0;
    for param in parts {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))?;
        }
    }
    (!tag.is_empty()).then_some((tag, q))
}

fn matching(data: &LocaleData, tag: &str) -> Option<Locale> {
    if tag.len() > 35
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let tag = tag.to_ascii_lowercase().replace('_', "-");
    data.locale(&tag).or_else(|| {
        let primary = tag.split('-').next()?;
        data.locale(primary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::locale::data::data;

    fn pick_code(requested: &str) -> &'static str {
        pick(data(), requested).code()
    }

    #[test]
    fn follows_q_values_and_regions() {
        assert_eq!(pick_code("de"), "de");
        assert_eq!(pick_code("de-AT"), "de");
        assert_eq!(pick_code("pt_BR"), "pt");
        assert_eq!(pick_code("xx, fr;q=0.5, de;q=0.9"), "de");
        assert_eq!(pick_code("fr;q=0.5, ja"), "ja");
        assert_eq!(pick_code("de;q=0, fr;q=0.1"), "fr");
        assert_eq!(pick_code("FR-ca"), "fr");
    }

    #[test]
    fn anything_else_is_english() {
        for header in [
            "",
            "xx",
            "*",
            "de;q=2",
            "de;q=abc",
            ";;;",
            "de-\u{0}",
            "zz-ZZ;q=1",
        ] {
            assert_eq!(pick_code(header), "en", "{header:?}");
        }
        assert_eq!(pick_code(&"de,".repeat(400)), "en");
        let late = format!("{}ja", "xx,".repeat(20));
        assert_eq!(pick_code(&late), "en");
    }
}
