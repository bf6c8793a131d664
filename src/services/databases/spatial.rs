//! Spatial attributes as Appwrite's clients write them: a point `[x, y]`, a
//! line `[[x, y], …]` and a polygon `[[[x, y], …], …]` (its rings, the first
//! the outline; a single ring may be given without the outer list), x a
//! longitude from -180 to 180 and y a latitude from -90 to 90.
//!
//! Values are stored as their JSON text on both backends. This module owns
//! what they mean: checking a written value, the shape of a value in a
//! condition, and the relations between two shapes (equals, contains,
//! intersects, crosses, overlaps, touches, and distance, planar or in meters on
//! a sphere). MariaDB answers conditions with its own `ST_` functions over the
//! stored text; SQLite calls [`SQLITE_FUNCTION`], which this module registers
//! on every connection and which answers with the same code a subscription's
//! filter uses, so that a list and a subscription agree on SQLite.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Once;

use geo::{
    BoundingRect, Coord, CoordsIter, Distance, Euclidean, Geometry, LineString, Point, Polygon,
    Relate,
};
use serde_json::Value;

/// The radius a distance in meters is measured on (Appwrite's and MariaDB's
/// `ST_Distance_Sphere` as Appwrite calls it).
pub const EARTH_RADIUS_METERS: f64 = 6_371_000.0;

/// The most points one shape holds, all rings counted. Comparing two shapes
/// works through pairs of their segments (and records where they cross), so
/// this and [`MAX_CONDITION_POINTS`] bound the work one document costs a
/// spatial condition: at most 100,000 pairs.
pub const MAX_POINTS: usize = 1_000;

/// The most points of the shape a condition gives (a query's, a filter's, a
/// subscription's), compared with every document's.
pub const MAX_CONDITION_POINTS: usize = 100;

/// The most times a line may cross itself (a track that loops back): each
/// crossing is a node every comparison of the line records again.
pub const MAX_LINE_CROSSINGS: usize = 100;

/// The most rings of a polygon.
pub const MAX_RINGS: usize = 100;

/// The SQLite function answering one spatial condition:
/// `nimbus_spatial(relation, stored, shape, distance)`, 1 or 0, or null when
/// `stored` is null.
pub const SQLITE_FUNCTION: &str = "nimbus_spatial";

/// The SQLite function giving a corner of a stored shape's bounding box, what
/// a spatial index's R*Tree holds: `nimbus_bbox(stored, corner)`, corner 0 to 3
/// for the least x, the most x, the least y, the most y; null for no shape.
pub const SQLITE_BOX_FUNCTION: &str = "nimbus_bbox";

/// The kind of shape an attribute holds or a condition gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Point,
    Line,
    Polygon,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Point => "point",
            Shape::Line => "line",
            Shape::Polygon => "polygon",
        }
    }

    /// The GeoJSON type of the shape.
    pub fn geojson_type(self) -> &'static str {
        match self {
            Shape::Point => "Point",
            Shape::Line => "LineString",
            Shape::Polygon => "Polygon",
        }
    }

    /// How the shape is written: what an error shows.
    fn example(self) -> &'static str {
        match self {
            Shape::Point => "[x, y]",
            Shape::Line => "[[x, y], [x, y], …]",
            Shape::Polygon => "[[[x, y], …, the first point again], …]",
        }
    }
}

/// How a stored shape relates to the shape a condition gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Equals,
    Contains,
    Intersects,
    Crosses,
    Overlaps,
    Touches,
    /// The distance compared with the condition's: `=`, `<>`, `>`, `<`.
    DistanceEqual,
    DistanceNotEqual,
    DistanceGreaterThan,
    DistanceLessThan,
}

impl Relation {
    const ALL: [Relation; 10] = [
        Relation::Equals,
        Relation::Contains,
        Relation::Intersects,
        Relation::Crosses,
        Relation::Overlaps,
        Relation::Touches,
        Relation::DistanceEqual,
        Relation::DistanceNotEqual,
        Relation::DistanceGreaterThan,
        Relation::DistanceLessThan,
    ];

    /// The number the SQLite function takes for it.
    pub fn code(self) -> i64 {
        Relation::ALL
            .iter()
            .position(|r| *r == self)
            .map_or(-1, |i| i as i64)
    }

