//! Content type detection from a file's first bytes, never from the name or the type a
//! client claims.

/// How many leading bytes `write` keeps for sniffing.
pub(super) const SNIFF_LEN: usize = 8 * 1024;

/// The MIME type of content starting with `head`: what `infer` recognises by its magic
/// bytes; otherwise `text/plain` for valid UTF-8 (a multi-byte character cut off at the
/// end of `head` still counts) without NUL bytes, else `application/octet-stream`.
pub fn sniff_mime(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    if looks_like_text(head) {
        "text/plain".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

fn looks_like_text(head: &[u8]) -> bool {
    // NUL is valid UTF-8 but does not occur in text; it is the usual tell of binary data.
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        // `error_len() == None` means the input ended inside a character.
        Err(error) => error.error_len().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
        assert_eq!(sniff_mime(png), "image/png");
        assert_eq!(sniff_mime(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), "image/jpeg");
        assert_eq!(sniff_mime(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff_mime(b"hello, world\n"), "text/plain");
        assert_eq!(sniff_mime("grüße, 世界".as_bytes()), "text/plain");
        // A three-byte character cut after its first byte.
        let cut = "ab世".as_bytes();
        assert_eq!(sniff_mime(&cut[..3]), "text/plain");
        assert_eq!(
            sniff_mime(b"\x80\x81\xfe\xff garbage \xc3\x28"),
            "application/octet-stream"
        );
        assert_eq!(
            sniff_mime(b"text with a \0 inside"),
            "application/octet-stream"
        );
        assert_eq!(
            sniff_mime(b"bad \xc3\x28 in the middle"),
            "application/octet-stream"
        );
        assert_eq!(sniff_mime(b""), "text/plain");
    }
}
