//! Initials: the first grapheme of each of the first two words of a name, upper
//! case, on a background colour given or picked from the name (the same name
//! always gets the same colour). SVG sets the letters as text for the viewer's
//! fonts; PNG, JPEG and WebP draw them from the bundled font, a subset of DejaVu
//! Sans Bold (Latin, Greek, Cyrillic): a letter outside it is left out of a raster
//! image (ask for SVG for other scripts).

use resvg::tiny_skia::{self, FillRule, Paint, PathBuilder, Pixmap, Transform};
use sha2::{Digest as _, Sha256};
use unicode_segmentation::UnicodeSegmentation as _;

use super::output::{self, Output};
use super::{invalid, size};
use crate::error::AppError;

static FONT: &[u8] = include_bytes!("../../../data/avatars/fonts/DejaVuSans-Bold-subset.ttf");

/// Longest name read, in characters: a longer one is refused, not cut, so the
/// caller learns its input was not what it meant.
pub const MAX_NAME_CHARS: usize = 256;
pub const DEFAULT_SIZE: u32 = 100;
/// The formats initials are answered in, the first by default.
pub const OUTPUTS: &[Output] = &[Output::Png, Output::Svg, Output::Jpeg, Output::Webp];
/// Backgrounds picked from the name: mid-tone colours that white letters read on.
const PALETTE: [[u8; 3]; 12] = [
    [0xE5, 0x39, 0x35],
    [0xD8, 0x1B, 0x60],
    [0x8E, 0x24, 0xAA],
    [0x5E, 0x35, 0xB1],
    [0x39, 0x49, 0xAB],
    [0x1E, 0x88, 0xE5],
    [0x00, 0x89, 0x7B],
    [0x43, 0xA0, 0x47],
    [0x7C, 0xB3, 0x42],
    [0xF4, 0x51, 0x1E],
    [0x6D, 0x4C, 0x41],
    [0x54, 0x6E, 0x7A],
];
/// The letters' height against the image's smaller side.
const FONT_SCALE: f32 = 0.42;
const JPEG_QUALITY: u8 = 90;

/// Initials asked for, their parameters checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialsParams {
    /// One or two graphemes, upper case.
    pub initials: String,
    pub width: u32,
    pub height: u32,
    pub background: [u8; 3],
    /// `None`: the request's `Accept` header decides.
    pub output: Option<Output>,
}

/// Whether `c` may not appear in a name: control characters, and the invisible
/// marks that reorder or hide text (bidirectional overrides and isolates).
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The initials of `name`: the first grapheme of each of its first two words.
pub fn initials_of(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|word| word.graphemes(true).next())
        .take(2)
        .flat_map(str::chars)
        .flat_map(char::to_uppercase)
        .collect()
}

