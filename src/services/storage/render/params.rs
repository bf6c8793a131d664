//! The preview endpoint's query parameters: their types, their ranges (the same as
//! Appwrite's `getFilePreview`), parsing from the query string, and the canonical
//! cache key derived from them.

use std::fmt;

use super::PreviewError;

/// Largest `width` / `height` a client may ask for.
pub const MAX_DIMENSION: u32 = 4000;
/// Largest `borderWidth`.
pub const MAX_BORDER_WIDTH: u32 = 100;
/// Largest `borderRadius`.
pub const MAX_BORDER_RADIUS: u32 = 4000;

/// Where the kept part of the image sits when `width` and `height` are both given and
/// the image is cropped to that aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gravity {
    #[default]
    Center,
    TopLeft,
    Top,
    TopRight,
    Left,
    Right,
    BottomLeft,
    Bottom,
    BottomRight,
}

impl Gravity {
    const ALL: [Gravity; 9] = [
        Gravity::Center,
        Gravity::TopLeft,
        Gravity::Top,
        Gravity::TopRight,
        Gravity::Left,
        Gravity::Right,
        Gravity::BottomLeft,
        Gravity::Bottom,
        Gravity::BottomRight,
    ];

    /// The query-string spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Gravity::Center => "center",
            Gravity::TopLeft => "top-left",
            Gravity::Top => "top",
            Gravity::TopRight => "top-right",
            Gravity::Left => "left",
            Gravity::Right => "right",
            Gravity::BottomLeft => "bottom-left",
            Gravity::Bottom => "bottom",
            Gravity::BottomRight => "bottom-right",
        }
    }

    /// Parses the query-string spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<Gravity> {
        Gravity::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s))
    }

    /// Horizontal and vertical position of the kept window inside the source, each
    /// 0 (start), 0.5 (middle) or 1 (end).
    pub(crate) fn anchor(self) -> (f64, f64) {
        match self {
            Gravity::Center => (0.5, 0.5),
            Gravity::TopLeft => (0.0, 0.0),
            Gravity::Top => (0.5, 0.0),
            Gravity::TopRight => (1.0, 0.0),
            Gravity::Left => (0.0, 0.5),
            Gravity::Right => (1.0, 0.5),
            Gravity::BottomLeft => (0.0, 1.0),
            Gravity::Bottom => (0.5, 1.0),
            Gravity::BottomRight => (1.0, 1.0),
        }
    }
}

impl fmt::Display for Gravity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encoding of the rendered preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
    Gif,
    Webp,
}

impl OutputFormat {
    /// Parses `jpg`, `jpeg`, `png`, `gif` or `webp` (case-insensitive).
    pub fn parse(s: &str) -> Option<OutputFormat> {
        match s.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(OutputFormat::Jpeg),
            "png" => Some(OutputFormat::Png),
            "gif" => Some(OutputFormat::Gif),
            "webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }

    /// The format of a file of this MIME type, when it is one we can decode.
    pub fn from_mime_type(mime_type: &str) -> Option<OutputFormat> {
        match essence(mime_type).as_str() {
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(OutputFormat::Jpeg),
            "image/png" | "image/apng" => Some(OutputFormat::Png),
            "image/gif" => Some(OutputFormat::Gif),
            "image/webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Gif => "image/gif",
            OutputFormat::Webp => "image/webp",
        }
    }

    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Gif => "gif",
            OutputFormat::Webp => "webp",
        }
    }

    /// Whether the encoding keeps an alpha channel. GIF keeps only fully transparent
    /// pixels, which is still worth preserving.
    pub fn has_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }
}

