//! Pixel operations applied after resizing, on straight-alpha RGBA8 images: rotation,
//! rounded corners, border, opacity and background fill.

use image::{Rgba, RgbaImage, imageops};

use super::Rgb;

/// Rotates clockwise by `degrees`. Multiples of 90 are exact pixel moves; any other
/// angle is sampled bilinearly onto a canvas just large enough for the rotated image,
/// the uncovered corners left transparent (a later background fill or JPEG flattening
/// colours them). Callers bound the canvas with [`rotated_size`] first.
pub fn rotate(img: RgbaImage, degrees: i32) -> RgbaImage {
    match degrees.rem_euclid(360) {
        0 => img,
        90 => imageops::rotate90(&img),
        180 => imageops::rotate180(&img),
        270 => imageops::rotate270(&img),
        d => rotate_any(&img, d),
    }
}

/// The size of a `width`×`height` image after [`rotate`] by `degrees`.
pub fn rotated_size(width: u32, height: u32, degrees: i32) -> (u64, u64) {
    let (w, h) = (u64::from(width), u64::from(height));
    match degrees.rem_euclid(360) {
        0 | 180 => (w, h),
        90 | 270 => (h, w),
        d => {
            let (sin, cos) = f64::from(d).to_radians().sin_cos();
            let (w, h) = (w as f64, h as f64);
            // The epsilon keeps float noise from adding a whole empty row or column.
            let out_w = (w * cos.abs() + h * sin.abs() - 1e-6).ceil().max(1.0);
            let out_h = (w * sin.abs() + h * cos.abs() - 1e-6).ceil().max(1.0);
            (out_w as u64, out_h as u64)
        }
    }
}

fn rotate_any(img: &RgbaImage, degrees: i32) -> RgbaImage {
    let (out_w, out_h) = rotated_size(img.width(), img.height(), degrees);
    let (out_w, out_h) = (out_w as f64, out_h as f64);
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let (sin, cos) = f64::from(degrees).to_radians().sin_cos();
    let mut out = RgbaImage::new(out_w as u32, out_h as u32);
    let (ocx, ocy) = (out_w / 2.0, out_h / 2.0);
    let (icx, icy) = (w / 2.0, h / 2.0);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let dx = f64::from(x) + 0.5 - ocx;
        let dy = f64::from(y) + 0.5 - ocy;
        // Inverse rotation: where in the source this output pixel comes from.
        let sx = dx * cos + dy * sin + icx - 0.5;
        let sy = -dx * sin + dy * cos + icy - 0.5;
        *px = sample_bilinear(img, sx, sy);
    }
    out
}

/// Bilinear sample at pixel-centre coordinates; outside the image counts as
/// transparent, which antialiases the rotated edges. Interpolates premultiplied so
/// transparent neighbours do not darken the colour.
fn sample_bilinear(img: &RgbaImage, x: f64, y: f64) -> Rgba<u8> {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    if x <= -1.0 || y <= -1.0 || x >= w as f64 || y >= h as f64 {
        return Rgba([0, 0, 0, 0]);
    }
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let mut acc = [0.0f64; 4];
    for (ox, oy, weight) in [
        (0, 0, (1.0 - fx) * (1.0 - fy)),
        (1, 0, fx * (1.0 - fy)),
        (0, 1, (1.0 - fx) * fy),
        (1, 1, fx * fy),
    ] {
        let (px, py) = (x0 + ox, y0 + oy);
        if weight == 0.0 || px < 0 || py < 0 || px >= w || py >= h {
            continue;
        }
        let p = img.get_pixel(px as u32, py as u32).0;
        let a = f64::from(p[3]) / 255.0 * weight;
        acc[0] += f64::from(p[0]) * a;
        acc[1] += f64::from(p[1]) * a;
        acc[2] += f64::from(p[2]) * a;
        acc[3] += a;
    }
    if acc[3] <= 0.0 {
        return Rgba([0, 0, 0, 0]);
    }
    Rgba([
        to_u8(acc[0] / acc[3]),
        to_u8(acc[1] / acc[3]),
        to_u8(acc[2] / acc[3]),
        to_u8(acc[3] * 255.0),
    ])
}