    fn of_code(code: i64) -> Option<Relation> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Relation::ALL.get(i).copied())
    }

    /// Appwrite's method for it.
    pub fn name(self) -> &'static str {
        match self {
            Relation::Equals => "equal",
            Relation::Contains => "contains",
            Relation::Intersects => "intersects",
            Relation::Crosses => "crosses",
            Relation::Overlaps => "overlaps",
            Relation::Touches => "touches",
            Relation::DistanceEqual => "distanceEqual",
            Relation::DistanceNotEqual => "distanceNotEqual",
            Relation::DistanceGreaterThan => "distanceGreaterThan",
            Relation::DistanceLessThan => "distanceLessThan",
        }
    }

    /// The relation of one of Appwrite's methods, with whether the method
    /// negates it (`notIntersects`).
    pub fn of_method(method: &str) -> Option<(Relation, bool)> {
        let (positive, negated) = match method.strip_prefix("not") {
            Some(rest) if !rest.is_empty() => {
                let mut chars = rest.chars();
                let first = chars.next().map(|c| c.to_ascii_lowercase());
                (first.into_iter().chain(chars).collect::<String>(), true)
            }
            _ => (method.to_string(), false),
        };
        let relation = Relation::ALL.into_iter().find(|r| {
            r.name() == positive
                && !r.is_distance()
                && !matches!(r, Relation::Equals | Relation::Contains)
        });
        relation.map(|r| (r, negated)).or_else(|| {
            Relation::ALL
                .into_iter()
                .find(|r| r.is_distance() && r.name() == method)
                .map(|r| (r, false))
        })
    }

    pub fn is_distance(self) -> bool {
        matches!(
            self,
            Relation::DistanceEqual
                | Relation::DistanceNotEqual
                | Relation::DistanceGreaterThan
                | Relation::DistanceLessThan
        )
    }

    /// MariaDB's function for a relation that is not a distance.
    pub fn mysql_function(self) -> &'static str {
        match self {
            Relation::Equals => "ST_Equals",
            Relation::Contains => "ST_Contains",
            Relation::Intersects => "ST_Intersects",
            Relation::Crosses => "ST_Crosses",
            Relation::Overlaps => "ST_Overlaps",
            _ => "ST_Touches",
        }
    }

    /// The comparison of a distance relation.
    pub fn distance_operator(self) -> &'static str {
        match self {
            Relation::DistanceEqual => "=",
            Relation::DistanceNotEqual => "<>",
            Relation::DistanceGreaterThan => ">",
            _ => "<",
        }
    }
}

/// A shape checked and in canonical form: numbers as floats, a polygon as its
/// list of rings.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub shape: Shape,
    pub value: Value,
}

impl Checked {
    /// The stored form.
    pub fn text(&self) -> String {
        self.value.to_string()
    }

    /// The shape as a GeoJSON geometry (what MariaDB reads).
    pub fn geojson(&self) -> String {
        geojson(self.shape, &self.text())
    }

    pub fn geometry(&self) -> Geometry<f64> {
        geometry(self.shape, &self.value).unwrap_or(Geometry::Point(Point::new(0.0, 0.0)))
    }

    /// The least x, the most x, the least y and the most y of its points.
    pub fn bounding_box(&self) -> [f64; 4] {
        bounding_box(&self.geometry()).unwrap_or([0.0; 4])
    }
}

/// The least x, the most x, the least y and the most y of a shape's points.
fn bounding_box(geometry: &Geometry<f64>) -> Option<[f64; 4]> {
    let rect = geometry.bounding_rect()?;
    Some([rect.min().x, rect.max().x, rect.min().y, rect.max().y])
}

/// A MariaDB expression reading the stored coordinates in `column` (an SQL
/// expression) as a geometry of `shape`.
pub fn mysql_geometry(shape: Shape, column: &str) -> String {
    format!(
        r#"ST_GeomFromGeoJSON(CONCAT('{{"type":"{}","coordinates":', {column}, '}}'))"#,
        shape.geojson_type()
    )
}

/// A GeoJSON geometry of `shape` around its stored coordinates.
pub fn geojson(shape: Shape, coordinates: &str) -> String {
    format!(
        r#"{{"type":"{}","coordinates":{coordinates}}}"#,
        shape.geojson_type()
    )
}

/// Checks a value written to an attribute holding `shape`: its coordinates, or
/// the shape written as WKT (`POINT(30 10)`), as Appwrite takes it too.
pub fn check(shape: Shape, value: &Value) -> Result<Checked, String> {
    if let Value::String(text) = value {
        let (written, coordinates) = from_wkt(text)?;
        if written != shape {
            return Err(format!(
                "expected a {}, and the WKT is a {}",
                shape.name(),
                written.name()
            ));
        }
        return check(shape, &coordinates);
    }
    let mut points = 0;
    let value = match shape {
        Shape::Point => point(value, "the point", &mut points)?,
        Shape::Line => line(value, &mut points)?,
        Shape::Polygon => polygon(value, &mut points)?,
    };
    let checked = Checked { shape, value };
    check_crossings(&checked)?;
    Ok(checked)
}