/// The lowercase `type/subtype` part of a MIME type, without parameters.
pub(crate) fn essence(mime_type: &str) -> String {
    mime_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// An opaque sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const BLACK: Rgb = Rgb(0, 0, 0);
    pub const WHITE: Rgb = Rgb(255, 255, 255);

    /// Parses `RRGGBB` or `RGB` (CSS shorthand, each digit doubled), with or without a
    /// leading `#`, case-insensitive.
    pub fn parse_hex(s: &str) -> Option<Rgb> {
        let hex = s.strip_prefix('#').unwrap_or(s);
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let digit = |i: usize| u8::from_str_radix(&hex[i..=i], 16).ok();
        match hex.len() {
            6 => {
                let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
                Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
            }
            3 => Some(Rgb(digit(0)? * 17, digit(1)? * 17, digit(2)? * 17)),
            _ => None,
        }
    }

    /// Lowercase `rrggbb`, no `#`.
    pub fn to_hex(self) -> String {
        format!("{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// Everything the preview endpoint lets a client choose.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewParams {
    /// 0–4000; 0 derives it from `height` keeping the aspect ratio, or keeps the
    /// original width when `height` is 0 as well.
    pub width: u32,
    /// 0–4000; like `width`.
    pub height: u32,
    /// Which part is kept when cropping to `width`×`height`.
    pub gravity: Gravity,
    /// 0–100 for lossy encodings; `None` (query value -1) means the default of 90.
    pub quality: Option<u8>,
    /// 0–100 pixels, added on every side.
    pub border_width: u32,
    pub border_color: Rgb,
    /// 0–4000 pixels; clamped to half the shorter side when drawn.
    pub border_radius: u32,
    /// 0–1, multiplies the alpha channel.
    pub opacity: f32,
    /// -360–360 degrees, clockwise.
    pub rotation: i32,
    /// Fills transparent areas; `None` keeps them transparent where the output allows.
    pub background: Option<Rgb>,
    /// `None`: same format as the input when it is one we decode, else JPEG (PNG for
    /// type icons).
    pub output: Option<OutputFormat>,
}

impl Default for PreviewParams {
    fn default() -> Self {
        PreviewParams {
            width: 0,
            height: 0,
            gravity: Gravity::Center,
            quality: None,
            border_width: 0,
            border_color: Rgb::BLACK,
            border_radius: 0,
            opacity: 1.0,
            rotation: 0,
            background: None,
            output: None,
        }
    }
}

impl PreviewParams {
    /// From the query string pairs. Unknown keys and repeated keys are refused; each
    /// value is checked against its range and the error names the parameter and the
    /// allowed values. An empty value means "not given" (so the default applies), which
    /// is what form-built URLs send for untouched fields. `token` is accepted and
    /// ignored: it authenticates the request and is checked elsewhere.
    pub fn from_query(pairs: &[(String, String)]) -> Result<PreviewParams, PreviewError> {
        let mut params = PreviewParams::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            // Other keys are left alone, as Appwrite leaves them (a cache-buster,
            // an SDK's own): they change neither the image nor its cache key.
            let Some(name) = param_name(key) else {
                continue;
            };
            if seen.contains(&name) {
                return Err(invalid(name, "is given more than once"));
            }
            seen.push(name);
            let value = value.trim();
            if value.is_empty() || name == "token" {
                continue;
            }
            match name {
                "width" => params.width = parse_u32(name, value, 0, MAX_DIMENSION)?,
                "height" => params.height = parse_u32(name, value, 0, MAX_DIMENSION)?,
                "gravity" => {
                    params.gravity = Gravity::parse(value).ok_or_else(|| {
                        let all: Vec<&str> = Gravity::ALL.iter().map(|g| g.as_str()).collect();
                        invalid(name, format!("must be one of {}", all.join(", ")))
                    })?
                }
                "quality" => {
                    let q = parse_i64(name, value, -1, 100)?;
                    params.quality = u8::try_from(q).ok();
                }
                "borderWidth" => params.border_width = parse_u32(name, value, 0, MAX_BORDER_WIDTH)?,
                "borderColor" => params.border_color = parse_color(name, value)?,
                "borderRadius" => {
                    params.border_radius = parse_u32(name, value, 0, MAX_BORDER_RADIUS)?
                }
                "opacity" => {
                    let range = || invalid(name, "must be a number from 0 to 1");
                    let o: f32 = value.parse().map_err(|_| range())?;
                    if !(0.0..=1.0).contains(&o) {
                        return Err(range());
                    }
                    params.opacity = o;
                }
                "rotation" => {
                    params.rotation = parse_i64(name, value, -360, 360)? as i32;
                }
                "background" => params.background = Some(parse_color(name, value)?),
                "output" => {
                    params.output =
                        Some(OutputFormat::parse(value).ok_or_else(|| {
                            invalid(name, "must be one of jpg, jpeg, png, gif, webp")
                        })?)
                }
                _ => unreachable!("param_name only returns listed names"),
            }
        }
        Ok(params)
    }

    /// A stable string identifying the rendering these parameters ask for, for use in
    /// a cache key together with the file's identity. Parameters that render the same
    /// are written the same way (`jpg`/`jpeg`, rotation -90/270, colour case), and the
    /// leading version changes whenever the rendering itself changes.
    pub fn cache_key(&self) -> String {
        format!(
            "pv1:w{}:h{}:g{}:q{}:bw{}:bc{}:br{}:o{}:r{}:bg{}:out{}",
            self.width,
            self.height,
            self.gravity.as_str(),
            self.quality.map_or(-1, i32::from),
            self.border_width,
            self.border_color.to_hex(),
            self.border_radius,
            self.opacity,
            self.rotation.rem_euclid(360),
            self.background.map_or_else(|| "-".to_owned(), Rgb::to_hex),
            self.output.map_or("-", OutputFormat::extension),
        )
    }
}

const PARAM_NAMES: [&str; 12] = [
    "width",
    "height",
    "gravity",
    "quality",
    "borderWidth",
    "borderColor",
    "borderRadius",
    "opacity",
    "rotation",
    "background",
    "output",
    "token",
];

/// The `'static` spelling of a known key, so errors can carry it.
fn param_name(key: &str) -> Option<&'static str> {
    PARAM_NAMES.into_iter().find(|n| *n == key)
}

fn invalid(name: &'static str, reason: impl Into<String>) -> PreviewError {
    PreviewError::InvalidParam {
        name,
        reason: reason.into(),
    }
}

fn parse_i64(name: &'static str, value: &str, min: i64, max: i64) -> Result<i64, PreviewError> {
    let range = || invalid(name, format!("must be an integer from {min} to {max}"));
    let n: i64 = value.parse().map_err(|_| range())?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(range())
    }
}

fn parse_u32(name: &'static str, value: &str, min: u32, max: u32) -> Result<u32, PreviewError> {
    parse_i64(name, value, min.into(), max.into()).map(|n| n as u32)
}

fn parse_color(name: &'static str, value: &str) -> Result<Rgb, PreviewError> {
    Rgb::parse_hex(value).ok_or_else(|| {
        invalid(
            name,
            "must be a hex colour: RRGGBB or RGB, optionally with a leading #",
        )
    })
}
