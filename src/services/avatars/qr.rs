//! QR codes: the text (at most [`MAX_TEXT_BYTES`]) encoded at error-correction
//! level M, drawn black on white as a square of `size` pixels with a quiet zone of
//! `margin` modules, as PNG or SVG. The same parameters always give the same
//! bytes, which is what the `ETag` rests on.

use qrcode::{Color, EcLevel, QrCode};

use super::output::{self, Output};
use super::{invalid, size};
use crate::error::AppError;

/// Longest text encoded, in UTF-8 bytes (level M holds up to 2,331).
pub const MAX_TEXT_BYTES: usize = 2048;
/// Widest quiet zone, in modules.
pub const MAX_MARGIN: u32 = 10;
pub const DEFAULT_SIZE: u32 = 400;
/// Largest side, in pixels: Appwrite's bound for QR codes (other avatars take up
/// to [`super::MAX_SIZE`]).
pub const MAX_QR_SIZE: u32 = 1000;
pub const DEFAULT_MARGIN: u32 = 1;
/// The formats a QR code is answered in, the first by default.
pub const OUTPUTS: &[Output] = &[Output::Png, Output::Svg, Output::Jpeg, Output::Webp];
/// JPEG blurs the edges of modules below this.
const JPEG_QUALITY: u8 = 95;

/// A QR code asked for, its parameters checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrParams {
    pub text: String,
    pub size: u32,
    pub margin: u32,
    /// `None`: the request's `Accept` header decides.
    pub output: Option<Output>,
    pub download: bool,
}

impl QrParams {
    /// Checks raw parameters; each error names its field.
    pub fn new(
        text: Option<&str>,
        size_px: Option<i64>,
        margin: Option<i64>,
        output: Option<&str>,
        download: bool,
    ) -> Result<QrParams, AppError> {
        let text = text.ok_or_else(|| invalid("text", "the text to encode is required"))?;
        if text.is_empty() {
            return Err(invalid("text", "must not be empty"));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(invalid(
                "text",
                format!("must be at most {MAX_TEXT_BYTES} bytes"),
            ));
        }
        let margin = match margin {
            None => DEFAULT_MARGIN,
            Some(n) if (0..=i64::from(MAX_MARGIN)).contains(&n) => n as u32,
            Some(_) => {
                return Err(invalid(
                    "margin",
                    format!("must be 0 to {MAX_MARGIN} modules"),
                ));
            }
        };
        let size = match size_px {
            Some(n) if n > i64::from(MAX_QR_SIZE) => {
                return Err(invalid(
                    "size",
                    format!("must be 1 to {MAX_QR_SIZE} pixels"),
                ));
            }
            given => size("size", given, DEFAULT_SIZE)?,
        };
        Ok(QrParams {
            text: text.to_string(),
            size,
            margin,
            output: output.map(|o| Output::named(o, OUTPUTS)).transpose()?,
            download,
        })
    }

    /// The `ETag` of the image in `output`: a digest of what decides its bytes.
    pub fn etag(&self, output: Output) -> String {
        super::etag(&[
            "qr1",
            &self.text,
            &self.size.to_string(),
            &self.margin.to_string(),
            output.extension(),
        ])
    }
}

/// The module matrix of `text`, dark modules `true`, row by row, and its width.
fn modules(text: &str) -> Result<(Vec<bool>, usize), AppError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|err| invalid("text", format!("cannot be encoded as a QR code: {err}")))?;
    let width = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    Ok((dark, width))
}

/// The QR code of `params` in `output`. CPU-bound: run it on the blocking pool.
pub fn render(params: &QrParams, output: Output) -> Result<Vec<u8>, AppError> {
    let (dark, width) = modules(&params.text)?;
    let margin = params.margin as usize;
    let total = width + 2 * margin;
    let is_dark = |x: usize, y: usize| {
        x >= margin
            && y >= margin
            && x < margin + width
            && y < margin + width
            && dark[(y - margin) * width + (x - margin)]
    };
    match output {
        Output::Svg => Ok(svg(&dark, width, margin, params.size).into_bytes()),
        raster => {
            // Each pixel takes the module under its centre, so any size is exact.
            let side = params.size as usize;
            let module_of = |p: usize| (2 * p + 1) * total / (2 * side);
            let columns: Vec<usize> = (0..side).map(module_of).collect();
            let mut pixels = Vec::with_capacity(side * side);
            for py in 0..side {
                let y = module_of(py);
                pixels.extend(
                    columns
                        .iter()
                        .map(|&x| if is_dark(x, y) { 0u8 } else { 255u8 }),
                );
            }
            if raster == Output::Png {
                return output::png_luma(&pixels, params.size, params.size);
            }
            let rgb: Vec<u8> = pixels.iter().flat_map(|&v| [v, v, v]).collect();
            output::encode_rgb(&rgb, params.size, params.size, raster, JPEG_QUALITY)
        }
    }
}

/// The SVG: one path of unit squares in a viewBox of modules, scaled to `size`.
fn svg(dark: &[bool], width: usize, margin: usize, size: u32) -> String {
    let total = width + 2 * margin;
    let mut path = String::new();
    for y in 0..width {
        for x in 0..width {
            if dark[y * width + x] {
                path.push_str(&format!("M{},{}h1v1h-1z", x + margin, y + margin));
            }
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" \
         viewBox=\"0 0 {total} {total}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{total}\" height=\"{total}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str, size: i64, margin: i64) -> QrParams {
        QrParams::new(Some(text), Some(size), Some(margin), None, false).unwrap()
    }

    #[test]
    fn a_png_has_the_size_asked_and_a_white_margin() {
        let p = params("https://example.com", 250, 4);
        let bytes = render(&p, Output::Png).unwrap();
        let img = image::load_from_memory(&bytes).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (250, 250));
        assert_eq!(img.get_pixel(0, 0).0[0], 255, "the quiet zone is white");
        // 21 + 8 modules over 250 px: the finder pattern starts dark at module 4.
        let first_dark = (0..250).find(|&x| img.get_pixel(x, 60).0[0] == 0);
        assert!(
            first_dark.is_some_and(|x| (30..40).contains(&x)),
            "{first_dark:?}"
        );
    }

    #[test]
    fn bounds_are_checked_before_drawing() {
        let long = "a".repeat(MAX_TEXT_BYTES + 1);
        for (text, size, margin, field) in [
            (Some(""), None, None, "text"),
            (None, None, None, "text"),
            (Some(long.as_str()), None, None, "text"),
            (Some("x"), Some(0), None, "size"),
            (Some("x"), Some(100_000), None, "size"),
            (Some("x"), Some(1001), None, "size"),
            (Some("x"), None, Some(-1), "margin"),
            (Some("x"), None, Some(11), "margin"),
        ] {
            match QrParams::new(text, size, margin, None, false) {
                Err(AppError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let longest = "é".repeat(MAX_TEXT_BYTES / 2);
        let p = params(&longest, 1000, 0);
        assert!(render(&p, Output::Svg).is_ok(), "the longest text encodes");
    }

    #[test]
    fn the_etag_follows_every_parameter_but_download() {
        let a = params("x", 100, 1);
        let mut b = a.clone();
        b.download = true;
        assert_eq!(a.etag(Output::Png), b.etag(Output::Png));
        assert_ne!(a.etag(Output::Png), a.etag(Output::Svg));
        assert_ne!(a.etag(Output::Png), params("x", 101, 1).etag(Output::Png));
        assert_ne!(a.etag(Output::Png), params("x", 100, 2).etag(Output::Png));
        assert_ne!(a.etag(Output::Png), params("y", 100, 1).etag(Output::Png));
    }
}
