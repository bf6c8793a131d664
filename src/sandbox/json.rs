//! A guest's plain data written as JSON text by the host, as `JSON.stringify`
//! writes it (a fraction may take exponent form, the same number), for the values a guest passes most (the variables of
//! `nimbus.graphql`): `null`, booleans, numbers, strings, and arrays and plain
//! objects of those. QuickJS's own `JSON.stringify` sets up more per call than a
//! small value costs to write.
//!
//! Anything else (a `toJSON` anywhere, an accessor, a hole, a proxy, a `Date`,
//! a boxed primitive, a `BigInt`, a string that is not valid UTF-16, data nested
//! deeper than [`MAX_DEPTH`], a cycle, more than [`MAX_VALUES`] values or
//! [`MAX_BYTES`] of text) is left to `JSON.stringify`, whose memory counts
//! against the guest's limit: what is written here is the host's, so it stays
//! small. Nothing here runs guest code: properties are read as own data
//! properties, never through a getter, so giving up halfway has no effect the
//! guest could see.

use std::mem::MaybeUninit;

use rquickjs::{Array, Ctx, Object, Type, Value, qjs};

/// The deepest nesting written here; deeper data goes to `JSON.stringify`.
const MAX_DEPTH: usize = 32;
/// The most values (each element, field and the top) written here.
const MAX_VALUES: usize = 10_000;
/// The most bytes of text written here.
const MAX_BYTES: usize = 64 << 10;

/// `value` as JSON text, or `None` when it is not plain data.
pub(crate) fn plain_json<'js>(
    ctx: &Ctx<'js>,
    value: &Value<'js>,
) -> rquickjs::Result<Option<String>> {
    // A new object and a new array have the intrinsic prototypes, which the
    // guest cannot replace (it can only add to them, which is checked), and
    // the classes of an ordinary object and of an array.
    let (object, array) = (Object::new(ctx.clone())?, Array::new(ctx.clone())?);
    let (Some(object_proto), Some(array_proto)) =
        (object.get_prototype(), array.as_object().get_prototype())
    else {
        return Ok(None);
    };
    // SAFETY: plain reads of live values' classes.
    let (object_class, array_class) = unsafe {
        (
            qjs::JS_GetClassID(object.as_raw()),
            qjs::JS_GetClassID(array.as_raw()),
        )
    };
    let writer = Writer {
        ctx,
        object_proto,
        array_proto,
        object_class,
        array_class,
        values: std::cell::Cell::new(0),
    };
    if !writer.no_to_json(&writer.object_proto)? || !writer.no_to_json(&writer.array_proto)? {
        return Ok(None);
    }
    let mut out = Vec::new();
    if writer.value(value, &mut out, MAX_DEPTH)? {
        Ok(String::from_utf8(out).ok())
    } else {
        Ok(None)
    }
}

struct Writer<'a, 'js> {
    ctx: &'a Ctx<'js>,
    object_proto: Object<'js>,
    array_proto: Object<'js>,
    /// The classes of an ordinary object and of an array: a boxed primitive or
    /// any other exotic object given an intrinsic prototype is not one of them.
    object_class: qjs::JSClassID,
    array_class: qjs::JSClassID,
    /// Values written so far.
    values: std::cell::Cell<usize>,
}

/// An own property as this module reads it.
enum Own<'js> {
    Absent,
    Accessor,
    Data(Value<'js>),
}