/// Refuses a polygon whose rings cross themselves or each other (touching at a
/// point is allowed), and a line that crosses itself more than
/// [`MAX_LINE_CROSSINGS`] times. Segments are swept in order of their least x,
/// so only those whose spans of x overlap are compared.
fn check_crossings(checked: &Checked) -> Result<(), String> {
    use geo::line_intersection::{LineIntersection, line_intersection};
    let rings: Vec<LineString<f64>> = match checked.geometry() {
        Geometry::LineString(line) => vec![line],
        Geometry::Polygon(polygon) => std::iter::once(polygon.exterior().clone())
            .chain(polygon.interiors().iter().cloned())
            .collect(),
        _ => return Ok(()),
    };
    // (ring, index in the ring, segment), by least x.
    let mut segments: Vec<(usize, usize, geo::Line<f64>)> = rings
        .iter()
        .enumerate()
        .flat_map(|(r, ring)| ring.lines().enumerate().map(move |(i, l)| (r, i, l)))
        .collect();
    let least_x = |line: &geo::Line<f64>| line.start.x.min(line.end.x);
    let most_x = |line: &geo::Line<f64>| line.start.x.max(line.end.x);
    segments.sort_by(|a, b| least_x(&a.2).total_cmp(&least_x(&b.2)));
    let polygon = checked.shape == Shape::Polygon;
    let mut crossings = 0;
    for (at, (ring, i, line)) in segments.iter().enumerate() {
        for (other_ring, j, other) in &segments[at + 1..] {
            if least_x(other) > most_x(line) {
                break;
            }
            let segments_in_ring = rings[*ring].lines().len();
            let adjacent = ring == other_ring
                && (i.abs_diff(*j) == 1 || (polygon && i.abs_diff(*j) == segments_in_ring - 1));
            let crosses = match line_intersection(*line, *other) {
                Some(LineIntersection::SinglePoint { is_proper, .. }) => is_proper,
                Some(LineIntersection::Collinear { intersection }) => {
                    !adjacent || intersection.start != intersection.end
                }
                None => false,
            };
            if !crosses {
                continue;
            }
            if polygon {
                return Err(if ring == other_ring {
                    format!("ring #{ring} of the polygon crosses itself")
                } else {
                    format!(
                        "rings #{} and #{} of the polygon cross",
                        ring.min(other_ring),
                        ring.max(other_ring)
                    )
                });
            }
            crossings += 1;
            if crossings > MAX_LINE_CROSSINGS {
                return Err(format!(
                    "a line crosses itself at most {MAX_LINE_CROSSINGS} times"
                ));
            }
        }
    }
    Ok(())
}

/// The shape a condition gives, told by how deeply its coordinates nest: a
/// point, a line, or a polygon (rings, or one ring given alone when a line
/// would not do: see `ring_alone`).
pub fn check_any(value: &Value, ring_alone: bool) -> Result<Checked, String> {
    let depth = nesting(value);
    let shape = match depth {
        1 => Shape::Point,
        2 if ring_alone => Shape::Polygon,
        2 => Shape::Line,
        3 => Shape::Polygon,
        _ => {
            return Err(
                "expected a point [x, y], a line [[x, y], …] or a polygon [[[x, y], …], …]".into(),
            );
        }
    };
    let checked = check(shape, value)?;
    let points = checked.geometry().coords_count();
    if points > MAX_CONDITION_POINTS {
        return Err(format!(
            "a condition's shape has at most {MAX_CONDITION_POINTS} points (this one {points})"
        ));
    }
    Ok(checked)
}

/// A point, line or polygon written as WKT, with its coordinates as Appwrite's
/// clients write them (a polygon's rings closed).
fn from_wkt(text: &str) -> Result<(Shape, Value), String> {
    use wkt::TryFromWkt as _;
    let text = text.trim();
    // Checked before the parser sees it: the parser reads nested collections
    // by recursion, without a bound, and a point, line or polygon nests two
    // levels of parentheses at most.
    let kind = text
        .split(|c: char| c == '(' || c.is_whitespace())
        .next()
        .unwrap_or_default();
    let known = ["POINT", "LINESTRING", "POLYGON"]
        .iter()
        .any(|name| kind.eq_ignore_ascii_case(name));
    if !known || text.len() > MAX_WKT_BYTES || parenthesis_depth(text) > 2 {
        return Err(wkt_expected());
    }
    let coordinates = |line: &LineString<f64>| {
        Value::Array(
            line.coords()
                .map(|c| Value::Array(vec![float(c.x), float(c.y)]))
                .collect(),
        )
    };
    match Geometry::<f64>::try_from_wkt_str(text) {
        Ok(Geometry::Point(point)) => Ok((
            Shape::Point,
            Value::Array(vec![float(point.x()), float(point.y())]),
        )),
        Ok(Geometry::LineString(line)) => Ok((Shape::Line, coordinates(&line))),
        Ok(Geometry::Polygon(polygon)) => Ok((
            Shape::Polygon,
            Value::Array(
                std::iter::once(polygon.exterior())
                    .chain(polygon.interiors())
                    .map(coordinates)
                    .collect(),
            ),
        )),
        Ok(_) | Err(_) => Err(wkt_expected()),
    }
}

/// Longest shape written as WKT: its most points, each with two long numbers.
const MAX_WKT_BYTES: usize = MAX_POINTS * 64;

/// How deeply `text`'s parentheses nest (a closing one too many counts as
/// deep, so that the parser refuses it).
fn parenthesis_depth(text: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0;
    for byte in text.bytes() {
        match byte {
            b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' => match depth.checked_sub(1) {
                Some(outer) => depth = outer,
                None => return usize::MAX,
            },
            _ => {}
        }
    }
    deepest
}

fn wkt_expected() -> String {
    "expected coordinates ([x, y], [[x, y], …], [[[x, y], …], …]) or WKT of one shape \
     (POINT(x y), LINESTRING(x y, …), POLYGON((x y, …), …))"
        .into()
}

/// How many lists hold the first number: 1 for a point.
fn nesting(value: &Value) -> usize {
    let mut depth = 0;
    let mut at = value;
    while let Value::Array(items) = at {
        depth += 1;
        match items.first() {
            Some(first) if depth < 4 => at = first,
            _ => return if depth >= 4 { 0 } else { depth },
        }
    }
    if at.is_number() { depth } else { 0 }
}

