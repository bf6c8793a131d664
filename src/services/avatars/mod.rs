//! Avatars: images made from a few parameters — QR codes, country flags, browser
//! and credit-card icons, initials — and remote images (the image proxy, favicons), served as bytes under
//! `/v1/avatars/…` (`http::avatars`) and named by URL in GraphQL. Public unless
//! the project turns `avatarsPublic` off ([`grant`]): an avatar reveals nothing of
//! a project, so by default no key or session is asked for. Every
//! parameter is bounded before anything is drawn or fetched, and drawing takes a
//! turn of the preview pool (`storage::preview::Turns`), so a burst of large
//! avatars costs no more memory than a burst of previews. Remote fetches reach
//! only public addresses ([`remote`]). It owns no table and writes nothing.

pub mod cache;
pub mod favicon;
pub mod flags;
pub mod icons;
pub mod initials;
pub mod output;
pub mod qr;
pub mod remote;
pub mod schema;

pub use schema::register;

use crate::auth::Caller;
use crate::error::{AppError, codes};

/// Leave to serve avatars to a caller, from [`grant`]: whatever draws or fetches
/// an avatar for a request takes one, so none is served unchecked.
#[derive(Debug, Clone, Copy)]
pub struct AvatarGrant {
    /// Whether the answer is the same for everyone, so a shared cache may keep it:
    /// not when the project serves avatars only to some callers.
    pub shared: bool,
}

/// Who may have the avatars of the caller's project: anyone while its
/// `avatarsPublic` is on (the default), else only signed-in users and API keys;
/// anyone else gets `AVATARS_NOT_PUBLIC`.
pub fn grant(caller: &Caller) -> Result<AvatarGrant, AppError> {
    if caller.project.auth.avatars_public {
        return Ok(AvatarGrant { shared: true });
    }
    if caller.key().is_some() || caller.require_session().is_ok() {
        return Ok(AvatarGrant { shared: false });
    }
    Err(AppError::AvatarsNotPublic)
}

/// Largest side of any avatar, in pixels.
pub const MAX_SIZE: u32 = 2000;

/// A parameter out of range or of the wrong form.
pub fn invalid(field: &str, reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: codes::INVALID_AVATAR_PARAMETER,
        field: field.into(),
        reason: reason.into(),
    }
}

/// How a bundled SVG fills an image of another shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Covers the whole image: the edges are cut, never padded (flags).
    Cover,
    /// Fits inside: never cut, the rest left transparent (marks, cards).
    Contain,
}

/// `source` (an SVG) drawn centred into a `width`×`height` pixmap, or why not.
pub fn rasterise(
    source: &[u8],
    width: u32,
    height: u32,
    fit: Fit,
) -> Result<resvg::tiny_skia::Pixmap, String> {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_data(source, &usvg::Options::default())
        .map_err(|err| format!("does not parse: {err}"))?;
    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or("no pixmap")?;
    let (w, h) = (width as f32, height as f32);
    let view = tree.size();
    let (across, down) = (w / view.width(), h / view.height());
    let scale = match fit {
        Fit::Cover => across.max(down),
        Fit::Contain => across.min(down),
    };
    let transform = tiny_skia::Transform::from_row(
        scale,
        0.0,
        0.0,
        scale,
        (w - view.width() * scale) / 2.0,
        (h - view.height() * scale) / 2.0,
    );
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    Ok(pixmap)
}

/// A JPEG quality: `0..=100`, `default` when absent.
pub fn quality(given: Option<i64>, default: u8) -> Result<u8, AppError> {
    match given {
        None => Ok(default),
        Some(q) if (0..=100).contains(&q) => Ok(q as u8),
        Some(_) => Err(invalid("quality", "must be 0 to 100")),
    }
}

/// An `ETag`: a digest of the parts that decide an image's bytes (the first
/// naming the kind of image and its drawing's version).
pub fn etag(parts: &[&str]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\0");
    }
    format!("\"{}\"", hex::encode(&hasher.finalize()[..16]))
}

/// A side in pixels: `1..=MAX_SIZE`, `default` when absent.
pub fn size(field: &str, given: Option<i64>, default: u32) -> Result<u32, AppError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=i64::from(MAX_SIZE)).contains(&n) => Ok(n as u32),
        Some(_) => Err(invalid(field, format!("must be 1 to {MAX_SIZE} pixels"))),
    }
}