impl<'js> Writer<'_, 'js> {
    /// Writes `value`; `false` when it is not plain data (`out` is then partial).
    fn value(&self, value: &Value<'js>, out: &mut Vec<u8>, depth: usize) -> rquickjs::Result<bool> {
        self.values.set(self.values.get() + 1);
        if self.values.get() > MAX_VALUES || out.len() > MAX_BYTES {
            return Ok(false);
        }
        match value.type_of() {
            Type::Null => out.extend_from_slice(b"null"),
            Type::Bool => out.extend_from_slice(if value.as_bool() == Some(true) {
                b"true"
            } else {
                b"false"
            }),
            Type::Int => {
                let n = value.as_int().unwrap_or_default();
                out.extend_from_slice(n.to_string().as_bytes());
            }
            Type::Float => return Ok(number(value.as_float().unwrap_or(f64::NAN), out)),
            Type::String => {
                let Some(text) = value.as_string().and_then(|s| s.to_string().ok()) else {
                    return Ok(false);
                };
                if out.len() + text.len() > MAX_BYTES {
                    return Ok(false);
                }
                // A lone surrogate comes out of QuickJS as U+FFFD, where
                // `JSON.stringify` writes an escape.
                if text.contains('\u{FFFD}') {
                    return Ok(false);
                }
                string(&text, out);
            }
            Type::Array if depth > 0 => {
                let Some(array) = value.as_array() else {
                    return Ok(false);
                };
                return self.array(array, out, depth - 1);
            }
            Type::Object if depth > 0 => {
                let Some(object) = value.as_object() else {
                    return Ok(false);
                };
                return self.object(object, out, depth - 1);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn array(&self, array: &Array<'js>, out: &mut Vec<u8>, depth: usize) -> rquickjs::Result<bool> {
        let object = array.as_object();
        if !self.is_plain(object, &self.array_proto, self.array_class)? {
            return Ok(false);
        }
        // Read as a number: a guest can make it anything up to 2^32 - 1.
        let length = match self.own(object, Key::Atom(qjs::JS_ATOM_length as qjs::JSAtom))? {
            Own::Data(length) => length.as_number().unwrap_or(f64::NAN),
            Own::Absent | Own::Accessor => return Ok(false),
        };
        if !(0.0..=MAX_VALUES as f64).contains(&length) {
            return Ok(false);
        }
        out.push(b'[');
        for i in 0..length as usize {
            if i > 0 {
                out.push(b',');
            }
            let element = match self.own(object, Key::Index(i as u32))? {
                Own::Data(element) => element,
                Own::Absent | Own::Accessor => return Ok(false),
            };
            if skipped(&element) {
                out.extend_from_slice(b"null");
            } else if !self.value(&element, out, depth)? {
                return Ok(false);
            }
        }
        out.push(b']');
        Ok(true)
    }

    fn object(
        &self,
        object: &Object<'js>,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> rquickjs::Result<bool> {
        if !self.is_plain(object, &self.object_proto, self.object_class)? {
            return Ok(false);
        }
        let ctx = self.ctx.as_raw().as_ptr();
        let mut table = MaybeUninit::<*mut qjs::JSPropertyEnum>::uninit();
        let mut count = 0u32;
        let flags = (qjs::JS_GPN_STRING_MASK | qjs::JS_GPN_ENUM_ONLY) as i32;
        // SAFETY: `object` is a live object of this context; the table is freed below.
        if unsafe {
            qjs::JS_GetOwnPropertyNames(ctx, table.as_mut_ptr(), &mut count, object.as_raw(), flags)
        } < 0
        {
            return Err(rquickjs::Error::Exception);
        }
        // SAFETY: written by the successful call above.
        let table = unsafe { table.assume_init() };
        let written = self.fields(object, table, count, out, depth);
        // SAFETY: the table and its atoms are this call's to free, once.
        unsafe { qjs::JS_FreePropertyEnum(ctx, table, count) };
        written
    }

    fn fields(
        &self,
        object: &Object<'js>,
        table: *mut qjs::JSPropertyEnum,
        count: u32,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> rquickjs::Result<bool> {
        out.push(b'{');
        let mut first = true;
        for i in 0..count as usize {
            // SAFETY: `table` holds `count` entries.
            let atom = unsafe { (*table.add(i)).atom };
            let field = match self.own(object, Key::Atom(atom))? {
                Own::Data(field) => field,
                Own::Absent => continue,
                Own::Accessor => return Ok(false),
            };
            if skipped(&field) {
                continue;
            }
            // SAFETY: the atom is alive (the table holds it); the string is owned.
            let name = unsafe {
                Value::from_raw(
                    self.ctx.clone(),
                    qjs::JS_AtomToString(self.ctx.as_raw().as_ptr(), atom),
                )
            };
            let Some(name) = name.as_string().and_then(|s| s.to_string().ok()) else {
                return Ok(false);
            };
            if name.contains('\u{FFFD}') {
                return Ok(false);
            }
            if !first {
                out.push(b',');
            }
            first = false;
            string(&name, out);
            out.push(b':');
            if !self.value(&field, out, depth)? {
                return Ok(false);
            }
        }
        out.push(b'}');
        Ok(true)
    }

    /// Whether `object` is of `class`, has `proto` and no own `toJSON`.
    fn is_plain(
        &self,
        object: &Object<'js>,
        proto: &Object<'js>,
        class: qjs::JSClassID,
    ) -> rquickjs::Result<bool> {
        // SAFETY: a plain read of a live value's class.
        if unsafe { qjs::JS_GetClassID(object.as_raw()) } != class
            || object.get_prototype().as_ref().map(Object::as_value) != Some(proto.as_value())
        {
            return Ok(false);
        }
        self.no_to_json(object)
    }

    /// Whether `object` has no own `toJSON` (data or accessor).
    fn no_to_json(&self, object: &Object<'js>) -> rquickjs::Result<bool> {
        Ok(matches!(
            self.own(object, Key::Atom(qjs::JS_ATOM_toJSON as qjs::JSAtom))?,
            Own::Absent
        ))
    }

    /// The own property `key` of `object`, read without calling anything.
    fn own(&self, object: &Object<'js>, key: Key) -> rquickjs::Result<Own<'js>> {
        let ctx = self.ctx.as_raw().as_ptr();
        let (atom, owned) = match key {
            // SAFETY: a plain call on a live context.
            Key::Index(i) => (unsafe { qjs::JS_NewAtomUInt32(ctx, i) }, true),
            Key::Atom(atom) => (atom, false),
        };
        if atom == qjs::JS_ATOM_NULL {
            return Err(rquickjs::Error::Exception);
        }
        let mut desc = MaybeUninit::<qjs::JSPropertyDescriptor>::uninit();
        // SAFETY: `object` is live; with a descriptor given, QuickJS fills all
        // three values when it answers 1, and they are owned here.
        let found =
            unsafe { qjs::JS_GetOwnProperty(ctx, desc.as_mut_ptr(), object.as_raw(), atom) };
        if owned {
            // SAFETY: made above, used no more.
            unsafe { qjs::JS_FreeAtom(ctx, atom) };
        }
        match found {
            0 => Ok(Own::Absent),
            1 => {
                // SAFETY: see above.
                let desc = unsafe { desc.assume_init() };
                let (value, getter, setter) = unsafe {
                    (
                        Value::from_raw(self.ctx.clone(), desc.value),
                        Value::from_raw(self.ctx.clone(), desc.getter),
                        Value::from_raw(self.ctx.clone(), desc.setter),
                    )
                };
                drop((getter, setter));
                if desc.flags & qjs::JS_PROP_GETSET as i32 != 0 {
                    Ok(Own::Accessor)
                } else {
                    Ok(Own::Data(value))
                }
            }
            _ => Err(rquickjs::Error::Exception),
        }
    }
}

enum Key {
    Index(u32),
    Atom(qjs::JSAtom),
}

/// What `JSON.stringify` leaves out of an object (and writes as `null` in an array).
fn skipped(value: &Value<'_>) -> bool {
    matches!(
        value.type_of(),
        Type::Undefined | Type::Uninitialized | Type::Symbol | Type::Function | Type::Constructor
    )
}

/// A number as `JSON.stringify` writes it: integers without a fraction, `null`
/// for what JSON cannot hold; `false` for integers past 2^53, which JavaScript
/// writes as their shortest digits padded with zeros.
fn number(n: f64, out: &mut Vec<u8>) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if !n.is_finite() {
        out.extend_from_slice(b"null");
    } else if n.fract() == 0.0 {
        if n.abs() > EXACT {
            return false;
        }
        // Also turns -0 into 0.
        out.extend_from_slice((n as i64).to_string().as_bytes());
    } else {
        // Shortest round-trip digits, as JavaScript's, though some in exponent
        // form where JavaScript writes them out (`1e-6` for `0.000001`): the
        // same number.
        let _ = serde_json::to_writer(&mut *out, &n);
    }
    true
}

fn string(text: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use rquickjs::{Context, Runtime};

    use super::*;

    /// Each case as this module writes it beside `JSON.stringify`: the same text,
    /// or `None` (left to it) where the case says so.
    #[test]
    fn writes_what_json_stringify_writes_or_leaves_it() {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let same = [
                "({ id: 'p1' })",
                "({ a: 1, b: -2.5, c: true, d: false, e: null, f: 'x\"\\\\\\n\\u0001é😀' })",
                "({ n: 1e3, m: -0, big: -(2 ** 53), small: 1e-7, third: 1 / 3, e: 1.5e-300, nan: NaN, inf: -Infinity })",
                "({ nested: { list: [1, 'two', null, { three: [] }], empty: {} } })",
                "({ skip: undefined, f() {}, [Symbol('s')]: 1, keep: 1 })",
                "[undefined, () => 1, Symbol('x'), 2]",
                "({ 2: 'b', 1: 'a', z: 0, y: 1 })",
                "(() => { const o = { a: 1 }; Object.defineProperty(o, 'hidden', { value: 2 }); return o; })()",
                "(() => { const o = { a: 1, b: 2 }; delete o.a; return o; })()",
                "'text'",
                "42",
                "({ 'with\\u0000nul': 1 })",
            ];
            for source in same {
                let value: Value = ctx.eval(source).unwrap();
                let expected = ctx
                    .json_stringify(value.clone())
                    .unwrap()
                    .map(|s| s.to_string().unwrap());
                let got = plain_json(&ctx, &value).unwrap();
                assert!(got.is_some(), "{source}: left to JSON.stringify");
                assert_eq!(got, expected, "{source}");
            }
            // Fractions come out as the same numbers, some in exponent form
            // where JavaScript writes every digit.
            let value: Value = ctx
                .eval("[0.000001, 0.0001234, 123456.789, 4503599627370495.5, 1.7976931348623157e308 / 1e300, 5e-324, 0.1 + 0.2]")
                .unwrap();
            let expected = ctx.json_stringify(value.clone()).unwrap().unwrap().to_string().unwrap();
            let got = plain_json(&ctx, &value).unwrap().unwrap();
            let numbers = |text: &str| serde_json::from_str::<Vec<f64>>(text).unwrap();
            assert_eq!(numbers(&got), numbers(&expected), "{got} vs {expected}");
            let left = [
                "({ d: new Date(0) })",
                "({ toJSON() { return 1; } })",
                "({ get a() { return 1; } })",
                "[1, , 3]",
                "new Proxy({}, {})",
                "({ b: 1n })",
                "({ bigger: 2 ** 64 })",
                "(() => { const o = {}; o.self = o; return o; })()",
                "Object.create(null)",
                "new Map()",
                "({ s: new String('x') })",
                "({ lone: '\\ud800' })",
                "Object.setPrototypeOf(new Boolean(true), Object.prototype)",
                "Object.setPrototypeOf(new String('ab'), Object.prototype)",
                "(() => { const a = []; a.length = 2 ** 31; return { a }; })()",
                "Array.from({ length: 10001 }, () => 0)",
                "(() => { const s = 'x'.repeat(1 << 20); return [s, s]; })()",
                "(() => { let o = {}; for (let i = 0; i < 30; i++) o = { a: o, b: o }; return o; })()",
                "undefined",
                "(() => { let o = {}; for (let i = 0; i < 40; i++) o = { o }; return o; })()",
            ];
            for source in left {
                let value: Value = ctx.eval(source).unwrap();
                assert_eq!(plain_json(&ctx, &value).unwrap(), None, "{source}");
            }
            // A `toJSON` added to the shared prototypes sends everything back.
            let _: Value = ctx.eval("Object.prototype.toJSON = () => 'mine'").unwrap();
            let value: Value = ctx.eval("({ a: 1 })").unwrap();
            assert_eq!(plain_json(&ctx, &value).unwrap(), None);
        });
    }

    /// Reading a getter's object gives up without calling the getter.
    #[test]
    fn gives_up_without_running_guest_code() {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let value: Value = ctx
                .eval("globalThis.calls = 0; ({ a: 1, get b() { calls++; return 2; }, c: [{ get d() { calls++; } }] })")
                .unwrap();
            assert_eq!(plain_json(&ctx, &value).unwrap(), None);
            let calls: i32 = ctx.eval("calls").unwrap();
            assert_eq!(calls, 0);
        });
    }
}
