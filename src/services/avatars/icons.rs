//! Browser and credit-card icons: the SVG sets bundled in `data/avatars/browsers/`
//! and `data/avatars/credit-cards/` under Appwrite's codes (`ch`, `visa`), each the
//! brand's mark from simple-icons or, where no open mark exists, a neutral badge
//! with the brand's name (see `docs/avatars-data.md`). Rasterised on demand like
//! the flags, but fitted inside the size asked for (never cut) on a transparent
//! background (white in JPEG).

use super::output::{self, Output};
use super::{invalid, size};
use crate::error::AppError;

/// A bundled set of icons.
pub struct IconSet {
    /// What one icon is, for messages (`browser`).
    pub kind: &'static str,
    /// Its folder under `/v1/avatars/` and `data/avatars/` (`browsers`).
    pub path: &'static str,
    /// Every icon, by lower-case code, sorted (listed by `build.rs`).
    icons: &'static [(&'static str, &'static [u8])],
}

pub static BROWSERS: IconSet = IconSet {
    kind: "browser",
    path: "browsers",
    icons: include!(concat!(env!("OUT_DIR"), "/browsers.rs")),
};

pub static CREDIT_CARDS: IconSet = IconSet {
    kind: "credit card",
    path: "credit-cards",
    icons: include!(concat!(env!("OUT_DIR"), "/credit-cards.rs")),
};

/// Longest code of any icon (`targeta-shopping`), with room to spare.
const MAX_CODE_LEN: usize = 32;
pub const DEFAULT_SIZE: u32 = 100;
pub const DEFAULT_QUALITY: u8 = 90;
/// The formats an icon is answered in, the first by default.
pub const OUTPUTS: &[Output] = &[Output::Png, Output::Jpeg, Output::Webp];

impl IconSet {
    /// The SVG of the icon `code` (lower case), if bundled.
    pub fn svg(&self, code: &str) -> Option<&'static [u8]> {
        self.icons
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .ok()
            .map(|i| self.icons[i].1)
    }

    /// The codes of the bundled icons.
    pub fn codes(&self) -> impl Iterator<Item = &'static str> + use<> {
        self.icons.iter().map(|(c, _)| *c)
    }
}

/// An icon asked for, its parameters checked.
#[derive(Clone)]
pub struct IconParams {
    pub set: &'static IconSet,
    /// Lower case, and bundled.
    pub code: String,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    /// `None`: the request's `Accept` header decides.
    pub output: Option<Output>,
}

impl IconParams {
    /// Checks raw parameters: a malformed code, size or quality is
    /// `INVALID_AVATAR_PARAMETER`, as is a well-formed code with no icon
    /// (Appwrite's whitelist). Without a height the box is square.
    pub fn new(
        set: &'static IconSet,
        code: Option<&str>,
        width: Option<i64>,
        height: Option<i64>,
        quality: Option<i64>,
        output: Option<&str>,
    ) -> Result<IconParams, AppError> {
        let code =
            code.ok_or_else(|| invalid("code", format!("a {} code is required", set.kind)))?;
        if code.is_empty()
            || code.len() > MAX_CODE_LEN
            || !code.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
        {
            return Err(invalid(
                "code",
                format!("must be a {} code of letters and '-'", set.kind),
            ));
        }
        let code = code.to_ascii_lowercase();
        if set.svg(&code).is_none() {
            return Err(invalid("code", format!("no {} has that code", set.kind)));
        }
        let (width, height) = match (width, height) {
            (None, None) => (DEFAULT_SIZE, DEFAULT_SIZE),
            (w, None) => {
                let w = size("width", w, DEFAULT_SIZE)?;
                (w, w)
            }
            (None, h) => {
                let h = size("height", h, DEFAULT_SIZE)?;
                (h, h)
            }
            (w, h) => (size("width", w, 0)?, size("height", h, 0)?),
        };
        let quality = super::quality(quality, DEFAULT_QUALITY)?;
        Ok(IconParams {
            set,
            code,
            width,
            height,
            quality,
            output: output.map(|o| Output::named(o, OUTPUTS)).transpose()?,
        })
    }

    /// The `ETag` of the image in `output`: a digest of what decides its bytes.
    pub fn etag(&self, output: Output) -> String {
        let quality = if output == Output::Jpeg {
            self.quality.to_string()
        } else {
            String::new()
        };
        super::etag(&[
            "icon1",
            self.set.path,
            &self.code,
            &self.width.to_string(),
            &self.height.to_string(),
            &quality,
            output.extension(),
        ])
    }
}

/// The icon of `params` in `output`. CPU-bound: run it on the blocking pool.
pub fn render(params: &IconParams, output: Output) -> Result<Vec<u8>, AppError> {
    let failed = |what: &str| {
        AppError::Internal(anyhow::anyhow!(
            "{} icon {}: {what}",
            params.set.kind,
            params.code
        ))
    };
    let source = params
        .set
        .svg(&params.code)
        .ok_or_else(|| failed("not bundled"))?;
    let pixmap = super::rasterise(source, params.width, params.height, super::Fit::Contain)
        .map_err(|err| failed(&err))?;
    let rgba: Vec<u8> = pixmap
        .pixels()
        .iter()
        .flat_map(|p| {
            let c = p.demultiply();
            [c.red(), c.green(), c.blue(), c.alpha()]
        })
        .collect();
    output::encode_rgba(&rgba, params.width, params.height, output, params.quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_icon_parses_and_draws() {
        for (set, count) in [(&BROWSERS, 14), (&CREDIT_CARDS, 17)] {
            let mut drawn = 0;
            for code in set.codes() {
                let params = IconParams::new(set, Some(code), Some(16), None, None, None).unwrap();
                let png = render(&params, Output::Png).unwrap_or_else(|e| panic!("{code}: {e:?}"));
                let img = image::load_from_memory(&png).unwrap().to_rgba8();
                assert!(
                    img.pixels().any(|p| p.0[3] > 0),
                    "{} {code} draws something",
                    set.path
                );
                drawn += 1;
            }
            assert_eq!(drawn, count, "{}", set.path);
        }
    }

    #[test]
    fn codes_sizes_and_quality_are_checked() {
        let err = |r: Result<IconParams, AppError>| match r {
            Err(AppError::Invalid { field, .. }) => field,
            Ok(_) => "ok".into(),
            Err(other) => panic!("{other:?}"),
        };
        let new = |code, w, h, q, o| IconParams::new(&CREDIT_CARDS, code, w, h, q, o);
        assert_eq!(err(new(Some("VISA"), None, None, None, None)), "ok");
        assert_eq!(
            err(new(Some("Union-China-Pay"), None, None, None, None)),
            "ok"
        );
        assert_eq!(err(new(Some("zz"), None, None, None, None)), "code");
        assert_eq!(err(new(Some("vi sa"), None, None, None, None)), "code");
        assert_eq!(err(new(Some("../visa"), None, None, None, None)), "code");
        assert_eq!(err(new(Some(""), None, None, None, None)), "code");
        assert_eq!(err(new(Some("visa"), Some(0), None, None, None)), "width");
        assert_eq!(
            err(new(Some("visa"), None, Some(2001), None, None)),
            "height"
        );
        assert_eq!(
            err(new(Some("visa"), None, None, Some(-1), None)),
            "quality"
        );
        assert_eq!(
            err(new(Some("visa"), None, None, None, Some("svg"))),
            "output"
        );
        let p = new(Some("visa"), None, Some(40), None, None).unwrap();
        assert_eq!((p.width, p.height), (40, 40));
    }
}