fn parse_colour(text: &str) -> Result<[u8; 3], AppError> {
    let hex = text.strip_prefix('#').unwrap_or(text);
    let bad = || {
        invalid(
            "background",
            "must be a colour as six hex digits, e.g. `1e88e5`",
        )
    };
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

impl InitialsParams {
    /// Checks raw parameters. A name is required, at most [`MAX_NAME_CHARS`]
    /// characters, free of control characters, with at least one word.
    pub fn new(
        name: Option<&str>,
        width: Option<i64>,
        height: Option<i64>,
        background: Option<&str>,
        output: Option<&str>,
    ) -> Result<InitialsParams, AppError> {
        let name = name.ok_or_else(|| invalid("name", "a name is required"))?;
        if name.chars().nth(MAX_NAME_CHARS).is_some() {
            return Err(invalid(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(forbidden) {
            return Err(invalid(
                "name",
                "must not contain control or text-direction characters",
            ));
        }
        let initials = initials_of(name);
        if initials.is_empty() {
            return Err(invalid("name", "must have at least one word"));
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
        let background = match background {
            Some(text) => parse_colour(text)?,
            None => {
                let digest = Sha256::digest(name.trim().to_lowercase().as_bytes());
                PALETTE[usize::from(digest[0]) % PALETTE.len()]
            }
        };
        Ok(InitialsParams {
            initials,
            width,
            height,
            background,
            output: output.map(|o| Output::named(o, OUTPUTS)).transpose()?,
        })
    }

    /// The background as six hex digits.
    pub fn background_hex(&self) -> String {
        hex::encode(self.background)
    }

    /// The `ETag` of the image in `output`: a digest of what decides its bytes.
    pub fn etag(&self, output: Output) -> String {
        super::etag(&[
            "initials1",
            &self.initials,
            &self.width.to_string(),
            &self.height.to_string(),
            &self.background_hex(),
            output.extension(),
        ])
    }

    /// White letters on a dark background, near-black ones on a light one.
    fn foreground(&self) -> [u8; 3] {
        let [r, g, b] = self.background.map(f32::from);
        if 0.299 * r + 0.587 * g + 0.114 * b > 186.0 {
            [0x21, 0x21, 0x21]
        } else {
            [0xFF, 0xFF, 0xFF]
        }
    }
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn svg(params: &InitialsParams) -> String {
    let (w, h) = (params.width, params.height);
    let font_size = FONT_SCALE * w.min(h) as f32;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#{bg}\"/>\
         <text x=\"50%\" y=\"50%\" dy=\".35em\" text-anchor=\"middle\" \
         font-family=\"DejaVu Sans, Verdana, Arial, sans-serif\" font-weight=\"bold\" \
         font-size=\"{font_size:.1}\" fill=\"#{fg}\">{text}</text></svg>",
        bg = params.background_hex(),
        fg = hex::encode(params.foreground()),
        text = xml_escape(&params.initials),
    )
}

/// Glyph outlines into a path, font units scaled and flipped (fonts go up).
struct Outline<'a> {
    path: &'a mut PathBuilder,
    x: f32,
    baseline: f32,
    scale: f32,
}

impl Outline<'_> {
    fn at(&self, x: f32, y: f32) -> (f32, f32) {
        (self.x + x * self.scale, self.baseline - y * self.scale)
    }
}

impl ttf_parser::OutlineBuilder for Outline<'_> {
    fn move_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.at(x, y);
        self.path.move_to(x, y);
    }
    fn line_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.at(x, y);
        self.path.line_to(x, y);
    }
    fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
        let (x1, y1) = self.at(x1, y1);
        let (x, y) = self.at(x, y);
        self.path.quad_to(x1, y1, x, y);
    }
    fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
        let (x1, y1) = self.at(x1, y1);
        let (x2, y2) = self.at(x2, y2);
        let (x, y) = self.at(x, y);
        self.path.cubic_to(x1, y1, x2, y2, x, y);
    }
    fn close(&mut self) {
        self.path.close();
    }
}

/// The pixels of the initials: background filled, letters centred on the middle
/// of the capitals.
fn raster(params: &InitialsParams) -> Result<Vec<u8>, AppError> {
    let failed = |what: &str| AppError::Internal(anyhow::anyhow!("initials: {what}"));
    let face = ttf_parser::Face::parse(FONT, 0).map_err(|_| failed("the font does not parse"))?;
    let [r, g, b] = params.background;
    let mut pixmap = Pixmap::new(params.width, params.height).ok_or_else(|| failed("no pixmap"))?;
    pixmap.fill(tiny_skia::Color::from_rgba8(r, g, b, 255));
    let (w, h) = (params.width as f32, params.height as f32);
    let cap = f32::from(face.capital_height().unwrap_or(face.ascender()));
    let scale = FONT_SCALE * w.min(h) / cap;
    let glyphs: Vec<_> = params
        .initials
        .chars()
        .filter_map(|c| face.glyph_index(c))
        .collect();
    let advance: f32 = glyphs
        .iter()
        .map(|&g| f32::from(face.glyph_hor_advance(g).unwrap_or(0)) * scale)
        .sum();
    let mut path = PathBuilder::new();
    let mut outline = Outline {
        path: &mut path,
        x: (w - advance) / 2.0,
        baseline: (h + cap * scale) / 2.0,
        scale,
    };
    for glyph in glyphs {
        face.outline_glyph(glyph, &mut outline);
        outline.x += f32::from(face.glyph_hor_advance(glyph).unwrap_or(0)) * scale;
    }
    if let Some(path) = path.finish() {
        let [r, g, b] = params.foreground();
        let mut paint = Paint::default();
        paint.set_color_rgba8(r, g, b, 255);
        paint.anti_alias = true;
        pixmap.fill_path(
            &path,
            &paint,
            FillRule::Winding,
            Transform::identity(),
            None,
        );
    }
    // Opaque throughout: the premultiplied pixels are the colours.
    Ok(pixmap
        .pixels()
        .iter()
        .flat_map(|p| [p.red(), p.green(), p.blue()])
        .collect())
}

