//! The generated "type icon" shown instead of a preview for files that are not images
//! we decode: a document page with a folded corner, coloured and marked by the file's
//! category (image, video, audio, text, pdf, archive, other) as told by its MIME type.
//! Drawn from geometry only, so the output depends on nothing but the inputs.

use image::{Rgba, RgbaImage};

use super::Rgb;
use super::params::essence;

/// The broad kind of file an icon stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Image,
    Video,
    Audio,
    Text,
    Pdf,
    Archive,
    Other,
}

impl Category {
    pub fn from_mime_type(mime_type: &str) -> Category {
        let essence = essence(mime_type);
        let (top, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
        match top {
            "image" => return Category::Image,
            "video" => return Category::Video,
            "audio" => return Category::Audio,
            "text" => return Category::Text,
            _ => {}
        }
        if sub == "pdf" {
            return Category::Pdf;
        }
        const ARCHIVES: [&str; 14] = [
            "zip",
            "x-zip-compressed",
            "gzip",
            "x-gzip",
            "x-tar",
            "x-bzip",
            "x-bzip2",
            "x-xz",
            "x-7z-compressed",
            "x-rar-compressed",
            "vnd.rar",
            "zstd",
            "x-lzma",
            "java-archive",
        ];
        if ARCHIVES.contains(&sub) {
            return Category::Archive;
        }
        const TEXTS: [&str; 10] = [
            "json",
            "xml",
            "javascript",
            "x-javascript",
            "x-sh",
            "x-yaml",
            "yaml",
            "toml",
            "rtf",
            "msword",
        ];
        if TEXTS.contains(&sub)
            || sub.ends_with("+json")
            || sub.ends_with("+xml")
            || sub.starts_with("vnd.openxmlformats-officedocument.wordprocessingml")
            || sub.starts_with("vnd.oasis.opendocument.text")
        {
            return Category::Text;
        }
        Category::Other
    }

    fn color(self) -> Rgb {
        match self {
            Category::Image => Rgb(0x2e, 0x9d, 0x5a),
            Category::Video => Rgb(0x8e, 0x44, 0xad),
            Category::Audio => Rgb(0xe6, 0x7e, 0x22),
            Category::Text => Rgb(0x34, 0x73, 0xd6),
            Category::Pdf => Rgb(0xd6, 0x3a, 0x2f),
            Category::Archive => Rgb(0x8d, 0x6e, 0x63),
            Category::Other => Rgb(0x7f, 0x8c, 0x8d),
        }
    }
}

/// Page geometry, in units of the page's width: the page spans x 0–1, y 0–4/3, and
/// its top-right corner is folded over a square of side `FOLD`.
const PAGE_HEIGHT: f64 = 4.0 / 3.0;
const FOLD: f64 = 0.3;
/// Share of the canvas's limiting side the page takes, leaving a margin around it.
const FILL: f64 = 0.8;

/// Draws the icon for `category` on a transparent `width`×`height` canvas, the page
/// centred and as large as fits with a margin.
pub fn draw(category: Category, width: u32, height: u32) -> RgbaImage {
    let (w, h) = (f64::from(width), f64::from(height));
    let page_w = (w * FILL).min(h * FILL / PAGE_HEIGHT);
    let x0 = (w - page_w) / 2.0;
    let y0 = (h - page_w * PAGE_HEIGHT) / 2.0;
    let base = category.color();
    let fold = mix_white(base, 0.45);
    // 2×2 samples per pixel give the edges a little antialiasing.
    const SUB: [f64; 2] = [0.25, 0.75];
    RgbaImage::from_fn(width, height, |x, y| {
        let mut acc = [0.0f64; 4];
        for sy in SUB {
            for sx in SUB {
                let u = (f64::from(x) + sx - x0) / page_w;
                let v = (f64::from(y) + sy - y0) / page_w;
                if let Some(c) = paint(category, base, fold, u, v) {
                    acc[0] += f64::from(c.0);
                    acc[1] += f64::from(c.1);
                    acc[2] += f64::from(c.2);
                    acc[3] += 1.0;
                }
            }
        }
        if acc[3] == 0.0 {
            return Rgba([0, 0, 0, 0]);
        }
        let n = acc[3];
        Rgba([
            (acc[0] / n).round() as u8,
            (acc[1] / n).round() as u8,
            (acc[2] / n).round() as u8,
            (255.0 * n / 4.0).round() as u8,
        ])
    })
}

fn mix_white(c: Rgb, t: f64) -> Rgb {
    let m = |v: u8| (f64::from(v) + (255.0 - f64::from(v)) * t).round() as u8;
    Rgb(m(c.0), m(c.1), m(c.2))
}

/// The colour at page coordinates (u, v), or `None` outside the page.
fn paint(category: Category, base: Rgb, fold: Rgb, u: f64, v: f64) -> Option<Rgb> {
    if !(0.0..=1.0).contains(&u) || !(0.0..=PAGE_HEIGHT).contains(&v) {
        return None;
    }
    let corner_x = u - (1.0 - FOLD);
    if corner_x > 0.0 && v < FOLD {
        // Above the fold's diagonal the page is cut away; below it is the flap.
        return if corner_x > v { None } else { Some(fold) };
    }
    Some(if emblem(category, u, v) {
        Rgb::WHITE
    } else {
        base
    })
}

/// Whether (u, v) lies on the category's white mark.
fn emblem(category: Category, u: f64, v: f64) -> bool {
    let rect =
        |x0: f64, y0: f64, x1: f64, y1: f64| (x0..=x1).contains(&u) && (y0..=y1).contains(&v);
    let circle = |cx: f64, cy: f64, r: f64| (u - cx).powi(2) + (v - cy).powi(2) <= r * r;
    let lines = || {
        rect(0.2, 0.55, 0.8, 0.61)
            || rect(0.2, 0.70, 0.8, 0.76)
            || rect(0.2, 0.85, 0.8, 0.91)
            || rect(0.2, 1.00, 0.6, 1.06)
    };
    match category {
        Category::Image => {
            circle(0.34, 0.62, 0.08) || triangle((u, v), (0.18, 1.05), (0.5, 0.68), (0.82, 1.05))
        }
        Category::Video => triangle((u, v), (0.38, 0.6), (0.38, 1.0), (0.7, 0.8)),
        Category::Audio => {
            circle(0.42, 0.95, 0.1) || rect(0.46, 0.55, 0.52, 0.95) || rect(0.46, 0.55, 0.68, 0.62)
        }
        Category::Text | Category::Pdf => lines(),
        Category::Archive => {
            let zipper = (0..7).any(|i| {
                let top = 0.08 + f64::from(i) * 0.1;
                if i % 2 == 0 {
                    rect(0.44, top, 0.5, top + 0.05)
                } else {
                    rect(0.5, top, 0.56, top + 0.05)
                }
            });
            zipper || rect(0.40, 0.80, 0.60, 0.98)
        }
        Category::Other => false,
    }
}

/// Point-in-triangle by the signs of the three edge cross products.
fn triangle(p: (f64, f64), a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> bool {
    let cross =
        |o: (f64, f64), q: (f64, f64)| (q.0 - o.0) * (p.1 - o.1) - (q.1 - o.1) * (p.0 - o.0);
    let (d1, d2, d3) = (cross(a, b), cross(b, c), cross(c, a));
    let neg = d1 < 0.0 || d2 < 0.0 || d3 < 0.0;
    let pos = d1 > 0.0 || d2 > 0.0 || d3 > 0.0;
    !(neg && pos)
}
