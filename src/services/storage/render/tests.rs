//! Tests of the preview module: parameter parsing, sizing, effects, encodings, limits
//! and hostile input.

use std::io::Cursor;
use std::time::Instant;

use image::{DynamicImage, GenericImageView, ImageFormat, Rgb as PxRgb, RgbImage, RgbaImage};

use super::*;

fn q(pairs: &[(&str, &str)]) -> Result<PreviewParams, PreviewError> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    PreviewParams::from_query(&owned)
}

fn params(pairs: &[(&str, &str)]) -> PreviewParams {
    q(pairs).expect("valid params")
}

fn invalid_name(pairs: &[(&str, &str)]) -> &'static str {
    match q(pairs) {
        Err(PreviewError::InvalidParam { name, .. }) => name,
        other => panic!("expected InvalidParam for {pairs:?}, got {other:?}"),
    }
}

/// A picture whose every region differs: red grows left→right, green top→bottom.
fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        PxRgb([
            (x * 255 / w.max(2).saturating_sub(1)).min(255) as u8,
            (y * 255 / h.max(2).saturating_sub(1)).min(255) as u8,
            128,
        ])
    })
}

fn encode_as(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

fn png_of(img: DynamicImage) -> Vec<u8> {
    encode_as(&img, ImageFormat::Png)
}

fn decode_out(r: &Rendered) -> DynamicImage {
    image::load_from_memory(&r.bytes).expect("output decodes")
}

fn render_png(input: &[u8], p: &PreviewParams) -> DynamicImage {
    let r = render(input, "image/png", p, MAX_INPUT_PIXELS).expect("render");
    decode_out(&r)
}

// ---- parameters ----

#[test]
fn defaults_from_empty_query() {
    let p = params(&[]);
    assert_eq!(p, PreviewParams::default());
    assert_eq!(p.gravity, Gravity::Center);
    assert_eq!(p.opacity, 1.0);
    assert_eq!(p.border_color, Rgb::BLACK);
}

#[test]
fn integer_ranges_accept_edges_and_refuse_just_outside() {
    let cases: [(&str, i64, i64); 6] = [
        ("width", 0, 4000),
        ("height", 0, 4000),
        ("quality", -1, 100),
        ("borderWidth", 0, 100),
        ("borderRadius", 0, 4000),
        ("rotation", -360, 360),
    ];
    for (name, min, max) in cases {
        for ok in [min, max] {
            q(&[(name, &ok.to_string())])
                .unwrap_or_else(|e| panic!("{name}={ok} should be accepted: {e}"));
        }
        for bad in [min - 1, max + 1] {
            let err = q(&[(name, &bad.to_string())]).unwrap_err();
            assert_eq!(err.code(), "INVALID_PREVIEW_PARAMETER");
            let msg = err.to_string();
            assert!(msg.contains(name), "{msg}");
            assert!(msg.contains(&format!("from {min} to {max}")), "{msg}");
        }
        assert_eq!(invalid_name(&[(name, "12abc")]), name);
        assert_eq!(invalid_name(&[(name, "1.5")]), name);
    }
    let p = params(&[
        ("width", "4000"),
        ("height", "1"),
        ("quality", "100"),
        ("borderWidth", "100"),
        ("borderRadius", "4000"),
        ("rotation", "-360"),
    ]);
    assert_eq!(
        (
            p.width,
            p.height,
            p.quality,
            p.border_width,
            p.border_radius,
            p.rotation
        ),
        (4000, 1, Some(100), 100, 4000, -360)
    );
    assert_eq!(params(&[("quality", "-1")]).quality, None);
    assert_eq!(params(&[("quality", "0")]).quality, Some(0));
}

#[test]
fn opacity_range() {
    assert_eq!(params(&[("opacity", "0")]).opacity, 0.0);
    assert_eq!(params(&[("opacity", "1")]).opacity, 1.0);
    assert_eq!(params(&[("opacity", "0.25")]).opacity, 0.25);
    for bad in ["-0.01", "1.01", "NaN", "inf", "half"] {
        let err = q(&[("opacity", bad)]).unwrap_err();
        assert!(
            matches!(
                err,
                PreviewError::InvalidParam {
                    name: "opacity",
                    ..
                }
            ),
            "{bad}"
        );
        assert!(err.to_string().contains("from 0 to 1"));
    }
}

#[test]
fn gravity_output_and_colors() {
    for (s, g) in [
        ("center", Gravity::Center),
        ("top-left", Gravity::TopLeft),
        ("top", Gravity::Top),
        ("top-right", Gravity::TopRight),
        ("left", Gravity::Left),
        ("right", Gravity::Right),
        ("bottom-left", Gravity::BottomLeft),
        ("bottom", Gravity::Bottom),
        ("bottom-right", Gravity::BottomRight),
    ] {
        assert_eq!(params(&[("gravity", s)]).gravity, g);
    }
    assert_eq!(invalid_name(&[("gravity", "middle")]), "gravity");

    for (s, f) in [
        ("jpg", OutputFormat::Jpeg),
        ("jpeg", OutputFormat::Jpeg),
        ("png", OutputFormat::Png),
        ("gif", OutputFormat::Gif),
        ("webp", OutputFormat::Webp),
    ] {
        assert_eq!(params(&[("output", s)]).output, Some(f));
    }
    assert_eq!(invalid_name(&[("output", "avif")]), "output");

    assert_eq!(
        params(&[("borderColor", "FF8000")]).border_color,
        Rgb(255, 128, 0)
    );
    assert_eq!(
        params(&[("borderColor", "#ff8000")]).border_color,
        Rgb(255, 128, 0)
    );
    // CSS shorthand: each digit doubled.
    assert_eq!(
        params(&[("background", "#fff")]).background,
        Some(Rgb(255, 255, 255))
    );
    assert_eq!(
        params(&[("background", "1a2")]).background,
        Some(Rgb(0x11, 0xaa, 0x22))
    );
    for bad in ["ff80", "#ff80000", "gg0000", "", "#", "red", "+1+2+3"] {
        if bad.is_empty() {
            // An empty value means "not given".
            assert_eq!(params(&[("background", bad)]).background, None);
            continue;
        }
        assert_eq!(invalid_name(&[("background", bad)]), "background", "{bad}");
        assert_eq!(
            invalid_name(&[("borderColor", bad)]),
            "borderColor",
            "{bad}"
        );
    }
}

#[test]
fn unknown_repeated_and_token_keys() {
    // Unknown keys are left alone, as Appwrite leaves them: a cache-buster
    // changes neither the image nor its cache key.
    let busted = params(&[("width", "10"), ("v", "1700000000")]);
    assert_eq!(busted.width, 10);
    assert_eq!(busted.cache_key(), params(&[("width", "10")]).cache_key());
    assert_eq!(invalid_name(&[("width", "10"), ("width", "20")]), "width");
    // Keys are case-sensitive, as in Appwrite: `Width` is not `width`.
    assert_eq!(params(&[("Width", "10")]).width, 0);
    let p = params(&[("token", "anything at all"), ("width", "5")]);
    assert_eq!(p.width, 5);
}

#[test]
fn cache_key_is_canonical() {
    let a = params(&[
        ("output", "jpg"),
        ("rotation", "-90"),
        ("background", "FFF"),
    ]);
    let b = params(&[
        ("background", "#ffffff"),
        ("rotation", "270"),
        ("output", "jpeg"),
    ]);
    assert_eq!(a.cache_key(), b.cache_key());
    assert_ne!(a.cache_key(), params(&[]).cache_key());
    assert_ne!(
        params(&[("width", "10")]).cache_key(),
        params(&[("height", "10")]).cache_key()
    );
    assert_ne!(
        params(&[("opacity", "0.5")]).cache_key(),
        params(&[("opacity", "0.51")]).cache_key()
    );
    assert_eq!(
        params(&[]).cache_key(),
        "pv1:w0:h0:gcenter:q-1:bw0:bc000000:br0:o1:r0:bg-:out-"
    );
}

// ---- sizing ----

#[test]
fn width_only_keeps_aspect_rounding_to_nearest() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(1200, 800)));
    let out = render_png(&input, &params(&[("width", "400")]));
    // 800 × 400 / 1200 = 266.67, rounded to the nearest pixel.
    assert_eq!(out.dimensions(), (400, 267));
    let out = render_png(&input, &params(&[("height", "100")]));
    assert_eq!(out.dimensions(), (150, 100));
    let out = render_png(&input, &params(&[]));
    assert_eq!(out.dimensions(), (1200, 800));
}