/// The initials of `params` in `output`. CPU-bound: run it on the blocking pool.
pub fn render(params: &InitialsParams, output: Output) -> Result<Vec<u8>, AppError> {
    match output {
        Output::Svg => Ok(svg(params).into_bytes()),
        raster_output => output::encode_rgb(
            &raster(params)?,
            params.width,
            params.height,
            raster_output,
            JPEG_QUALITY,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(name: &str) -> InitialsParams {
        InitialsParams::new(Some(name), None, None, None, None).unwrap()
    }

    #[test]
    fn initials_are_the_first_graphemes_of_two_words() {
        assert_eq!(initials_of("ada lovelace byron"), "AL");
        assert_eq!(initials_of("  Émile\tzola "), "ÉZ");
        assert_eq!(
            initials_of("e\u{301}tienne"),
            "E\u{301}",
            "a grapheme, not a char"
        );
        assert_eq!(initials_of("ß"), "SS");
        assert_eq!(initials_of("Ωmega"), "Ω");
        assert_eq!(initials_of("李 小龍"), "李小");
        assert_eq!(initials_of("   "), "");
    }

    #[test]
    fn names_are_checked() {
        let field = |name: &str| match InitialsParams::new(Some(name), None, None, None, None) {
            Err(AppError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&"a".repeat(MAX_NAME_CHARS + 1)), "name");
        assert_eq!(field("bad\u{0}name"), "name");
        assert_eq!(field("bad\nname"), "name");
        assert_eq!(field("evil\u{202E}name"), "name");
        assert_eq!(field(" "), "name");
        assert!(
            InitialsParams::new(Some(&"é".repeat(MAX_NAME_CHARS)), None, None, None, None).is_ok()
        );
    }

    #[test]
    fn the_background_is_stable_per_name_or_given() {
        assert_eq!(
            params("Ada Lovelace").background,
            params("ada lovelace ").background
        );
        let given = InitialsParams::new(Some("x"), None, None, Some("#00FF7f"), None).unwrap();
        assert_eq!(given.background, [0, 255, 127]);
        for bad in ["00ff7", "zzzzzz", "#1234567"] {
            assert!(InitialsParams::new(Some("x"), None, None, Some(bad), None).is_err());
        }
    }

    #[test]
    fn png_letters_are_drawn_in_the_middle_on_the_background() {
        let p =
            InitialsParams::new(Some("Hanna Ito"), Some(100), None, Some("000000"), None).unwrap();
        let png = render(&p, Output::Png).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (100, 100));
        assert_eq!(img.get_pixel(2, 2).0, [0, 0, 0]);
        let white = img.pixels().filter(|p| p.0[0] > 200).count();
        assert!(white > 300, "letters drawn: {white}");
        let left = (0..20).flat_map(|x| (0..100).map(move |y| (x, y)));
        assert!(
            left.clone().all(|(x, y)| img.get_pixel(x, y).0[0] < 50),
            "centred"
        );
    }

    #[test]
    fn svg_escapes_the_letters() {
        let p = params("<b &c");
        let svg = String::from_utf8(render(&p, Output::Svg).unwrap()).unwrap();
        assert!(svg.contains(">&lt;&amp;</text>"), "{svg}");
    }
}
