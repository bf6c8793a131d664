//! Flags: the country flags bundled in `data/avatars/flags/` (ISO 3166-1 alpha-2,
//! 4:3 SVGs from flag-icons; see `docs/avatars-data.md`), rasterised on demand at
//! the size asked for — the flag scaled to cover it and centred — as PNG, JPEG or
//! WebP.

use super::output::{self, Output};
use super::{invalid, size};
use crate::error::AppError;

/// Every bundled flag, by lower-case code, sorted (listed by `build.rs`).
static FLAGS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/flags.rs"));

pub const DEFAULT_WIDTH: u32 = 100;
pub const DEFAULT_QUALITY: u8 = 90;
/// The formats a flag is answered in, the first by default.
pub const OUTPUTS: &[Output] = &[Output::Png, Output::Jpeg, Output::Webp];

/// The SVG of the flag `code` (lower case), if bundled.
pub fn svg(code: &str) -> Option<&'static [u8]> {
    FLAGS
        .binary_search_by(|(c, _)| (*c).cmp(code))
        .ok()
        .map(|i| FLAGS[i].1)
}

/// The codes of the bundled flags.
pub fn codes() -> impl Iterator<Item = &'static str> {
    FLAGS.iter().map(|(c, _)| *c)
}

/// A flag asked for, its parameters checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagParams {
    /// Lower case, and bundled.
    pub code: String,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    /// `None`: the request's `Accept` header decides.
    pub output: Option<Output>,
}

impl FlagParams {
    /// Checks raw parameters: a malformed code, size or quality is
    /// `INVALID_AVATAR_PARAMETER`, as is a well-formed code with no flag
    /// (Appwrite's whitelist). Without a height, the flag keeps its 4:3 shape.
    pub fn new(
        code: Option<&str>,
        width: Option<i64>,
        height: Option<i64>,
        quality: Option<i64>,
        output: Option<&str>,
    ) -> Result<FlagParams, AppError> {
        let code = code.ok_or_else(|| invalid("code", "a country code is required"))?;
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid(
                "code",
                "must be an ISO 3166-1 alpha-2 country code (two letters)",
            ));
        }
        let code = code.to_ascii_lowercase();
        if svg(&code).is_none() {
            return Err(invalid("code", "no country has that code"));
        }
        let (width, height) = match (width, height) {
            (None, None) => (DEFAULT_WIDTH, DEFAULT_WIDTH * 3 / 4),
            (w, None) => {
                let w = size("width", w, DEFAULT_WIDTH)?;
                (w, (w * 3 / 4).max(1))
            }
            (None, h) => {
                let h = size("height", h, DEFAULT_WIDTH)?;
                ((h * 4 / 3).clamp(1, super::MAX_SIZE), h)
            }
            (w, h) => (size("width", w, 0)?, size("height", h, 0)?),
        };
        let quality = super::quality(quality, DEFAULT_QUALITY)?;
        Ok(FlagParams {
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
            "flag1",
            &self.code,
            &self.width.to_string(),
            &self.height.to_string(),
            &quality,
            output.extension(),
        ])
    }
}

/// The flag of `params` in `output`. CPU-bound: run it on the blocking pool.
pub fn render(params: &FlagParams, output: Output) -> Result<Vec<u8>, AppError> {
    let failed = |what: &str| AppError::Internal(anyhow::anyhow!("flag {}: {what}", params.code));
    let source = svg(&params.code).ok_or_else(|| failed("not bundled"))?;
    let pixmap = super::rasterise(source, params.width, params.height, super::Fit::Cover)
        .map_err(|err| failed(&err))?;
    // Flags are opaque; anything left transparent is drawn on white.
    let rgb: Vec<u8> = pixmap
        .pixels()
        .iter()
        .flat_map(|p| {
            let a = u16::from(p.alpha());
            let white = 255 - a;
            [
                (u16::from(p.red()) + white) as u8,
                (u16::from(p.green()) + white) as u8,
                (u16::from(p.blue()) + white) as u8,
            ]
        })
        .collect();
    output::encode_rgb(&rgb, params.width, params.height, output, params.quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_flag_parses_and_draws() {
        let mut count = 0;
        for code in codes() {
            let params = FlagParams::new(Some(code), Some(8), None, None, None).unwrap();
            render(&params, Output::Png).unwrap_or_else(|e| panic!("{code}: {e:?}"));
            count += 1;
        }
        assert_eq!(count, 250);
    }

    #[test]
    fn a_flag_has_its_colours_where_they_belong() {
        let params = FlagParams::new(Some("DE"), Some(40), Some(30), None, None).unwrap();
        let png = render(&params, Output::Png).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (40, 30));
        let near =
            |p: &image::Rgb<u8>, c: [u8; 3]| p.0.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 8);
        assert!(near(img.get_pixel(20, 2), [0, 0, 1]), "black on top");
        assert!(
            near(img.get_pixel(20, 15), [255, 0, 0]),
            "red in the middle"
        );
        assert!(near(img.get_pixel(20, 28), [255, 204, 0]), "gold below");
    }

    #[test]
    fn codes_sizes_and_quality_are_checked() {
        let err = |r: Result<FlagParams, AppError>| match r {
            Err(AppError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(FlagParams::new(Some("zz"), None, None, None, None)),
            "code"
        );
        assert_eq!(
            err(FlagParams::new(Some("deu"), None, None, None, None)),
            "code"
        );
        assert_eq!(
            err(FlagParams::new(Some("d1"), None, None, None, None)),
            "code"
        );
        assert_eq!(
            err(FlagParams::new(Some("de"), Some(0), None, None, None)),
            "width"
        );
        assert_eq!(
            err(FlagParams::new(Some("de"), None, Some(100_000), None, None)),
            "height"
        );
        assert_eq!(
            err(FlagParams::new(Some("de"), None, None, Some(101), None)),
            "quality"
        );
        assert_eq!(
            err(FlagParams::new(Some("de"), None, None, None, Some("svg"))),
            "output"
        );
        let p = FlagParams::new(Some("de"), None, Some(2000), None, None).unwrap();
        assert_eq!((p.width, p.height), (2000, 2000));
        let p = FlagParams::new(Some("de"), Some(1), None, None, None).unwrap();
        assert_eq!((p.width, p.height), (1, 1));
    }
}