#[test]
fn upscales_and_caps_derived_side() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(100, 50)));
    assert_eq!(
        render_png(&input, &params(&[("width", "400")])).dimensions(),
        (400, 200)
    );
    let thin = png_of(DynamicImage::ImageRgb8(gradient(10, 2000)));
    // 400 wide would be 80 000 tall; the derived side stops at 4000.
    assert_eq!(
        render_png(&thin, &params(&[("width", "400")])).dimensions(),
        (20, 4000)
    );
}

#[test]
fn cover_crop_uses_gravity() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(1200, 800)));
    let tl = render_png(
        &input,
        &params(&[("width", "200"), ("height", "200"), ("gravity", "top-left")]),
    );
    let br = render_png(
        &input,
        &params(&[
            ("width", "200"),
            ("height", "200"),
            ("gravity", "bottom-right"),
        ]),
    );
    let c = render_png(&input, &params(&[("width", "200"), ("height", "200")]));
    assert_eq!(tl.dimensions(), (200, 200));
    assert_eq!(br.dimensions(), (200, 200));
    assert_ne!(tl.to_rgb8().into_raw(), br.to_rgb8().into_raw());
    // The source is 3:2, so a square crop drops a third of the width: top-left keeps
    // the left (less red) part, bottom-right the right, centre the middle.
    let red = |img: &DynamicImage| img.to_rgb8().get_pixel(100, 100).0[0];
    assert!(red(&tl) < red(&c) && red(&c) < red(&br));
    // The height is fully used, so the vertical anchor does not matter here.
    let g = |img: &DynamicImage, y| img.to_rgb8().get_pixel(100, y).0[1];
    assert!(g(&tl, 0) < 10 && g(&br, 0) < 10);
    assert!(g(&tl, 199) > 245 && g(&br, 199) > 245);
}