fn to_u8(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The radius actually drawn: at most half the shorter side, so opposite corners never
/// overlap.
pub fn effective_radius(width: u32, height: u32, radius: u32) -> u32 {
    radius.min(width.min(height) / 2)
}

/// Fraction (0–1) of the pixel at (x, y) inside a `w`×`h` rectangle whose corners are
/// rounded with radius `r`, with a one-pixel soft edge.
fn rounded_coverage(x: u32, y: u32, w: u32, h: u32, r: u32) -> f64 {
    if r == 0 {
        return 1.0;
    }
    let (px, py) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
    let (w, h, r) = (f64::from(w), f64::from(h), f64::from(r));
    let cx = px.clamp(r, w - r);
    let cy = py.clamp(r, h - r);
    let d = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
    (r - d + 0.5).clamp(0.0, 1.0)
}

/// Makes the corners outside a rounded rectangle of `radius` transparent.
pub fn round_corners(img: &mut RgbaImage, radius: u32) {
    let (w, h) = img.dimensions();
    let r = effective_radius(w, h, radius);
    if r == 0 {
        return;
    }
    for (x, y, px) in img.enumerate_pixels_mut() {
        // Only the four r×r corner squares can be affected.
        if (x >= r && x < w - r) || (y >= r && y < h - r) {
            continue;
        }
        let c = rounded_coverage(x, y, w, h, r);
        px.0[3] = to_u8(f64::from(px.0[3]) * c);
    }
}

/// Surrounds the image with `width` pixels of `color` on every side. When the image
/// has rounded corners (`radius` > 0) the border follows them: its outer corners are
/// rounded by `radius + width` and it fills the gaps between the rounded image and the
/// frame, like a CSS border with `border-radius`.
pub fn add_border(img: RgbaImage, width: u32, color: Rgb, radius: u32) -> RgbaImage {
    if width == 0 {
        return img;
    }
    let (w, h) = img.dimensions();
    let inner_r = effective_radius(w, h, radius);
    let outer_r = if inner_r == 0 { 0 } else { inner_r + width };
    let (ow, oh) = (w + 2 * width, h + 2 * width);
    // The frame is the ring between the outer rounded rectangle and the image's own
    // (rounded) outline, so transparent parts of the image stay transparent.
    let mut out = RgbaImage::from_fn(ow, oh, |x, y| {
        let outer = rounded_coverage(x, y, ow, oh, outer_r);
        let inside_x = x.checked_sub(width).filter(|&ix| ix < w);
        let inside_y = y.checked_sub(width).filter(|&iy| iy < h);
        let inner = match (inside_x, inside_y) {
            (Some(ix), Some(iy)) => rounded_coverage(ix, iy, w, h, inner_r),
            _ => 0.0,
        };
        Rgba([
            color.0,
            color.1,
            color.2,
            to_u8(255.0 * outer * (1.0 - inner)),
        ])
    });
    for (x, y, src) in img.enumerate_pixels() {
        let dst = out.get_pixel_mut(x + width, y + width);
        *dst = over(*src, *dst);
    }
    out
}

/// Source-over compositing of straight-alpha pixels.
fn over(src: Rgba<u8>, dst: Rgba<u8>) -> Rgba<u8> {
    let sa = u32::from(src.0[3]);
    if sa == 255 {
        return src;
    }
    if sa == 0 {
        return dst;
    }
    let da = u32::from(dst.0[3]);
    // All in 0..=255² fixed point: out_a = sa + da(1 - sa).
    let out_a = sa * 255 + da * (255 - sa);
    if out_a == 0 {
        return Rgba([0, 0, 0, 0]);
    }
    let mix = |s: u8, d: u8| {
        let num = u32::from(s) * sa * 255 + u32::from(d) * da * (255 - sa);
        ((num + out_a / 2) / out_a) as u8
    };
    Rgba([
        mix(src.0[0], dst.0[0]),
        mix(src.0[1], dst.0[1]),
        mix(src.0[2], dst.0[2]),
        ((out_a + 127) / 255) as u8,
    ])
}

/// Multiplies every pixel's alpha by `opacity` (0–1).
pub fn apply_opacity(img: &mut RgbaImage, opacity: f32) {
    if opacity >= 1.0 {
        return;
    }
    let factor = f64::from(opacity.max(0.0));
    for px in img.pixels_mut() {
        px.0[3] = to_u8(f64::from(px.0[3]) * factor);
    }
}

/// Composites the image over an opaque `color`, leaving no transparency.
pub fn fill_background(img: &mut RgbaImage, color: Rgb) {
    let bg = Rgba([color.0, color.1, color.2, 255]);
    for px in img.pixels_mut() {
        *px = over(*px, bg);
    }
}

/// Whether every pixel is opaque, so the alpha channel need not be encoded.
pub fn is_opaque(img: &RgbaImage) -> bool {
    img.pixels().all(|p| p.0[3] == 255)
}
