//! Appwrite's update operators (its SDKs since 1.8): a value of an update's
//! `data` that is an operator — `{"method":"increment","values":[5]}`, as a JSON
//! string (what the SDKs send) or object — is applied to the document's current
//! value, read under the write's lock, so that concurrent updates each count.
//! The result is then checked like any value written (type, range, size).
//!
//! A value is an operator only when it names one of the methods below and
//! holds nothing but `method`, `values` (and `attribute`, which PHP's SDK
//! sends empty); anything else is the value itself. Only the generic API's
//! updates take them (the typed API's inputs are typed), and only from a
//! caller who may read the document: what an operator refuses tells the value.

use serde_json::{Map, Number, Value};

use crate::error::{AppError, AppResult, codes};

use super::Collection;
use super::model::{AttributeKind, document_datetime_to_millis, millis_to_rfc3339};

const METHODS: &[&str] = &[
    "increment",
    "decrement",
    "multiply",
    "divide",
    "modulo",
    "power",
    "stringConcat",
    "stringReplace",
    "arrayAppend",
    "arrayPrepend",
    "arrayInsert",
    "arrayRemove",
    "arrayUnique",
    "arrayIntersect",
    "arrayDiff",
    "arrayFilter",
    "toggle",
    "dateAddDays",
    "dateSubDays",
    "dateSetNow",
];

/// Most values one operator takes (an array's appended elements).
const MAX_VALUES: usize = 1000;

const DAY_MILLIS: i64 = 86_400_000;

/// Longest text an operator makes, and all of one update's together; the
/// attribute's own size is checked after.
const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024;

/// An operator: its method and values.
struct Operator {
    method: &'static str,
    values: Vec<Value>,
}

/// The operator `value` is, if it is one.
fn operator_of(value: &Value) -> Option<Operator> {
    let parsed;
    let object = match value {
        Value::Object(object) => object,
        Value::String(text) if text.starts_with('{') && text.len() <= 64 * 1024 => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            parsed.as_object()?
        }
        _ => return None,
    };
    if object
        .keys()
        .any(|k| !matches!(k.as_str(), "method" | "values" | "attribute"))
    {
        return None;
    }
    let method = object.get("method")?.as_str()?;
    let method = *METHODS.iter().find(|m| **m == method)?;
    let values = match object.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values.clone(),
        Some(_) => return None,
    };
    Some(Operator { method, values })
}

/// Whether `value` is an operator.
pub fn is_operator(value: &Value) -> bool {
    operator_of(value).is_some()
}

/// Whether any of `data`'s values is an operator.
pub fn any(data: &Map<String, Value>) -> bool {
    data.values().any(|value| operator_of(value).is_some())
}

/// Replaces every operator among `data`'s values with its result on
/// `current`'s value of that attribute; `now` for `dateSetNow`.
pub fn apply(
    collection: &Collection,
    current: &Map<String, Value>,
    data: &mut Map<String, Value>,
    now: i64,
) -> AppResult<()> {
    let mut texts = 0usize;
    for (key, value) in data.iter_mut() {
        let Some(operator) = operator_of(value) else {
            continue;
        };
        let invalid = |reason: String| AppError::Invalid {
            code: codes::VALUE_INVALID,
            field: key.clone(),
            reason,
        };
        let Some(attribute) = collection.attribute(key) else {
            return Err(invalid(format!(
                "`{}` applies to attributes only",
                operator.method
            )));
        };
        if operator.values.len() > MAX_VALUES {
            return Err(invalid(format!(
                "an operator takes at most {MAX_VALUES} values"
            )));
        }
        let before = current.get(key).cloned().unwrap_or(Value::Null);
        *value = result(&operator, &attribute.kind, attribute.array, before, now)
            .map_err(|reason| invalid(format!("{}: {reason}", operator.method)))?;
        // Each text is measured before it is built; all of them together too.
        texts = texts.saturating_add(value.as_str().map_or(0, str::len));
        if texts > MAX_TEXT_BYTES {
            return Err(invalid(format!(
                "the operators' texts would be longer than {MAX_TEXT_BYTES} bytes in all"
            )));
        }
    }
    Ok(())
}