// ---- encodings ----

#[test]
fn every_output_format_round_trips() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(300, 200)));
    for (out, format, mime) in [
        ("jpg", ImageFormat::Jpeg, "image/jpeg"),
        ("jpeg", ImageFormat::Jpeg, "image/jpeg"),
        ("png", ImageFormat::Png, "image/png"),
        ("gif", ImageFormat::Gif, "image/gif"),
        ("webp", ImageFormat::WebP, "image/webp"),
    ] {
        let p = params(&[("width", "120"), ("height", "90"), ("output", out)]);
        let r = render(&input, "image/png", &p, MAX_INPUT_PIXELS).unwrap();
        assert_eq!(r.mime_type, mime);
        assert_eq!(image::guess_format(&r.bytes).unwrap(), format);
        assert_eq!(decode_out(&r).dimensions(), (120, 90), "{out}");
    }
}

#[test]
fn every_input_format_decodes_and_is_the_default_output() {
    let img = DynamicImage::ImageRgb8(gradient(64, 48));
    for (format, mime) in [
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let input = encode_as(&img, format);
        let r = render(&input, mime, &params(&[("width", "32")]), MAX_INPUT_PIXELS).unwrap();
        assert_eq!(r.mime_type, mime);
        assert_eq!(decode_out(&r).dimensions(), (32, 24), "{mime}");
    }
    // The bytes' signature wins over a wrong claimed type.
    let jpeg = encode_as(&img, ImageFormat::Jpeg);
    let r = render(&jpeg, "image/png", &params(&[]), MAX_INPUT_PIXELS).unwrap();
    assert_eq!(r.mime_type, "image/jpeg");
}