fn point(value: &Value, what: &str, points: &mut usize) -> Result<Value, String> {
    let Value::Array(xy) = value else {
        return Err(format!("{what} must be an array of two numbers [x, y]"));
    };
    let [x, y] = xy.as_slice() else {
        return Err(format!("{what} must be an array of two numbers [x, y]"));
    };
    let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) else {
        return Err(format!("the coordinates of {what} must be numbers"));
    };
    if !(-180.0..=180.0).contains(&x) {
        return Err(format!(
            "the longitude (x) of {what} must be between -180 and 180, got {x}"
        ));
    }
    if !(-90.0..=90.0).contains(&y) {
        return Err(format!(
            "the latitude (y) of {what} must be between -90 and 90, got {y}"
        ));
    }
    *points += 1;
    if *points > MAX_POINTS {
        return Err(format!("a shape has at most {MAX_POINTS} points"));
    }
    Ok(Value::Array(vec![float(x), float(y)]))
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn points_of(value: &Value, what: &str, points: &mut usize) -> Result<Vec<Value>, String> {
    let Value::Array(items) = value else {
        return Err(format!("{what} must be an array of points [x, y]"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| point(item, &format!("point #{i} of {what}"), points))
        .collect()
}

fn line(value: &Value, points: &mut usize) -> Result<Value, String> {
    let line = points_of(value, "the line", points)?;
    if line.len() < 2 {
        return Err("a line has at least two points".into());
    }
    Ok(Value::Array(line))
}

fn polygon(value: &Value, points: &mut usize) -> Result<Value, String> {
    let Value::Array(rings) = value else {
        return Err(format!("a polygon is written {}", Shape::Polygon.example()));
    };
    // One ring given alone: `[[x, y], …]`.
    if nesting(value) == 2 {
        return Ok(Value::Array(vec![ring(value, 0, points)?]));
    }
    if rings.is_empty() {
        return Err("a polygon has at least one ring".into());
    }
    if rings.len() > MAX_RINGS {
        return Err(format!("a polygon has at most {MAX_RINGS} rings"));
    }
    rings
        .iter()
        .enumerate()
        .map(|(i, r)| ring(r, i, points))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn ring(value: &Value, index: usize, points: &mut usize) -> Result<Value, String> {
    let what = format!("ring #{index}");
    let ring = points_of(value, &what, points)?;
    if ring.len() < 4 {
        return Err(format!(
            "{what} must have at least 4 points to close a polygon"
        ));
    }
    if ring.first() != ring.last() {
        return Err(format!(
            "{what} must be closed: its last point is its first"
        ));
    }
    Ok(Value::Array(ring))
}

/// The geometry of a canonical value; `None` when it is not one (a stored
/// value this module did not write).
fn geometry(shape: Shape, value: &Value) -> Option<Geometry<f64>> {
    fn coord(value: &Value) -> Option<Coord<f64>> {
        match value.as_array()?.as_slice() {
            [x, y] => Some(Coord {
                x: x.as_f64()?,
                y: y.as_f64()?,
            }),
            _ => None,
        }
    }
    fn coords(value: &Value) -> Option<LineString<f64>> {
        value
            .as_array()?
            .iter()
            .map(coord)
            .collect::<Option<Vec<_>>>()
            .map(LineString::new)
    }
    Some(match shape {
        Shape::Point => Geometry::Point(Point(coord(value)?)),
        Shape::Line => Geometry::LineString(coords(value)?),
        Shape::Polygon => {
            let mut rings = value
                .as_array()?
                .iter()
                .map(coords)
                .collect::<Option<Vec<_>>>()?
                .into_iter();
            let exterior = rings.next()?;
            Geometry::Polygon(Polygon::new(exterior, rings.collect()))
        }
    })
}

/// A stored value read back: the shape its nesting shows (a stored polygon
/// always lists its rings).
pub fn stored_geometry(text: &str) -> Option<Geometry<f64>> {
    let value: Value = serde_json::from_str(text).ok()?;
    let shape = match nesting(&value) {
        1 => Shape::Point,
        2 => Shape::Line,
        3 => Shape::Polygon,
        _ => return None,
    };
    geometry(shape, &value)
}

/// Whether `stored` relates to `given` as `relation` says, `distance` being the
/// distance a distance relation compares with (in meters when `meters`, both
/// then points). `None` when the comparison could not be made.
pub fn holds(
    relation: Relation,
    stored: &Geometry<f64>,
    given: &Geometry<f64>,
    distance: f64,
    meters: bool,
) -> Option<bool> {
    // The geometry code is not ours: a panic on a degenerate shape must fail
    // one comparison, not the connection's thread or a subscription.
    std::panic::catch_unwind(|| {
        if relation.is_distance() {
            let measured = if meters {
                let (Geometry::Point(a), Geometry::Point(b)) = (stored, given) else {
                    return None;
                };
                sphere_distance(*a, *b)
            } else {
                Euclidean.distance(stored, given)
            };
            return Some(match relation {
                Relation::DistanceEqual => measured == distance,
                Relation::DistanceNotEqual => measured != distance,
                Relation::DistanceGreaterThan => measured > distance,
                _ => measured < distance,
            });
        }
        let matrix = stored.relate(given);
        Some(match relation {
            Relation::Equals => matrix.is_equal_topo(),
            Relation::Contains => matrix.is_contains(),
            Relation::Intersects => matrix.is_intersects(),
            Relation::Crosses => matrix.is_crosses(),
            Relation::Overlaps => matrix.is_overlaps(),
            _ => matrix.is_touches(),
        })
    })
    .ok()
    .flatten()
}

/// The box of longitudes and latitudes (least x, most x, least y, most y) that
/// holds every point within `meters` of the point (`x`, `y`) on the sphere: the
/// latitudes the distance reaches, and, unless that takes in a pole or the
/// longitudes cross the antimeridian, the longitudes of the circle's widest
/// point (J. P. Matuschek's bounds for a spherical cap); every longitude
/// otherwise. Grown by a hair so that rounding never leaves a point out.
pub fn sphere_box(x: f64, y: f64, meters: f64) -> [f64; 4] {
    const HAIR: f64 = 1e-9;
    let reach = (meters / EARTH_RADIUS_METERS).to_degrees() + HAIR;
    let (min_y, max_y) = (y - reach, y + reach);
    let every = [-180.0, 180.0, min_y, max_y];
    if min_y <= -90.0 || max_y >= 90.0 {
        return every;
    }
    let ratio = (meters / EARTH_RADIUS_METERS).sin() / y.to_radians().cos();
    if !(0.0..1.0).contains(&ratio) {
        return every;
    }
    let spread = ratio.asin().to_degrees() + HAIR;
    if x - spread < -180.0 || x + spread > 180.0 {
        return every;
    }
    [x - spread, x + spread, min_y, max_y]
}

/// The great-circle distance in meters between two points of longitude x and
/// latitude y, by the haversine formula (as MariaDB's `ST_Distance_Sphere`).
fn sphere_distance(a: Point<f64>, b: Point<f64>) -> f64 {
    let (lat1, lat2) = (a.y().to_radians(), b.y().to_radians());
    let half_lat = (lat2 - lat1) / 2.0;
    let half_lon = (b.x() - a.x()).to_radians() / 2.0;
    let h = half_lat.sin().powi(2) + lat1.cos() * lat2.cos() * half_lon.sin().powi(2);
    2.0 * EARTH_RADIUS_METERS * h.sqrt().min(1.0).asin()
}

/// Registers [`SQLITE_FUNCTION`] on every SQLite connection this process opens
/// from now on.
pub fn install_sqlite_function() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        crate::db::deadline::install_sqlite_extension(attach, "the spatial functions")
    });
}

