//! Image previews for Storage's
//! `/v1/storage/buckets/{bucket}/files/{file}/preview` endpoint: the query parameters
//! (same names and ranges as Appwrite's `getFilePreview`), decoding with limits, the
//! resize/crop, the effects, encoding, and the type icon shown for files that are not
//! images.
//!
//! The work is CPU-bound and synchronous; callers run [`render`] on a blocking thread.
//!
//! # Order of effects
//! 1. decode (JPEG, PNG, GIF's first frame, WebP), refusing images over the pixel limit
//!    from the header alone, before any pixel buffer is allocated;
//! 2. apply the EXIF orientation, so photos appear the way cameras meant them;
//! 3. resize: with `width` and `height` both set, scale to cover that box and crop to
//!    exactly `width`×`height`, keeping the part `gravity` names (ImageMagick's
//!    `-resize WxH^ -gravity G -extent WxH`); with one of them set, scale to it keeping
//!    the aspect ratio (the other side rounded to the nearest pixel, so 1200×800 at
//!    width 400 gives 400×267); with neither, keep the original size, scaled down to
//!    fit 4000×4000 when larger. Images are scaled
//!    up as well as down, as Appwrite does, so the output is always the size asked
//!    for. A side derived from the aspect ratio is capped at 4000 pixels too: a very
//!    thin image then comes out smaller on the side that was asked for;
//! 4. `rotation`, clockwise (the canvas grows to fit angles that are not multiples of
//!    90°, the new corners transparent; a canvas over twice the image's area, and over
//!    2×4000², is refused with `PREVIEW_FAILED`);
//! 5. `borderRadius`: the corners outside the rounded rectangle become transparent;
//! 6. `borderWidth`/`borderColor`: a frame around the image, following rounded corners;
//! 7. `opacity`: multiplies the alpha channel;
//! 8. `background`: composites everything over that colour;
//! 9. encode. Formats without alpha (JPEG) are composited over `background`, or white.
//!
//! Quality applies to JPEG only (default 90). PNG is lossless, GIF has its own fixed
//! palette quantisation, and the WebP encoder available is lossless-only, so `quality`
//! does not change them.

mod icon;
mod params;
mod raster;

#[cfg(test)]
mod tests;

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use fast_image_resize::images::{Image as FirImage, ImageRef as FirImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{self, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::metadata::Orientation;

use crate::error::codes;
use image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageError, ImageFormat,
    ImageReader, Limits, RgbaImage,
};

pub use icon::Category;
pub use params::{
    Gravity, MAX_BORDER_RADIUS, MAX_BORDER_WIDTH, MAX_DIMENSION, OutputFormat, PreviewParams, Rgb,
};

/// Largest image, in pixels, that a preview decodes (about 200 MB as RGBA).
pub const MAX_INPUT_PIXELS: u64 = 50_000_000;

/// JPEG quality when the client leaves it at -1.
pub const DEFAULT_QUALITY: u8 = 90;

/// Size of the type icon when the client gives neither width nor height.
pub const DEFAULT_ICON_SIZE: u32 = 100;

/// An encoded preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub mime_type: &'static str,
}

/// Why a preview could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// `INVALID_PREVIEW_PARAMETER`: a query parameter is unknown, repeated or out of
    /// range; `name` says which.
    #[error("invalid preview parameter `{name}`: {reason}")]
    InvalidParam { name: &'static str, reason: String },
    /// `IMAGE_TOO_LARGE`: the image's header declares more pixels than the limit.
    /// `width` and `height` are 0 when the decoder refused before reporting them.
    #[error("the image is {width}×{height} pixels, over the {limit}-pixel preview limit")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    /// `IMAGE_CORRUPT`: the file claims to be an image but cannot be decoded.
    #[error("the image cannot be decoded: {0}")]
    Corrupt(String),
    /// `PREVIEW_FAILED`: resizing or encoding failed (e.g. a size the output format
    /// cannot hold).
    #[error("the preview cannot be produced: {0}")]
    Encode(String),
}