/// What `operator` makes of `before`, the value of an attribute of `kind`.
fn result(
    operator: &Operator,
    kind: &AttributeKind,
    array: bool,
    before: Value,
    now: i64,
) -> Result<Value, String> {
    let values = &operator.values;
    match operator.method {
        "increment" | "decrement" | "multiply" | "divide" | "modulo" | "power" => {
            let integer = match kind {
                AttributeKind::Integer { .. } => true,
                AttributeKind::Float { .. } => false,
                _ => return Err("applies to integer and float attributes".into()),
            };
            if array {
                return Err("applies to a single number, not a list".into());
            }
            numeric(operator.method, integer, &before, values)
        }
        "stringConcat" | "stringReplace" if !array => {
            if !matches!(
                kind,
                AttributeKind::String { .. }
                    | AttributeKind::Varchar { .. }
                    | AttributeKind::Text
                    | AttributeKind::Mediumtext
                    | AttributeKind::Longtext
                    | AttributeKind::Email
                    | AttributeKind::Url
                    | AttributeKind::Ip
                    | AttributeKind::Enum { .. }
            ) {
                return Err("applies to string attributes".into());
            }
            let text = before.as_str().unwrap_or_default();
            match (operator.method, values.as_slice()) {
                ("stringConcat", [Value::String(more)]) => Ok(Value::from(format!("{text}{more}"))),
                ("stringReplace", [Value::String(search), Value::String(replace)])
                    if !search.is_empty() =>
                {
                    // Measured before it is built: replacing each of many
                    // matches with a long text multiplies the value's size.
                    let matches = text.matches(search.as_str()).count();
                    let length = (text.len() - matches * search.len())
                        .saturating_add(matches.saturating_mul(replace.len()));
                    if length > MAX_TEXT_BYTES {
                        return Err(format!(
                            "the result would be longer than {MAX_TEXT_BYTES} bytes"
                        ));
                    }
                    Ok(Value::from(text.replace(search.as_str(), replace)))
                }
                ("stringConcat", _) => Err("takes one string".into()),
                _ => Err("takes a non-empty string to find and its replacement".into()),
            }
        }
        "stringConcat" | "arrayAppend" | "arrayPrepend" | "arrayInsert" | "arrayRemove"
        | "arrayUnique" | "arrayIntersect" | "arrayDiff" | "arrayFilter" => {
            if !array {
                return Err("applies to list attributes".into());
            }
            let list = match before {
                Value::Array(list) => list,
                _ => Vec::new(),
            };
            listed(operator.method, list, values).map(Value::Array)
        }
        "toggle" => match (kind, array, values.is_empty()) {
            (AttributeKind::Boolean, false, true) => {
                Ok(Value::Bool(!before.as_bool().unwrap_or(false)))
            }
            (AttributeKind::Boolean, false, false) => Err("takes no values".into()),
            _ => Err("applies to boolean attributes".into()),
        },
        "dateAddDays" | "dateSubDays" | "dateSetNow" => {
            if !matches!(kind, AttributeKind::Datetime) || array {
                return Err("applies to datetime attributes".into());
            }
            let millis = match (operator.method, values.as_slice()) {
                ("dateSetNow", []) => now,
                ("dateSetNow", _) => return Err("takes no values".into()),
                (method, [days]) => {
                    let days = days.as_i64().ok_or("takes a whole number of days")?;
                    let at = before
                        .as_str()
                        .and_then(document_datetime_to_millis)
                        .ok_or("the attribute holds no date")?;
                    let by = days.checked_mul(DAY_MILLIS).ok_or("too many days")?;
                    let by = if method == "dateAddDays" { by } else { -by };
                    at.checked_add(by).ok_or("too many days")?
                }
                _ => return Err("takes a number of days".into()),
            };
            millis_to_rfc3339(millis)
                .map(Value::from)
                .ok_or_else(|| "the date leaves the years 0000 to 9999".into())
        }
        _ => Err("does not apply to this attribute".into()),
    }
}