const FUNCTION_NAME: &CStr = c"nimbus_spatial";
const _: () = assert!(FUNCTION_NAME.to_bytes().len() == SQLITE_FUNCTION.len());
const BOX_FUNCTION_NAME: &CStr = c"nimbus_bbox";
const _: () = assert!(BOX_FUNCTION_NAME.to_bytes().len() == SQLITE_BOX_FUNCTION.len());

unsafe extern "C" fn attach(
    db: *mut libsqlite3_sys::sqlite3,
    _error: *mut *mut c_char,
    _api: *const libsqlite3_sys::sqlite3_api_routines,
) -> c_int {
    // SAFETY: `db` is the connection being opened; the functions keep no data.
    unsafe {
        let rc = libsqlite3_sys::sqlite3_create_function_v2(
            db,
            FUNCTION_NAME.as_ptr(),
            5,
            libsqlite3_sys::SQLITE_UTF8
                | libsqlite3_sys::SQLITE_DETERMINISTIC
                | libsqlite3_sys::SQLITE_DIRECTONLY,
            std::ptr::null_mut::<c_void>(),
            Some(relate_in_sqlite),
            None,
            None,
            None,
        );
        if rc != libsqlite3_sys::SQLITE_OK {
            return rc;
        }
        // Innocuous, not direct-only: a spatial index's triggers call it.
        libsqlite3_sys::sqlite3_create_function_v2(
            db,
            BOX_FUNCTION_NAME.as_ptr(),
            2,
            libsqlite3_sys::SQLITE_UTF8
                | libsqlite3_sys::SQLITE_DETERMINISTIC
                | libsqlite3_sys::SQLITE_INNOCUOUS,
            std::ptr::null_mut::<c_void>(),
            Some(box_in_sqlite),
            None,
            None,
            None,
        )
    }
}

/// The text of argument `i` of a function call; `None` when null or not UTF-8.
///
/// # Safety
/// `argv` holds more than `i` arguments of the call being answered.
unsafe fn text_argument(argv: *mut *mut libsqlite3_sys::sqlite3_value, i: usize) -> Option<String> {
    // SAFETY: as the caller promises; the text lives until the call returns.
    unsafe {
        let value = *argv.add(i);
        let ptr = libsqlite3_sys::sqlite3_value_text(value);
        if ptr.is_null() {
            return None;
        }
        let len = usize::try_from(libsqlite3_sys::sqlite3_value_bytes(value)).ok()?;
        let bytes = std::slice::from_raw_parts(ptr, len);
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }
}