impl PreviewError {
    /// The stable code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            PreviewError::InvalidParam { .. } => codes::INVALID_PREVIEW_PARAMETER,
            PreviewError::TooManyPixels { .. } => codes::IMAGE_TOO_LARGE,
            PreviewError::Corrupt(_) => codes::IMAGE_CORRUPT,
            PreviewError::Encode(_) => codes::PREVIEW_FAILED,
        }
    }
}

/// Renders the preview of a file whose sniffed MIME type is `mime_type`. JPEG, PNG, GIF
/// and WebP files are decoded (the bytes' own signature wins over the MIME type when
/// they disagree); anything else gets [`render_icon`]. Images with more than
/// `max_input_pixels` pixels are refused (normally [`MAX_INPUT_PIXELS`]).
///
/// The default output format is the input's format. A source given as an owned
/// buffer is let go once decoded: a large image's encoded bytes need not stay
/// beside its pixels through the resize.
pub fn render(
    input: impl AsRef<[u8]>,
    mime_type: &str,
    params: &PreviewParams,
    max_input_pixels: u64,
) -> Result<Rendered, PreviewError> {
    let Some(claimed) = OutputFormat::from_mime_type(mime_type) else {
        return render_icon(mime_type, params);
    };
    let (decoded, format) = decode(input.as_ref(), claimed, max_input_pixels)?;
    drop(input);
    let resized = resize(decoded, params)?;
    finish(resized, params, params.output.unwrap_or(format))
}

/// Renders the type icon for a file of `mime_type` at the requested size (square when
/// only one side is given, [`DEFAULT_ICON_SIZE`] when neither is), with the same
/// effects as an image preview. The default output format is PNG.
pub fn render_icon(mime_type: &str, params: &PreviewParams) -> Result<Rendered, PreviewError> {
    let (w, h) = match (params.width, params.height) {
        (0, 0) => (DEFAULT_ICON_SIZE, DEFAULT_ICON_SIZE),
        (w, 0) => (w, w),
        (0, h) => (h, h),
        (w, h) => (w, h),
    };
    let img = icon::draw(Category::from_mime_type(mime_type), w, h);
    finish(img, params, params.output.unwrap_or(OutputFormat::Png))
}

/// Decodes the first frame, oriented per EXIF. Returns the format actually found.
fn decode(
    input: &[u8],
    claimed: OutputFormat,
    max_pixels: u64,
) -> Result<(DynamicImage, OutputFormat), PreviewError> {
    if let Some((width, height)) = png_header_dimensions(input) {
        check_pixels(width, height, max_pixels)?;
    }
    // The decoders parse untrusted bytes; should one of them have a bug that panics,
    // that must become an error for this request, not a failed worker.
    catch_unwind(AssertUnwindSafe(|| {
        decode_inner(input, claimed, max_pixels)
    }))
    .unwrap_or_else(|_| Err(PreviewError::Corrupt("the decoder failed".into())))
}

fn decode_inner(
    input: &[u8],
    claimed: OutputFormat,
    max_pixels: u64,
) -> Result<(DynamicImage, OutputFormat), PreviewError> {
    let mut reader = ImageReader::new(Cursor::new(input));
    reader.set_format(image_format(claimed));
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| PreviewError::Corrupt(e.to_string()))?;
    let format = match reader.format() {
        Some(ImageFormat::Jpeg) => OutputFormat::Jpeg,
        Some(ImageFormat::Png) => OutputFormat::Png,
        Some(ImageFormat::Gif) => OutputFormat::Gif,
        Some(ImageFormat::WebP) => OutputFormat::Webp,
        Some(other) => {
            return Err(PreviewError::Corrupt(format!(
                "the file is {other:?}, not the {} its type says",
                claimed.extension()
            )));
        }
        None => return Err(PreviewError::Corrupt("unknown image format".into())),
    };
    let mut limits = Limits::default();
    // Up to 8 bytes a pixel (16-bit RGBA) plus decoder working space; the pixel count
    // itself is checked below, this only bounds what the decoders may allocate.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let too_large = |width, height| PreviewError::TooManyPixels {
        width,
        height,
        limit: max_pixels,
    };

    // Building the decoder reads only the header.
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        ImageError::Limits(_) => too_large(0, 0),
        e => PreviewError::Corrupt(e.to_string()),
    })?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PreviewError::Corrupt("the image has no pixels".into()));
    }
    check_pixels(width, height, max_pixels)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        ImageError::Limits(_) => too_large(width, height),
        e => PreviewError::Corrupt(e.to_string()),
    })?;
    img.apply_orientation(orientation);
    Ok((img, format))
}

fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), PreviewError> {
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(PreviewError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        });
    }
    Ok(())
}

/// A PNG's dimensions straight from its IHDR, which sits at a fixed offset. The PNG
/// decoder only reports dimensions after reading up to the first data chunk, so a
/// truncated file declaring huge dimensions would otherwise be called corrupt rather
/// than too large.
fn png_header_dimensions(input: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if input.len() < 24 || !input.starts_with(SIGNATURE) || &input[12..16] != b"IHDR" {
        return None;
    }
    let be =
        |at: usize| u32::from_be_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]);
    Some((be(16), be(20)))
}

fn image_format(f: OutputFormat) -> ImageFormat {
    match f {
        OutputFormat::Jpeg => ImageFormat::Jpeg,
        OutputFormat::Png => ImageFormat::Png,
        OutputFormat::Gif => ImageFormat::Gif,
        OutputFormat::Webp => ImageFormat::WebP,
    }
}

/// The output size and, for cover-and-crop, the source window `(left, top, width,
/// height)` that maps onto it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    width: u32,
    height: u32,
    crop: Option<(f64, f64, f64, f64)>,
}

fn plan(src_w: u32, src_h: u32, params: &PreviewParams) -> Plan {
    let (sw, sh) = (u64::from(src_w), u64::from(src_h));
    let max = u64::from(MAX_DIMENSION);
    // Rounded to the nearest pixel, at least one.
    let scale = |n: u64, num: u64, den: u64| ((n * num * 2 + den) / (den * 2)).max(1);
    let fit = |w: u64, h: u64| Plan {
        width: w as u32,
        height: h as u32,
        crop: None,
    };
    match (u64::from(params.width), u64::from(params.height)) {
        // A preview is never larger than one asked for at the largest size: an
        // image near the pixel limit would otherwise be turned, framed and encoded
        // at full size, several times its decoded size in memory.
        (0, 0) if sw <= max && sh <= max => fit(sw, sh),
        (0, 0) if sw >= sh => fit(max, scale(sh, max, sw)),
        (0, 0) => fit(scale(sw, max, sh), max),
        (w, 0) => {
            let h = scale(sh, w, sw);
            if h > max {
                fit(scale(sw, max, sh), max)
            } else {
                fit(w, h)
            }
        }
        (0, h) => {
            let w = scale(sw, h, sh);
            if w > max {
                fit(max, scale(sh, max, sw))
            } else {
                fit(w, h)
            }
        }
        (w, h) => {
            let (fw, fh) = (sw as f64, sh as f64);
            let s = (w as f64 / fw).max(h as f64 / fh);
            let cw = (w as f64 / s).min(fw);
            let ch = (h as f64 / s).min(fh);
            let (ax, ay) = params.gravity.anchor();
            Plan {
                width: w as u32,
                height: h as u32,
                crop: Some(((fw - cw) * ax, (fh - ch) * ay, cw, ch)),
            }
        }
    }
}