#[test]
fn jpeg_quality_changes_size() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(400, 300)));
    let size = |quality: &str| {
        let p = params(&[("output", "jpg"), ("quality", quality)]);
        render(&input, "image/png", &p, MAX_INPUT_PIXELS)
            .unwrap()
            .bytes
            .len()
    };
    assert!(size("10") < size("95"));
    assert_eq!(size("-1"), size("90"));
    assert!(size("0") > 0);
}

// ---- effects ----

#[test]
fn rotation() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(120, 80)));
    for r in ["90", "270", "-90", "-270"] {
        let out = render_png(&input, &params(&[("rotation", r)]));
        assert_eq!(out.dimensions(), (80, 120), "{r}");
    }
    for r in ["180", "360", "-360", "0"] {
        let out = render_png(&input, &params(&[("rotation", r)]));
        assert_eq!(out.dimensions(), (120, 80), "{r}");
    }
    // Clockwise: the top-left corner (no red, no green) ends up top-right.
    let out = render_png(&input, &params(&[("rotation", "90")])).to_rgba8();
    let p = out.get_pixel(79, 0).0;
    assert!(p[0] < 5 && p[1] < 5, "{p:?}");

    // 45°: canvas of (120 + 80) / √2 ≈ 141.4 → 142 on each side, corners transparent.
    let out = render_png(&input, &params(&[("rotation", "45")])).to_rgba8();
    assert_eq!(out.dimensions(), (142, 142));
    assert_eq!(out.get_pixel(0, 0).0[3], 0);
    assert_eq!(out.get_pixel(71, 71).0[3], 255);
    // With a background the corners take its colour.
    let out = render_png(
        &input,
        &params(&[("rotation", "30"), ("background", "00ff00")]),
    )
    .to_rgba8();
    assert_eq!(out.get_pixel(0, 0).0, [0, 255, 0, 255]);
}

#[test]
fn border_adds_twice_its_width() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(120, 80)));
    let out = render_png(
        &input,
        &params(&[("borderWidth", "7"), ("borderColor", "ff0000")]),
    )
    .to_rgba8();
    assert_eq!(out.dimensions(), (134, 94));
    assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(133, 93).0, [255, 0, 0, 255]);
    assert_ne!(out.get_pixel(67, 47).0, [255, 0, 0, 255]);
    // Default colour is black.
    let out = render_png(&input, &params(&[("borderWidth", "1")])).to_rgba8();
    assert_eq!(out.get_pixel(0, 40).0, [0, 0, 0, 255]);
}

#[test]
fn border_radius_makes_corners_transparent() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(100, 100)));
    let out = render_png(&input, &params(&[("borderRadius", "30")])).to_rgba8();
    assert_eq!(out.get_pixel(0, 0).0[3], 0);
    assert_eq!(out.get_pixel(99, 99).0[3], 0);
    assert_eq!(out.get_pixel(50, 0).0[3], 255);
    assert_eq!(out.get_pixel(50, 50).0[3], 255);
    // JPEG has no alpha: corners become white, or the background.
    let r = render(
        &input,
        "image/png",
        &params(&[("borderRadius", "30"), ("output", "jpg")]),
        MAX_INPUT_PIXELS,
    )
    .unwrap();
    let p = decode_out(&r).to_rgb8().get_pixel(0, 0).0;
    assert!(p.iter().all(|&c| c > 245), "{p:?}");
    // With a border the frame follows the rounding; its own outer corners are clear.
    let out = render_png(
        &input,
        &params(&[
            ("borderRadius", "30"),
            ("borderWidth", "5"),
            ("borderColor", "0000ff"),
        ]),
    )
    .to_rgba8();
    assert_eq!(out.dimensions(), (110, 110));
    assert_eq!(out.get_pixel(0, 0).0[3], 0);
    assert_eq!(out.get_pixel(2, 55).0, [0, 0, 255, 255]);
    // Between the image's rounded corner (radius 30) and the frame's (radius 35).
    assert_eq!(out.get_pixel(12, 12).0, [0, 0, 255, 255]);
}