/// `nimbus_bbox(stored, corner)`.
unsafe extern "C" fn box_in_sqlite(
    context: *mut libsqlite3_sys::sqlite3_context,
    argc: c_int,
    argv: *mut *mut libsqlite3_sys::sqlite3_value,
) {
    // SAFETY: SQLite passes `argc` valid arguments.
    unsafe {
        let corner = if argc == 2 {
            usize::try_from(libsqlite3_sys::sqlite3_value_int64(*argv.add(1))).ok()
        } else {
            None
        };
        let found = match (
            corner,
            (argc == 2).then(|| text_argument(argv, 0)).flatten(),
        ) {
            (Some(corner), Some(stored)) => std::panic::catch_unwind(|| {
                stored_geometry(&stored)
                    .as_ref()
                    .and_then(bounding_box)
                    .and_then(|corners| corners.get(corner).copied())
            })
            .ok()
            .flatten(),
            _ => None,
        };
        match found {
            Some(value) => libsqlite3_sys::sqlite3_result_double(context, value),
            None => libsqlite3_sys::sqlite3_result_null(context),
        }
    }
}

/// `nimbus_spatial(relation, stored, shape, distance, meters)`.
unsafe extern "C" fn relate_in_sqlite(
    context: *mut libsqlite3_sys::sqlite3_context,
    argc: c_int,
    argv: *mut *mut libsqlite3_sys::sqlite3_value,
) {
    // SAFETY: SQLite passes `argc` valid arguments; texts live until return.
    unsafe {
        if argc != 5 {
            libsqlite3_sys::sqlite3_result_null(context);
            return;
        }
        // One comparison may work for milliseconds, and SQLite looks at the
        // deadline only between its own steps: past it, the statement stops
        // here, failing as the deadline fails it.
        if crate::db::deadline::sqlite_statement_overdue() {
            libsqlite3_sys::sqlite3_interrupt(libsqlite3_sys::sqlite3_context_db_handle(context));
            libsqlite3_sys::sqlite3_result_null(context);
            return;
        }
        let relation = Relation::of_code(libsqlite3_sys::sqlite3_value_int64(*argv));
        let distance = libsqlite3_sys::sqlite3_value_double(*argv.add(3));
        let meters = libsqlite3_sys::sqlite3_value_int64(*argv.add(4)) != 0;
        let answer = match (relation, text_argument(argv, 1), text_argument(argv, 2)) {
            (Some(relation), Some(stored), Some(given)) => {
                match (stored_geometry(&stored), stored_geometry(&given)) {
                    (Some(stored), Some(given)) => {
                        holds(relation, &stored, &given, distance, meters)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match answer {
            Some(yes) => libsqlite3_sys::sqlite3_result_int64(context, i64::from(yes)),
            None => libsqlite3_sys::sqlite3_result_null(context),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(value: Value) -> Geometry<f64> {
        check_any(&value, false).unwrap().geometry()
    }

    #[test]
    fn written_shapes_are_checked_and_made_canonical() {
        let p = check(Shape::Point, &json!([40.7128, -74])).unwrap();
        assert_eq!(p.text(), "[40.7128,-74.0]");
        let one_ring = json!([[0, 0], [1, 0], [1, 1], [0, 0]]);
        let poly = check(Shape::Polygon, &one_ring).unwrap();
        assert_eq!(
            poly.value,
            json!([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
        );
        for (shape, bad, says) in [
            (Shape::Point, json!([1]), "two numbers"),
            (Shape::Point, json!([1, "2"]), "must be numbers"),
            (Shape::Point, json!([181, 0]), "longitude"),
            (Shape::Point, json!([0, -91]), "latitude"),
            (Shape::Line, json!([[0, 0]]), "at least two points"),
            (Shape::Line, json!([0, 0]), "point #0"),
            (
                Shape::Polygon,
                json!([[[0, 0], [1, 0], [1, 1]]]),
                "at least 4 points",
            ),
            (
                Shape::Polygon,
                json!([[[0, 0], [1, 0], [1, 1], [0, 1]]]),
                "closed",
            ),
            (Shape::Polygon, json!([]), "at least one ring"),
            (Shape::Polygon, json!("POLYGON((0 0))"), "at least 4 points"),
            (
                Shape::Point,
                json!("LINESTRING(0 0, 1 1)"),
                "the WKT is a line",
            ),
            (Shape::Point, json!("MULTIPOINT((0 0))"), "WKT of one shape"),
            (
                Shape::Point,
                json!("GEOMETRYCOLLECTION(".repeat(100_000)),
                "WKT of one shape",
            ),
            (
                Shape::Point,
                json!(format!("POINT{}", "(".repeat(100_000))),
                "WKT of one shape",
            ),
            (Shape::Point, json!("POINT(1 2))"), "WKT of one shape"),
            (Shape::Point, json!("POINT(nan 1)"), "or WKT"),
            (Shape::Point, json!("POINT(200 1)"), "longitude"),
            (Shape::Point, json!("here"), "or WKT"),
        ] {
            let err = check(shape, &bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let many = Value::Array(vec![json!([0, 0]); MAX_POINTS + 1]);
        assert!(check(Shape::Line, &many).unwrap_err().contains("at most"));

        // Crossings, which every comparison of the shape would record again.
        let bowtie = json!([[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]);
        assert!(
            check(Shape::Polygon, &bowtie)
                .unwrap_err()
                .contains("ring #0 of the polygon crosses itself")
        );
        let crossing_hole = json!([
            [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]],
            [[3, 1], [5, 1], [5, 2], [3, 2], [3, 1]]
        ]);
        assert!(
            check(Shape::Polygon, &crossing_hole)
                .unwrap_err()
                .contains("rings #0 and #1 of the polygon cross")
        );
        let touching_hole = json!([
            [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]],
            [[0, 2], [2, 1], [2, 3], [0, 2]]
        ]);
        assert!(check(Shape::Polygon, &touching_hole).is_ok());
        let spike = json!([[[0, 0], [4, 0], [2, 0], [2, 2], [0, 0]]]);
        assert!(check(Shape::Polygon, &spike).is_err());
        let loop_back = json!([[0, 0], [2, 2], [2, 0], [0, 2]]);
        assert!(check(Shape::Line, &loop_back).is_ok());
        // A zigzag over a zigzag: each of 50 strokes crosses the 50 of the
        // other half, 2,500 times in all.
        let mut zigzags: Vec<Value> = (0..51)
            .map(|i| json!([i as f64 * 0.1, if i % 2 == 0 { 0 } else { 10 }]))
            .collect();
        zigzags.extend((0..51).map(|i| json!([if i % 2 == 0 { -1 } else { 6 }, i as f64 * 0.19])));
        assert!(
            check(Shape::Line, &Value::Array(zigzags))
                .unwrap_err()
                .contains("crosses itself at most")
        );
        // A condition's shape is compared with every document's: smaller.
        let circle: Vec<Value> = (0..=MAX_CONDITION_POINTS)
            .map(|i| {
                let angle = i as f64 / MAX_CONDITION_POINTS as f64 * std::f64::consts::TAU;
                json!([angle.cos(), angle.sin()])
            })
            .collect();
        let mut closed = circle.clone();
        closed[MAX_CONDITION_POINTS] = closed[0].clone();
        assert!(check(Shape::Polygon, &json!([closed])).is_ok());
        assert!(
            check_any(&json!([closed]), false)
                .unwrap_err()
                .contains("at most 100 points")
        );

        // WKT, as Appwrite takes it too: stored as the coordinates.
        let wkt = |shape, text: &str| check(shape, &json!(text)).unwrap().value;
        assert_eq!(wkt(Shape::Point, " point(30 10) "), json!([30.0, 10.0]));
        assert_eq!(
            wkt(Shape::Line, "LINESTRING (30 10, 10 30, 40 40)"),
            json!([[30.0, 10.0], [10.0, 30.0], [40.0, 40.0]])
        );
        assert_eq!(
            wkt(
                Shape::Polygon,
                "POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0), (2 2, 4 2, 4 4, 2 2))"
            ),
            json!([
                [
                    [0.0, 0.0],
                    [10.0, 0.0],
                    [10.0, 10.0],
                    [0.0, 10.0],
                    [0.0, 0.0]
                ],
                [[2.0, 2.0], [4.0, 2.0], [4.0, 4.0], [2.0, 2.0]]
            ])
        );
    }

    #[test]
    fn relations_follow_the_ogc_definitions() {
        let square = shape(json!([[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]));
        let corner = shape(json!([[[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]]));
        let across = shape(json!([[[5, 5], [12, 5], [12, 12], [5, 12], [5, 5]]]));
        let line = shape(json!([[1, 1], [1.1, 1.1], [2, 2]]));
        let yes = |r, a: &Geometry<f64>, b: &Geometry<f64>| holds(r, a, b, 0.0, false).unwrap();
        assert!(yes(Relation::Touches, &square, &corner));
        assert!(!yes(Relation::Overlaps, &square, &corner));
        assert!(yes(Relation::Overlaps, &square, &across));
        assert!(yes(Relation::Intersects, &square, &shape(json!([5, 5]))));
        assert!(!yes(Relation::Intersects, &square, &shape(json!([60, 60]))));
        assert!(yes(Relation::Contains, &line, &shape(json!([1.1, 1.1]))));
        assert!(yes(
            Relation::Crosses,
            &line,
            &shape(json!([[1, 2], [2, 1]]))
        ));
        assert!(!yes(
            Relation::Crosses,
            &line,
            &shape(json!([[0, 1], [0, 2]]))
        ));
        assert!(yes(Relation::Equals, &square, &square.clone()));
        let near = |d, r| holds(r, &shape(json!([7, 6])), &shape(json!([6, 6])), d, false);
        assert_eq!(near(1.0, Relation::DistanceEqual), Some(true));
        assert_eq!(near(0.5, Relation::DistanceLessThan), Some(false));
        let meters = |d, r| holds(r, &shape(json!([0.009, 0])), &shape(json!([0, 0])), d, true);
        assert_eq!(meters(1500.0, Relation::DistanceLessThan), Some(true));
        assert_eq!(meters(500.0, Relation::DistanceGreaterThan), Some(true));
        // Meters only between points.
        assert_eq!(
            holds(Relation::DistanceLessThan, &square, &square, 1.0, true),
            None
        );
    }

    #[test]
    fn a_box_on_the_sphere_holds_every_point_within_the_distance() {
        // Points on the circle of 300 km around (10, 45), and near the poles and
        // the antimeridian, all fall in their box.
        for (x, y, meters) in [
            (10.0, 45.0, 300_000.0),
            (179.5, 10.0, 200_000.0),
            (0.0, 89.0, 300_000.0),
            (-60.0, -70.0, 1_000_000.0),
        ] {
            let [min_x, max_x, min_y, max_y] = sphere_box(x, y, meters);
            let center = Point::new(x, y);
            for step in 0..3600 {
                let bearing = (step as f64 / 10.0).to_radians();
                let d = meters / EARTH_RADIUS_METERS * 0.999_999;
                let (lat, lon) = (y.to_radians(), x.to_radians());
                let lat2 = (lat.sin() * d.cos() + lat.cos() * d.sin() * bearing.cos()).asin();
                let lon2 = lon
                    + (bearing.sin() * d.sin() * lat.cos()).atan2(d.cos() - lat.sin() * lat2.sin());
                let (px, py) = (lon2.to_degrees(), lat2.to_degrees());
                if !(-180.0..=180.0).contains(&px) {
                    continue;
                }
                assert!(sphere_distance(center, Point::new(px, py)) < meters);
                assert!(
                    (min_x..=max_x).contains(&px) && (min_y..=max_y).contains(&py),
                    "({px}, {py}) of ({x}, {y}, {meters}) outside {:?}",
                    [min_x, max_x, min_y, max_y]
                );
            }
        }
        // Narrower than every longitude where it can be.
        let [min_x, max_x, ..] = sphere_box(10.0, 45.0, 300_000.0);
        assert!(max_x - min_x < 10.0, "{min_x} {max_x}");
    }

    #[test]
    fn a_conditions_shape_is_told_by_its_nesting() {
        assert_eq!(
            check_any(&json!([1, 2]), false).unwrap().shape,
            Shape::Point
        );
        assert_eq!(
            check_any(&json!([[1, 2], [3, 4]]), false).unwrap().shape,
            Shape::Line
        );
        let ring = json!([[0, 0], [1, 0], [1, 1], [0, 0]]);
        assert_eq!(check_any(&ring, true).unwrap().shape, Shape::Polygon);
        assert!(check_any(&json!("x"), false).is_err());
        assert!(check_any(&json!([[[[[1, 2]]]]]), false).is_err());
        assert_eq!(
            stored_geometry("[[[0.0,0.0],[1.0,0.0],[1.0,1.0],[0.0,0.0]]]")
                .map(|g| matches!(g, Geometry::Polygon(_))),
            Some(true)
        );
    }
}

#[cfg(test)]
mod deadline_tests {
    use std::time::{Duration, Instant};

    use sqlx::Connection as _;

    use super::*;
    use crate::db::Dialect;
    use crate::db::deadline::{Setup, install_sqlite_hooks, is_timeout};

    /// A zigzag of `points` points over x 0..10, crossing a taller one often.
    fn zigzag(points: usize, wide: bool) -> String {
        let coordinates: Vec<Value> = (0..points)
            .map(|i| {
                let along = i as f64 * 10.0 / points as f64;
                let across = if i % 2 == 0 { 0.0 } else { 10.0 };
                match wide {
                    true => serde_json::json!([along, across]),
                    false => serde_json::json!([across, along]),
                }
            })
            .collect();
        Value::Array(coordinates).to_string()
    }

    /// One comparison of the largest shapes works for milliseconds, and SQLite
    /// looks at the deadline only between its own steps: the function looks at
    /// it too, so a scan of such comparisons stops near the limit, as any
    /// reading statement does, and the connection goes on.
    #[tokio::test]
    async fn a_scan_of_heavy_comparisons_stops_at_the_statement_deadline() {
        sqlx::any::install_default_drivers();
        install_sqlite_hooks();
        install_sqlite_function();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("d.db").display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let limit = Duration::from_millis(100);
        Setup {
            dialect: Dialect::Sqlite,
            statement_limit: limit,
        }
        .run(&mut conn)
        .await
        .unwrap();
        let (stored, given) = (
            zigzag(MAX_POINTS, true),
            zigzag(MAX_CONDITION_POINTS, false),
        );
        let one = Instant::now();
        let crosses: Option<i64> = sqlx::query_scalar("SELECT nimbus_spatial(?, ?, ?, 0, 0)")
            .bind(Relation::Crosses.code())
            .bind(&stored)
            .bind(&given)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(crosses, Some(1));
        let per_call = one.elapsed();
        // The row's `x` in an argument: with constants only, SQLite would
        // compute the deterministic function once.
        let scan = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                    WHERE x < 1000000) SELECT COUNT(*) FROM n \
                    WHERE nimbus_spatial(?, ?, ?, x * 0, 0) = 1";
        let started = Instant::now();
        let err = sqlx::query(scan)
            .bind(Relation::Crosses.code())
            .bind(&stored)
            .bind(&given)
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
        // The limit, and the call running when it passed (with room for a busy
        // machine), not the hundred calls between two of SQLite's looks.
        let bound = limit + per_call * 10 + Duration::from_millis(500);
        assert!(
            started.elapsed() < bound,
            "{:?} for calls of {per_call:?}",
            started.elapsed()
        );
        let one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
}