/// A numeric operator: whole numbers stay whole (checked for overflow) on an
/// integer attribute; a bound (`max` of increment, multiply and power, `min`
/// of decrement and divide) caps the result.
fn numeric(method: &str, integer: bool, before: &Value, values: &[Value]) -> Result<Value, String> {
    let (operand, bound) = match values {
        [] if matches!(method, "increment" | "decrement") => (Value::from(1), None),
        [operand] => (operand.clone(), None),
        [operand, bound] if method != "modulo" => (operand.clone(), Some(bound.clone())),
        _ => return Err("takes a number, and for some a bound".into()),
    };
    if !operand.is_number() || bound.as_ref().is_some_and(|b| !b.is_number()) {
        return Err("takes numbers".into());
    }
    let zero = Value::from(0);
    let before = if before.is_number() { before } else { &zero };
    if integer && let (Some(a), Some(b)) = (before.as_i64(), operand.as_i64()) {
        let overflow = || "the result is out of range".to_string();
        let value = match method {
            "increment" => a.checked_add(b).ok_or_else(overflow)?,
            "decrement" => a.checked_sub(b).ok_or_else(overflow)?,
            "multiply" => a.checked_mul(b).ok_or_else(overflow)?,
            "divide" if b == 0 => return Err("cannot divide by zero".into()),
            "divide" => a.checked_div_euclid(b).ok_or_else(overflow)?,
            "modulo" if b == 0 => return Err("cannot divide by zero".into()),
            "modulo" => a.checked_rem_euclid(b).ok_or_else(overflow)?,
            _ => {
                let exponent = u32::try_from(b).map_err(|_| "takes a whole exponent from 0")?;
                a.checked_pow(exponent).ok_or_else(overflow)?
            }
        };
        let value = match bound.as_ref().and_then(Value::as_i64) {
            Some(max) if matches!(method, "increment" | "multiply" | "power") => value.min(max),
            Some(min) if matches!(method, "decrement" | "divide") => value.max(min),
            _ => value,
        };
        return Ok(Value::from(value));
    }
    if integer {
        return Err("takes whole numbers on an integer attribute".into());
    }
    let a = before.as_f64().unwrap_or(0.0);
    let b = operand.as_f64().unwrap_or(0.0);
    let value = match method {
        "increment" => a + b,
        "decrement" => a - b,
        "multiply" => a * b,
        "divide" | "modulo" if b == 0.0 => return Err("cannot divide by zero".into()),
        "divide" => a / b,
        "modulo" => a.rem_euclid(b),
        _ => a.powf(b),
    };
    let value = match bound.as_ref().and_then(Value::as_f64) {
        Some(max) if matches!(method, "increment" | "multiply" | "power") => value.min(max),
        Some(min) if matches!(method, "decrement" | "divide") => value.max(min),
        _ => value,
    };
    Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| "the result is not a finite number".into())
}

/// A list operator on `list`.
fn listed(method: &str, mut list: Vec<Value>, values: &[Value]) -> Result<Vec<Value>, String> {
    match method {
        "arrayAppend" | "stringConcat" => list.extend_from_slice(values),
        "arrayPrepend" => {
            let mut front = values.to_vec();
            front.append(&mut list);
            list = front;
        }
        "arrayInsert" => {
            let [index, value] = values else {
                return Err("takes an index and a value".into());
            };
            let index = index
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i <= list.len())
                .ok_or_else(|| format!("takes an index from 0 to {}", list.len()))?;
            list.insert(index, value.clone());
        }
        "arrayRemove" => {
            let [value] = values else {
                return Err("takes one value".into());
            };
            list.retain(|item| item != value);
        }
        "arrayUnique" => {
            let mut seen: Vec<Value> = Vec::with_capacity(list.len());
            for item in list {
                if !seen.contains(&item) {
                    seen.push(item);
                }
            }
            list = seen;
        }
        "arrayIntersect" => list.retain(|item| values.contains(item)),
        "arrayDiff" => list.retain(|item| !values.contains(item)),
        _ => {
            let (condition, operand) = match values {
                [Value::String(condition)] => (condition.as_str(), &Value::Null),
                [Value::String(condition), operand] => (condition.as_str(), operand),
                _ => return Err("takes a condition and a value".into()),
            };
            let keep = kept_by(condition)?;
            list.retain(|item| keep(item, operand));
        }
    }
    Ok(list)
}

