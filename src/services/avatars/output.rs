//! The image formats avatars are answered in, picked by the `output` parameter
//! or else by the request's `Accept` header, and the raster encoders.

use image::ExtendedColorType;
use image::ImageEncoder as _;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{self, PngEncoder};
use image::codecs::webp::WebPEncoder;

use crate::error::AppError;

/// A format an avatar can be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Png,
    Svg,
    Jpeg,
    Webp,
}

impl Output {
    pub fn mime_type(self) -> &'static str {
        match self {
            Output::Png => "image/png",
            Output::Svg => "image/svg+xml",
            Output::Jpeg => "image/jpeg",
            Output::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Output::Png => "png",
            Output::Svg => "svg",
            Output::Jpeg => "jpg",
            Output::Webp => "webp",
        }
    }

    /// The format called `name` (`png`, `svg`, `jpg` or `jpeg`, `webp`), among
    /// those `offered`.
    pub fn named(name: &str, offered: &[Output]) -> Result<Output, AppError> {
        let name = if name.eq_ignore_ascii_case("jpeg") {
            "jpg"
        } else {
            name
        };
        offered
            .iter()
            .copied()
            .find(|o| o.extension().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<_> = offered.iter().map(|o| o.extension()).collect();
                super::invalid("output", format!("must be one of {}", names.join(", ")))
            })
    }

    /// The format an `Accept` header prefers among `offered` (the first of
    /// `offered` when the header allows any image or is absent); `None` when it
    /// allows none of them.
    pub fn negotiate(accept: Option<&str>, offered: &[Output]) -> Option<Output> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return offered.first().copied();
        };
        let mut best: Option<(f32, usize, Output)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if quality <= 0.0 {
                continue;
            }
            for (rank, output) in offered.iter().enumerate() {
                let matches = media == output.mime_type() || media == "image/*" || media == "*/*";
                // The more specific match wins at equal quality, then the server's order.
                let rank = if media == output.mime_type() {
                    rank
                } else {
                    offered.len() + rank
                };
                if matches && best.is_none_or(|(q, r, _)| quality > q || (quality == q && rank < r))
                {
                    best = Some((quality, rank, *output));
                }
            }
        }
        best.map(|(_, _, output)| output)
    }
}

/// A grey image (one byte a pixel) as PNG.
pub fn png_luma(pixels: &[u8], width: u32, height: u32) -> Result<Vec<u8>, AppError> {
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(
        &mut bytes,
        png::CompressionType::Fast,
        png::FilterType::Adaptive,
    )
    .write_image(pixels, width, height, ExtendedColorType::L8)
    .map_err(|err| AppError::Internal(anyhow::anyhow!("encoding an avatar failed: {err}")))?;
    Ok(bytes)
}

/// An opaque RGB image in a raster `output`; `quality` (0–100) counts for JPEG
/// only (WebP is encoded lossless).
pub fn encode_rgb(
    pixels: &[u8],
    width: u32,
    height: u32,
    output: Output,
    quality: u8,
) -> Result<Vec<u8>, AppError> {
    let mut bytes = Vec::new();
    let color = ExtendedColorType::Rgb8;
    let written = match output {
        Output::Png => PngEncoder::new_with_quality(
            &mut bytes,
            png::CompressionType::Fast,
            png::FilterType::Adaptive,
        )
        .write_image(pixels, width, height, color),
        Output::Jpeg => JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
            .write_image(pixels, width, height, color),
        Output::Webp => {
            WebPEncoder::new_lossless(&mut bytes).write_image(pixels, width, height, color)
        }
        Output::Svg => {
            return Err(AppError::Internal(anyhow::anyhow!(
                "SVG is not a raster format"
            )));
        }
    };
    written
        .map_err(|err| AppError::Internal(anyhow::anyhow!("encoding an avatar failed: {err}")))?;
    Ok(bytes)
}

/// An RGBA image (not premultiplied) in a raster `output`: PNG and WebP keep its
/// transparency, JPEG has none and lays it on white; `quality` as [`encode_rgb`].
pub fn encode_rgba(
    pixels: &[u8],
    width: u32,
    height: u32,
    output: Output,
    quality: u8,
) -> Result<Vec<u8>, AppError> {
    let color = ExtendedColorType::Rgba8;
    let mut bytes = Vec::new();
    let written = match output {
        Output::Png => PngEncoder::new_with_quality(
            &mut bytes,
            png::CompressionType::Fast,
            png::FilterType::Adaptive,
        )
        .write_image(pixels, width, height, color),
        Output::Webp => {
            WebPEncoder::new_lossless(&mut bytes).write_image(pixels, width, height, color)
        }
        Output::Jpeg | Output::Svg => {
            let rgb: Vec<u8> = pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let a = u16::from(p[3]);
                    let on_white = |c: u8| ((u16::from(c) * a + 255 * (255 - a)) / 255) as u8;
                    [on_white(p[0]), on_white(p[1]), on_white(p[2])]
                })
                .collect();
            return encode_rgb(&rgb, width, height, output, quality);
        }
    };
    written
        .map_err(|err| AppError::Internal(anyhow::anyhow!("encoding an avatar failed: {err}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[Output] = &[Output::Png, Output::Svg];

    #[test]
    fn accept_picks_the_preferred_offered_format() {
        assert_eq!(Output::negotiate(None, BOTH), Some(Output::Png));
        assert_eq!(Output::negotiate(Some("*/*"), BOTH), Some(Output::Png));
        assert_eq!(
            Output::negotiate(Some("image/svg+xml"), BOTH),
            Some(Output::Svg)
        );
        assert_eq!(
            Output::negotiate(Some("image/*;q=0.5, image/svg+xml"), BOTH),
            Some(Output::Svg)
        );
        assert_eq!(
            Output::negotiate(Some("image/svg+xml;q=0.2, image/png"), BOTH),
            Some(Output::Png)
        );
        assert_eq!(Output::negotiate(Some("text/html"), BOTH), None);
        assert_eq!(Output::negotiate(Some("image/png;q=0"), BOTH), None);
    }
}