#[test]
fn opacity_halves_alpha_and_background_fills() {
    let input = png_of(DynamicImage::ImageRgb8(gradient(50, 50)));
    let out = render_png(&input, &params(&[("opacity", "0.5")])).to_rgba8();
    assert!(out.pixels().all(|p| p.0[3] == 128), "alpha 255 × 0.5 → 128");

    let transparent = png_of(DynamicImage::ImageRgba8(RgbaImage::new(20, 20)));
    let out = render_png(&transparent, &params(&[("background", "336699")])).to_rgba8();
    assert!(out.pixels().all(|p| p.0 == [0x33, 0x66, 0x99, 255]));
    let r = render(
        &transparent,
        "image/png",
        &params(&[("output", "jpg")]),
        MAX_INPUT_PIXELS,
    )
    .unwrap();
    let p = decode_out(&r).to_rgb8().get_pixel(10, 10).0;
    assert!(
        p.iter().all(|&c| c > 250),
        "transparent → white in JPEG: {p:?}"
    );
    // Transparency survives a resize (alpha-aware filtering, no dark fringes).
    let out = render_png(&transparent, &params(&[("width", "10")])).to_rgba8();
    assert_eq!(out.dimensions(), (10, 10));
    assert!(out.pixels().all(|p| p.0[3] == 0));
}

// ---- limits and hostile input ----

/// A PNG that is only a signature and an IHDR (valid CRC) declaring `w`×`h` RGBA.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn huge_header_is_refused_before_decoding() {
    let bomb = png_header_only(100_000, 100_000);
    assert_eq!(bomb.len(), 33);
    let err = render(&bomb, "image/png", &params(&[]), MAX_INPUT_PIXELS).unwrap_err();
    assert!(
        matches!(
            err,
            PreviewError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                limit: MAX_INPUT_PIXELS
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "IMAGE_TOO_LARGE");
    // Whatever the claimed type, the bytes are recognised.
    let err = render(&bomb, "image/jpeg", &params(&[]), MAX_INPUT_PIXELS).unwrap_err();
    assert_eq!(err.code(), "IMAGE_TOO_LARGE");
}