type Keep = fn(&Value, &Value) -> bool;

/// The test of `arrayFilter`'s condition.
fn kept_by(condition: &str) -> Result<Keep, String> {
    fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
        match (a, b) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }
    Ok(match condition {
        "equal" => |a, b| a == b,
        "notEqual" => |a, b| a != b,
        "greaterThan" => |a, b| order(a, b).is_some_and(|o| o.is_gt()),
        "greaterThanEqual" => |a, b| order(a, b).is_some_and(|o| o.is_ge()),
        "lessThan" => |a, b| order(a, b).is_some_and(|o| o.is_lt()),
        "lessThanEqual" => |a, b| order(a, b).is_some_and(|o| o.is_le()),
        "contains" => |a, b| match (a, b) {
            (Value::String(a), Value::String(b)) => a.contains(b.as_str()),
            _ => false,
        },
        "isNull" => |a, _| a.is_null(),
        "isNotNull" => |a, _| !a.is_null(),
        other => return Err(format!("knows no condition `{other}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(method: &'static str, values: Value) -> Operator {
        Operator {
            method,
            values: values.as_array().cloned().unwrap_or_default(),
        }
    }

    const INT: AttributeKind = AttributeKind::Integer {
        min: None,
        max: None,
    };
    const FLOAT: AttributeKind = AttributeKind::Float {
        min: None,
        max: None,
    };

    #[test]
    fn operators_are_told_from_values() {
        for value in [
            json!(r#"{"method":"increment","values":[5]}"#),
            json!(r#"{"method":"toggle","values":[],"attribute":""}"#),
            json!({"method": "arrayAppend", "values": ["x"]}),
        ] {
            assert!(operator_of(&value).is_some(), "{value}");
        }
        for value in [
            json!("increment"),
            json!(r#"{"method":"unknown","values":[5]}"#),
            json!(r#"{"method":"increment","values":[5],"other":1}"#),
            json!({"method": "increment", "values": 5}),
            json!(5),
        ] {
            assert!(operator_of(&value).is_none(), "{value}");
        }
    }

    #[test]
    fn numbers_change_by_their_operator_within_its_bound() {
        let run = |kind: &AttributeKind, method, values, before: Value| {
            result(&op(method, values), kind, false, before, 0)
        };
        assert_eq!(
            run(&INT, "increment", json!([5]), json!(2020)),
            Ok(json!(2025))
        );
        assert_eq!(run(&INT, "increment", json!([]), Value::Null), Ok(json!(1)));
        assert_eq!(
            run(&INT, "increment", json!([5, 10]), json!(8)),
            Ok(json!(10))
        );
        assert_eq!(
            run(&INT, "decrement", json!([5, 0]), json!(3)),
            Ok(json!(0))
        );
        assert_eq!(run(&INT, "multiply", json!([3]), json!(4)), Ok(json!(12)));
        assert_eq!(run(&INT, "divide", json!([2]), json!(7)), Ok(json!(3)));
        assert_eq!(run(&INT, "modulo", json!([3]), json!(7)), Ok(json!(1)));
        assert_eq!(run(&INT, "power", json!([3]), json!(2)), Ok(json!(8)));
        assert!(run(&INT, "divide", json!([0]), json!(7)).is_err());
        assert!(run(&INT, "divide", json!([-1]), json!(i64::MIN)).is_err());
        assert!(run(&INT, "modulo", json!([-1]), json!(i64::MIN)).is_err());
        assert!(run(&INT, "increment", json!([1]), json!(i64::MAX)).is_err());
        assert!(run(&INT, "increment", json!([1.5]), json!(1)).is_err());
        assert_eq!(
            run(&FLOAT, "increment", json!([0.5]), json!(1.0)),
            Ok(json!(1.5))
        );
        assert_eq!(
            run(&FLOAT, "divide", json!([4]), json!(1.0)),
            Ok(json!(0.25))
        );
        assert!(
            run(
                &AttributeKind::Boolean,
                "increment",
                json!([1]),
                json!(true)
            )
            .is_err()
        );
    }

    #[test]
    fn lists_strings_booleans_and_dates_change_by_their_operator() {
        let list = |method, values, before: Value| {
            result(
                &op(method, values),
                &AttributeKind::String { size: 10 },
                true,
                before,
                0,
            )
        };
        let actors = json!(["a", "b", "a"]);
        assert_eq!(
            list("arrayAppend", json!(["c"]), actors.clone()),
            Ok(json!(["a", "b", "a", "c"]))
        );
        assert_eq!(
            list("arrayPrepend", json!(["z"]), actors.clone()),
            Ok(json!(["z", "a", "b", "a"]))
        );
        assert_eq!(
            list("arrayInsert", json!([1, "x"]), actors.clone()),
            Ok(json!(["a", "x", "b", "a"]))
        );
        assert!(list("arrayInsert", json!([9, "x"]), actors.clone()).is_err());
        assert_eq!(
            list("arrayRemove", json!(["a"]), actors.clone()),
            Ok(json!(["b"]))
        );
        assert_eq!(
            list("arrayUnique", json!([]), actors.clone()),
            Ok(json!(["a", "b"]))
        );
        assert_eq!(
            list("arrayIntersect", json!(["b", "q"]), actors.clone()),
            Ok(json!(["b"]))
        );
        assert_eq!(
            list("arrayDiff", json!(["b"]), actors.clone()),
            Ok(json!(["a", "a"]))
        );
        assert_eq!(
            list("arrayFilter", json!(["notEqual", "a"]), actors.clone()),
            Ok(json!(["b"]))
        );
        assert_eq!(
            list("arrayAppend", json!(["c"]), Value::Null),
            Ok(json!(["c"]))
        );
        let text = |method, values, before: Value| {
            result(
                &op(method, values),
                &AttributeKind::String { size: 50 },
                false,
                before,
                0,
            )
        };
        assert_eq!(
            text("stringConcat", json!([" Appended"]), json!("Original")),
            Ok(json!("Original Appended"))
        );
        assert_eq!(
            text("stringReplace", json!(["i", "o"]), json!("bitter bit")),
            Ok(json!("botter bot"))
        );
        let long = "x".repeat(64 * 1024);
        assert!(text("stringReplace", json!(["a", long]), json!("a".repeat(1000))).is_err());
        assert!(text("arrayAppend", json!(["x"]), json!("a")).is_err());
        assert_eq!(
            result(
                &op("toggle", json!([])),
                &AttributeKind::Boolean,
                false,
                json!(true),
                0
            ),
            Ok(json!(false))
        );
        let date = |method, values, before: Value| {
            result(
                &op(method, values),
                &AttributeKind::Datetime,
                false,
                before,
                86_400_000,
            )
        };
        assert_eq!(
            date("dateAddDays", json!([2]), json!("2020-01-01T12:00:00.000Z")),
            Ok(json!("2020-01-03T12:00:00.000Z"))
        );
        assert_eq!(
            date("dateSubDays", json!([1]), json!("2020-01-01 12:00:00")),
            Ok(json!("2019-12-31T12:00:00.000Z"))
        );
        assert_eq!(
            date("dateSetNow", json!([]), Value::Null),
            Ok(json!("1970-01-02T00:00:00.000Z"))
        );
        assert!(date("dateAddDays", json!([1]), Value::Null).is_err());
    }
}