/// Resizes (and crops) per the parameters, returning straight-alpha RGBA.
fn resize(img: DynamicImage, params: &PreviewParams) -> Result<RgbaImage, PreviewError> {
    let (src_w, src_h) = (img.width(), img.height());
    let plan = plan(src_w, src_h, params);
    let full = (0.0, 0.0, f64::from(src_w), f64::from(src_h));
    if plan.width == src_w && plan.height == src_h && plan.crop.is_none_or(|c| c == full) {
        return Ok(img.into_rgba8());
    }
    // Opaque images are resized as RGB: a quarter less data, which matters for the
    // multi-megapixel photos that are the common case.
    let (buf, pixel_type) = if img.color().has_alpha() {
        (img.into_rgba8().into_raw(), PixelType::U8x4)
    } else {
        (img.into_rgb8().into_raw(), PixelType::U8x3)
    };
    let failed = |e: &dyn std::fmt::Display| PreviewError::Encode(format!("resize: {e}"));
    let src = FirImageRef::new(src_w, src_h, &buf, pixel_type).map_err(|e| failed(&e))?;
    let mut dst = FirImage::new(plan.width, plan.height, pixel_type);
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    if let Some((left, top, w, h)) = plan.crop {
        options = options.crop(left, top, w, h);
    }
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| failed(&e))?;
    let out = dst.into_vec();
    let rgba = match pixel_type {
        PixelType::U8x4 => out,
        _ => out
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
    };
    RgbaImage::from_raw(plan.width, plan.height, rgba)
        .ok_or_else(|| PreviewError::Encode("resize: unexpected buffer size".into()))
}

/// Steps 4–9 of the module docs, on an already sized image.
fn finish(
    img: RgbaImage,
    params: &PreviewParams,
    output: OutputFormat,
) -> Result<Rendered, PreviewError> {
    // A thin image turned by an odd angle needs a canvas far larger than itself (a
    // 50 000 000×1 image at 45° would need 35 million pixels a side), so the canvas is
    // held to twice the image's area, which any roughly square image stays within.
    let (rw, rh) = raster::rotated_size(img.width(), img.height(), params.rotation);
    let area = u64::from(img.width()) * u64::from(img.height());
    let limit = area
        .max(u64::from(MAX_DIMENSION) * u64::from(MAX_DIMENSION))
        .saturating_mul(2);
    if rw.saturating_mul(rh) > limit || rw > u64::from(u32::MAX) || rh > u64::from(u32::MAX) {
        return Err(PreviewError::Encode(format!(
            "rotating this {}×{} image by {}° would need a {rw}×{rh} canvas; give a width or height",
            img.width(),
            img.height(),
            params.rotation
        )));
    }
    let mut img = raster::rotate(img, params.rotation);
    raster::round_corners(&mut img, params.border_radius);
    let mut img = raster::add_border(
        img,
        params.border_width,
        params.border_color,
        params.border_radius,
    );
    raster::apply_opacity(&mut img, params.opacity);
    if let Some(bg) = params.background {
        raster::fill_background(&mut img, bg);
    } else if !output.has_alpha() {
        raster::fill_background(&mut img, Rgb::WHITE);
    }
    encode(img, output, params.quality)
}

fn encode(
    img: RgbaImage,
    output: OutputFormat,
    quality: Option<u8>,
) -> Result<Rendered, PreviewError> {
    let (w, h) = img.dimensions();
    let mut bytes = Vec::new();
    let failed = |e: ImageError| PreviewError::Encode(e.to_string());
    // Fully opaque images drop the alpha channel; JPEG never has one (flattened above).
    let (data, color) = if !output.has_alpha() || raster::is_opaque(&img) {
        let rgb: Vec<u8> = img
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2]])
            .collect();
        (rgb, ExtendedColorType::Rgb8)
    } else {
        (img.into_raw(), ExtendedColorType::Rgba8)
    };
    match output {
        OutputFormat::Jpeg => {
            let q = quality.unwrap_or(DEFAULT_QUALITY).clamp(1, 100);
            JpegEncoder::new_with_quality(&mut bytes, q).write_image(&data, w, h, color)
        }
        OutputFormat::Png => PngEncoder::new_with_quality(
            &mut bytes,
            png::CompressionType::Fast,
            png::FilterType::Adaptive,
        )
        .write_image(&data, w, h, color),
        OutputFormat::Gif => {
            // Speed 10 of 30: NeuQuant palette quality is fine for previews, and the
            // slowest settings take seconds on large frames.
            GifEncoder::new_with_speed(&mut bytes, 10).encode(&data, w, h, color)
        }
        OutputFormat::Webp => WebPEncoder::new_lossless(&mut bytes).write_image(&data, w, h, color),
    }
    .map_err(failed)?;
    Ok(Rendered {
        bytes,
        mime_type: output.mime_type(),
    })
}