#[test]
fn pixel_limit_applies_to_every_format() {
    let img = DynamicImage::ImageRgb8(gradient(300, 200));
    for (format, mime) in [
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let input = encode_as(&img, format);
        let err = render(&input, mime, &params(&[]), 59_999).unwrap_err();
        assert!(
            matches!(
                err,
                PreviewError::TooManyPixels {
                    width: 300,
                    height: 200,
                    limit: 59_999
                }
            ),
            "{mime}: {err:?}"
        );
        render(&input, mime, &params(&[]), 60_000).unwrap();
    }
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn assert_refused_cleanly(result: Result<Rendered, PreviewError>, what: &str) {
    match result {
        Ok(_) | Err(PreviewError::TooManyPixels { .. }) => {}
        Err(PreviewError::Corrupt(msg)) => {
            assert_ne!(msg, "the decoder failed", "a decoder panicked on {what}")
        }
        Err(e) => panic!("unexpected error for {what}: {e:?}"),
    }
}

#[test]
fn corrupt_input_is_an_error_not_a_panic() {
    let p = params(&[("width", "16")]);
    for mime in ["image/jpeg", "image/png", "image/gif", "image/webp"] {
        for input in [Vec::new(), vec![0u8; 1], noise(7, 4096), b"GIF89a".to_vec()] {
            let err = render(&input, mime, &p, MAX_INPUT_PIXELS).unwrap_err();
            assert_eq!(err.code(), "IMAGE_CORRUPT", "{mime} {} bytes", input.len());
        }
    }
    // Only the header of a small PNG: dimensions fine, no data.
    let err = render(png_header_only(10, 10), "image/png", &p, MAX_INPUT_PIXELS).unwrap_err();
    assert!(matches!(err, PreviewError::Corrupt(_)), "{err:?}");

    let img = DynamicImage::ImageRgb8(gradient(80, 60));
    for (format, mime) in [
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let good = encode_as(&img, format);
        // Cut inside the header: always refused.
        let err = render(&good[..good.len().min(20)], mime, &p, MAX_INPUT_PIXELS).unwrap_err();
        assert_eq!(err.code(), "IMAGE_CORRUPT", "{mime} header cut");
        // Every other truncation, and bit flips anywhere: an image or a clean error
        // (lenient decoders may fill a cut-off JPEG scan with grey).
        for len in (0..good.len()).step_by(7) {
            assert_refused_cleanly(
                render(&good[..len], mime, &p, MAX_INPUT_PIXELS),
                &format!("{mime} cut at {len}"),
            );
        }
        let mut rng = noise(len_seed(&good), 400);
        for round in 0..200 {
            let mut bad = good.clone();
            for _ in 0..3 {
                let pos = (usize::from(rng.pop().unwrap()) << 8 | usize::from(rng.pop().unwrap()))
                    % bad.len();
                bad[pos] ^= 1 << (round % 8);
            }
            assert_refused_cleanly(
                render(&bad, mime, &p, MAX_INPUT_PIXELS),
                &format!("{mime} flip round {round}"),
            );
            if rng.len() < 6 {
                rng = noise(round as u64 + 99, 400);
            }
        }
    }
    for seed in 0..50 {
        let junk = noise(seed, (seed as usize * 37) % 3000);
        let err = render(&junk, "image/webp", &p, MAX_INPUT_PIXELS).unwrap_err();
        assert_eq!(err.code(), "IMAGE_CORRUPT");
    }
}

fn len_seed(b: &[u8]) -> u64 {
    b.len() as u64 * 2_654_435_761
}

// ---- icons ----

#[test]
fn non_images_get_a_type_icon() {
    let pdf = b"%PDF-1.7 not an image";
    let r = render(pdf, "application/pdf", &params(&[]), MAX_INPUT_PIXELS).unwrap();
    assert_eq!(r.mime_type, "image/png");
    assert_eq!(decode_out(&r).dimensions(), (100, 100));

    let p = params(&[("width", "64"), ("height", "48")]);
    let r = render(pdf, "application/pdf", &p, MAX_INPUT_PIXELS).unwrap();
    assert_eq!(decode_out(&r).dimensions(), (64, 48));
    let r = render(pdf, "text/plain", &params(&[("width", "30")]), 0).unwrap();
    assert_eq!(decode_out(&r).dimensions(), (30, 30));

    // Deterministic.
    let again = render(pdf, "text/plain", &params(&[("width", "30")]), 0).unwrap();
    assert_eq!(r, again);

    // Undecodable image types are icons too, in the requested format.
    let r = render(
        b"BM....",
        "image/bmp",
        &params(&[("height", "40"), ("output", "webp")]),
        MAX_INPUT_PIXELS,
    )
    .unwrap();
    assert_eq!(r.mime_type, "image/webp");
    assert_eq!(decode_out(&r).dimensions(), (40, 40));

    // Effects apply to icons as well.
    let r = render_icon(
        "video/mp4",
        &params(&[("borderWidth", "3"), ("rotation", "90")]),
    )
    .unwrap();
    assert_eq!(decode_out(&r).dimensions(), (106, 106));
}

#[test]
fn icon_colour_follows_category() {
    let centre = |mime: &str| {
        let r = render_icon(mime, &params(&[])).unwrap();
        // Left edge of the page, halfway down: plain page colour, no emblem.
        decode_out(&r).to_rgba8().get_pixel(25, 50).0
    };
    let kinds = [
        "image/svg+xml",
        "video/mp4",
        "audio/mpeg",
        "text/plain",
        "application/pdf",
        "application/zip",
        "application/octet-stream",
    ];
    let colours: Vec<[u8; 4]> = kinds.iter().map(|m| centre(m)).collect();
    for (i, a) in colours.iter().enumerate() {
        assert_eq!(a[3], 255, "{}", kinds[i]);
        for b in &colours[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(
        Category::from_mime_type("Application/JSON; charset=utf-8"),
        Category::Text
    );
    assert_eq!(
        Category::from_mime_type("application/x-7z-compressed"),
        Category::Archive
    );
    assert_eq!(Category::from_mime_type(""), Category::Other);
    // The corner outside the page is transparent.
    let r = render_icon("text/plain", &params(&[])).unwrap();
    assert_eq!(decode_out(&r).to_rgba8().get_pixel(0, 0).0[3], 0);
}

// ---- speed ----

/// Run with `cargo test --release -- --ignored --nocapture big_jpeg` to see timings.
#[test]
#[ignore = "slow without optimisations; run in release"]
fn big_jpeg_to_400_wide() {
    let (w, h) = (4000, 3000);
    let img = RgbImage::from_fn(w, h, |x, y| {
        PxRgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 85)
        .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
        .unwrap();
    let p = params(&[("width", "400")]);
    let mut best = f64::MAX;
    for run in 0..3 {
        let start = Instant::now();
        let r = render(&jpeg, "image/jpeg", &p, MAX_INPUT_PIXELS).unwrap();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        best = best.min(ms);
        assert_eq!(decode_out(&r).dimensions(), (400, 300));
        println!(
            "run {run}: 12 MP JPEG ({} KiB) → 400×300: {ms:.0} ms",
            jpeg.len() / 1024
        );
    }
    let start = Instant::now();
    let (decoded, _) = decode(&jpeg, OutputFormat::Jpeg, MAX_INPUT_PIXELS).unwrap();
    let decode_ms = start.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now();
    let _ = resize(decoded, &p).unwrap();
    let resize_ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("best {best:.0} ms (decode {decode_ms:.0} ms, resize {resize_ms:.0} ms)");
}

#[test]
fn exif_orientation_is_applied() {
    // Little-endian TIFF with one IFD entry: Orientation (0x0112) = 6, "rotate 90° CW".
    let exif: Vec<u8> = [
        &b"II*\0"[..],
        &8u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &0x0112u16.to_le_bytes(),
        &3u16.to_le_bytes(),
        &1u32.to_le_bytes(),
        &[6, 0, 0, 0],
        &0u32.to_le_bytes(),
    ]
    .concat();
    let img = gradient(60, 40);
    let mut jpeg = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut jpeg, 90);
    encoder.set_exif_metadata(exif).unwrap();
    encoder
        .write_image(img.as_raw(), 60, 40, ExtendedColorType::Rgb8)
        .unwrap();
    let r = render(&jpeg, "image/jpeg", &params(&[]), MAX_INPUT_PIXELS).unwrap();
    assert_eq!(decode_out(&r).dimensions(), (40, 60));
}

#[test]
fn border_keeps_transparent_content_transparent() {
    let transparent = png_of(DynamicImage::ImageRgba8(RgbaImage::new(20, 20)));
    let out = render_png(&transparent, &params(&[("borderWidth", "2")])).to_rgba8();
    assert_eq!(out.dimensions(), (24, 24));
    assert_eq!(out.get_pixel(0, 12).0, [0, 0, 0, 255]);
    assert_eq!(out.get_pixel(12, 12).0[3], 0);
}

#[test]
fn rotating_a_thin_image_is_bounded() {
    // Unsized, it is first brought within 4000×4000, and turns within twice that.
    let thin = png_of(DynamicImage::ImageRgb8(gradient(40_000, 1)));
    let out = render_png(&thin, &params(&[("rotation", "45")]));
    let (w, h) = out.dimensions();
    assert!(
        (2800..=2840).contains(&w) && (2800..=2840).contains(&h),
        "{w}×{h}"
    );
    // With a size the image is small enough to turn.
    let p = params(&[("width", "400"), ("rotation", "45")]);
    let out = render_png(&thin, &p);
    assert_eq!(out.dimensions(), (284, 284));
}

#[test]
fn an_unsized_preview_fits_the_largest_size() {
    let wide = png_of(DynamicImage::ImageRgb8(gradient(5000, 100)));
    assert_eq!(render_png(&wide, &params(&[])).dimensions(), (4000, 80));
    let tall = png_of(DynamicImage::ImageRgb8(gradient(50, 4500)));
    assert_eq!(render_png(&tall, &params(&[])).dimensions(), (44, 4000));
    let small = png_of(DynamicImage::ImageRgb8(gradient(300, 200)));
    assert_eq!(render_png(&small, &params(&[])).dimensions(), (300, 200));
}
