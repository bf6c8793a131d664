//! Favicons: the icon a web page names (`<link rel="icon" href>` and its kin, read
//! from the start of the page), else `/favicon.ico` of its site. Fetched through
//! [`super::remote`], so every page, icon and redirect is held to the same guard.

use super::remote;
use crate::error::{AppError, codes};

/// Bytes of a page searched for its icon links: they belong in `<head>`.
const HEAD_BYTES: usize = 256 * 1024;
/// Icons tried per page.
const MAX_CANDIDATES: usize = 3;

/// The value of attribute `name` in the inside of a tag, unquoted.
fn attribute<'a>(tag: &'a str, lower: &str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let start = from + found;
        from = start + name.len();
        let before = lower[..start].chars().next_back();
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let rest = lower[from..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let value_start = lower.len() - rest.trim_start().len();
        let value = &tag[value_start..];
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or(""),
        });
    }
    None
}

/// The icons `html` names, best first (`icon` before `apple-touch-icon`), as
/// absolute URLs against `base`.
pub fn icon_links(html: &str, base: &url::Url) -> Vec<url::Url> {
    let lower = html.to_ascii_lowercase();
    let mut found: Vec<(u8, url::Url)> = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<link") {
        let start = from + at + "<link".len();
        let end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
        from = end;
        let (tag, tag_lower) = (&html[start..end], &lower[start..end]);
        let Some(rel) = attribute(tag, tag_lower, "rel") else {
            continue;
        };
        let rel = rel.to_ascii_lowercase();
        let rank = if rel.split_whitespace().any(|r| r == "icon") {
            0
        } else if rel
            .split_whitespace()
            .any(|r| r.starts_with("apple-touch-icon"))
        {
            1
        } else {
            continue;
        };
        if let Some(url) = attribute(tag, tag_lower, "href").and_then(|h| base.join(h.trim()).ok())
        {
            found.push((rank, url));
        }
    }
    found.sort_by_key(|(rank, _)| *rank);
    found.into_iter().map(|(_, url)| url).collect()
}

/// The favicon of the page at `url`: its bytes and sniffed MIME type.
pub async fn fetch(
    url: url::Url,
    limits: remote::ProxyLimits,
) -> Result<(Vec<u8>, &'static str), AppError> {
    let page = remote::fetch(url, limits).await?;
    if let Some(mime) = remote::sniff(&page.bytes) {
        return Ok((page.bytes, mime));
    }
    let head = &page.bytes[..page.bytes.len().min(HEAD_BYTES)];
    let mut candidates = icon_links(&String::from_utf8_lossy(head), &page.url);
    if let Ok(fallback) = page.url.join("/favicon.ico") {
        candidates.push(fallback);
    }
    for candidate in candidates.into_iter().take(MAX_CANDIDATES) {
        let Ok(candidate) = remote::check_url(candidate.as_str()) else {
            continue;
        };
        // A refused address ends the search: the page pointed at it on purpose.
        match remote::fetch(candidate, limits).await {
            Ok(icon) => {
                if let Some(mime) = remote::sniff(&icon.bytes) {
                    return Ok((icon.bytes, mime));
                }
            }
            Err(err @ AppError::Invalid { .. }) => return Err(err),
            Err(_) => {}
        }
    }
    Err(AppError::Upstream {
        code: codes::AVATAR_FETCH_FAILED,
        reason: "the page has no icon that could be fetched".into(),
    })
}

/// An ICO as PNG, the largest image it holds, for the preview renderer.
pub fn ico_to_png(bytes: &[u8], max_pixels: u64) -> Result<Vec<u8>, AppError> {
    let bad = || AppError::Upstream {
        code: codes::AVATAR_FETCH_FAILED,
        reason: "the icon does not decode".into(),
    };
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Ico);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    let decoded = reader.decode().map_err(|_| bad())?;
    let mut out = Vec::new();
    decoded
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|_| bad())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icon_links_are_found_resolved_and_ranked() {
        let base = url::Url::parse("https://example.com/blog/post").unwrap();
        let html = r#"<html><head>
            <LINK REL="apple-touch-icon" href="/touch.png">
            <link href='img/fav.png' rel='shortcut icon' type="image/png">
            <link rel=stylesheet href=/style.css>
            <link rel=icon href=https://cdn.example.net/i.ico>
            <meta name="x" content="<link rel=icon href=nope>">
        </head>"#;
        let links: Vec<String> = icon_links(html, &base)
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(links[0], "https://example.com/blog/img/fav.png");
        assert_eq!(links[1], "https://cdn.example.net/i.ico");
        assert!(links.contains(&"https://example.com/touch.png".to_string()));
        assert!(!links.iter().any(|l| l.ends_with("style.css")));
        assert_eq!(links.last().unwrap(), "https://example.com/touch.png");
    }

    #[test]
    fn a_page_without_icons_names_none() {
        let base = url::Url::parse("https://example.com/").unwrap();
        assert!(icon_links("<p>hello <link", &base).is_empty());
        assert!(icon_links("", &base).is_empty());
    }
}
