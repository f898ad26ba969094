//! Vectorized evaluation of compiled FHIRPath over Arrow arrays.
//!
//! A FHIRPath value is a collection per row. For a batch of `n` rows it is a [`Coll`]: `n + 1`
//! offsets into one values array, like an Arrow `ListArray` without its nulls. Every operation
//! works on whole arrays with Arrow kernels: a path step takes a struct's child column, a list
//! step composes offsets, `where` evaluates its condition once over all items of all rows.

use std::sync::Arc;

use arrow::array::{
    new_empty_array, Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Int32Array,
    ListArray, PrimitiveArray, StringArray, StringBuilder, StructArray, UInt32Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::kernels::cmp;
use arrow::compute::{and_kleene, cast, filter, interleave, not, or_kleene, take};
use arrow::datatypes::{
    i256, ArrowPrimitiveType, DataType, Decimal128Type, Field, Fields, Int32Type,
};
use datafusion::common::ScalarValue;

use crate::json::Json;
use crate::schema::node::{Prim, DECIMAL_PRECISION, DECIMAL_SCALE};

use super::parse::Op;

pub type EvalResult<T> = Result<T, String>;

/// A collection per row: row `r` holds `values[offsets[r]..offsets[r + 1]]`.
#[derive(Clone, Debug)]
pub struct Coll {
    pub offsets: OffsetBuffer<i32>,
    pub values: ArrayRef,
}

impl Coll {
    /// One value per row.
    pub fn singletons(values: ArrayRef) -> Coll {
        Coll {
            offsets: OffsetBuffer::from_lengths(std::iter::repeat_n(1, values.len())),
            values,
        }
    }

    /// One value or none per row: the nulls of `values` are empty rows.
    pub fn from_nullable(values: ArrayRef) -> EvalResult<Coll> {
        if values.data_type() == &DataType::Null {
            return Ok(Coll::empty(values.len(), &DataType::Null));
        }
        if values.null_count() == 0 {
            return Ok(Coll::singletons(values));
        }
        let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(1, values.len()));
        compact(offsets, values)
    }

    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn len(&self, row: usize) -> usize {
        (self.offsets[row + 1] - self.offsets[row]) as usize
    }

    /// Every row empty.
    pub fn empty(rows: usize, dt: &DataType) -> Coll {
        Coll {
            offsets: OffsetBuffer::new_zeroed(rows),
            values: new_empty_array(dt),
        }
    }

    /// For every value, the row it belongs to.
    pub fn row_of_values(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.values.len());
        for r in 0..self.rows() {
            out.extend(std::iter::repeat_n(r as u32, self.len(r)));
        }
        out
    }

    /// One value or NULL per row; an error when a row holds more than one.
    pub fn singleton(&self) -> EvalResult<ArrayRef> {
        let n = self.rows();
        if self.values.len() == n && (0..n).all(|r| self.len(r) == 1) {
            return Ok(self.values.clone());
        }
        let mut idx = Vec::with_capacity(n);
        for r in 0..n {
            match self.len(r) {
                0 => idx.push(None),
                1 => idx.push(Some(self.offsets[r] as u32)),
                k => {
                    return Err(format!(
                        "gave {k} values where one was expected (set \"collection\": true, or use first())"
                    ))
                }
            }
        }
        take_opt(&self.values, idx)
    }

    /// As an Arrow list, an empty list for an empty row.
    pub fn into_list(self) -> ListArray {
        let field = Arc::new(Field::new_list_field(self.values.data_type().clone(), true));
        ListArray::new(field, self.offsets, self.values, None)
    }
}

/// Two value arrays of one type: an all-empty side (of no type) takes the other's.
fn same_type(l: &ArrayRef, r: &ArrayRef) -> EvalResult<(ArrayRef, ArrayRef)> {
    let to = |a: &ArrayRef, dt: &DataType| cast(a, dt).map_err(|e| e.to_string());
    Ok(match (l.data_type(), r.data_type()) {
        (DataType::Null, dt) if dt != &DataType::Null => (to(l, dt)?, r.clone()),
        (dt, DataType::Null) if dt != &DataType::Null => (l.clone(), to(r, dt)?),
        _ => (l.clone(), r.clone()),
    })
}

/// Each value of `values` as bytes that are equal exactly when the values are (FHIRPath `=`
/// on values of one type, structs included).
fn comparable(values: &ArrayRef) -> EvalResult<arrow::row::Rows> {
    use arrow::row::{RowConverter, SortField};
    let conv = RowConverter::new(vec![SortField::new(values.data_type().clone())])
        .map_err(|e| e.to_string())?;
    conv.convert_columns(std::slice::from_ref(values))
        .map_err(|e| e.to_string())
}

/// Per row, the values without repeats, the first of each kept in its place.
fn distinct(c: &Coll) -> EvalResult<Coll> {
    if c.values.data_type() == &DataType::Null || c.values.is_empty() {
        return Ok(c.clone());
    }
    let rows = comparable(&c.values)?;
    let mut keep = Vec::with_capacity(c.values.len());
    let mut lens = Vec::with_capacity(c.rows());
    for r in 0..c.rows() {
        let mut seen = std::collections::HashSet::new();
        let start = keep.len();
        for i in c.offsets[r]..c.offsets[r + 1] {
            if seen.insert(rows.row(i as usize)) {
                keep.push(i as u32);
            }
        }
        lens.push(keep.len() - start);
    }
    if keep.len() == c.values.len() {
        return Ok(c.clone());
    }
    Ok(Coll {
        offsets: OffsetBuffer::from_lengths(lens),
        values: take_idx(&c.values, keep)?,
    })
}

/// Text as `~` compares it: lower case, runs of white space as one space, trimmed.
fn equivalent_text(a: &ArrayRef) -> ArrayRef {
    let s = a.as_string::<i32>();
    let out: StringArray = s
        .iter()
        .map(|v| {
            v.map(|t| {
                t.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            })
        })
        .collect();
    Arc::new(out)
}

/// `=`, `!=`, `~`, `!~` of two collections, per row. `=`: empty when either side is empty,
/// false when their lengths differ, else true when the items are equal in order. `~`: true for
/// two empty sides, false when one is; the items equal in any order, text compared without
/// regard to case and runs of white space.
fn equality(op: Op, l: &Coll, r: &Coll) -> EvalResult<Coll> {
    let n = l.rows();
    let equiv = matches!(op, Op::Equiv | Op::NotEquiv);
    let negate = matches!(op, Op::Ne | Op::NotEquiv);
    let (mut lv, mut rv) = same_type(&l.values, &r.values)?;
    if equiv && lv.data_type() == &DataType::Utf8 {
        (lv, rv) = (equivalent_text(&lv), equivalent_text(&rv));
    }
    let both = arrow::compute::concat(&[lv.as_ref(), rv.as_ref()]).map_err(|e| e.to_string())?;
    let rows = match both.data_type() {
        DataType::Null => None,
        _ => Some(comparable(&both)?),
    };
    let key = |i: usize| rows.as_ref().map(|r| r.row(i).as_ref().to_vec());
    let decimals = match both.data_type() {
        DataType::Decimal128(_, s) if *s as u32 == SCALE => {
            both.as_primitive_opt::<Decimal128Type>()
        }
        _ => None,
    };
    let split = lv.len();
    let out: BooleanArray = (0..n)
        .map(|row| {
            let a: Vec<usize> = (l.offsets[row] as usize..l.offsets[row + 1] as usize).collect();
            let b: Vec<usize> =
                (r.offsets[row] as usize + split..r.offsets[row + 1] as usize + split).collect();
            let same = match (a.len(), b.len()) {
                (0, 0) if equiv => Some(true),
                (0, _) | (_, 0) if equiv => Some(false),
                (0, _) | (_, 0) => None,
                (x, y) if x != y => Some(false),
                _ if equiv && decimals.is_some() => {
                    let d = decimals.unwrap();
                    let sorted = |ix: &[usize]| {
                        let mut v: Vec<i128> = ix.iter().map(|&i| d.value(i)).collect();
                        v.sort();
                        v
                    };
                    let (va, vb) = (sorted(&a), sorted(&b));
                    Some(va.iter().zip(&vb).all(|(&x, &y)| decimals_equivalent(x, y)))
                }
                _ if equiv => {
                    let mut ka: Vec<_> = a.iter().map(|&i| key(i)).collect();
                    let mut kb: Vec<_> = b.iter().map(|&i| key(i)).collect();
                    ka.sort();
                    kb.sort();
                    Some(ka == kb)
                }
                _ => Some(a.iter().zip(&b).all(|(&i, &j)| key(i) == key(j))),
            };
            same.map(|s| s != negate)
        })
        .collect();
    Coll::from_nullable(Arc::new(out))
}

/// Two decimals (of the view's scale) equivalent as FHIRPath says: equal once both are rounded
/// to the places of the less precise, trailing zeros not counted (`1.2 / 1.8 ~ 0.67`).
fn decimals_equivalent(a: i128, b: i128) -> bool {
    let places = |mut v: i128| {
        let mut p = SCALE;
        while p > 0 && v % 10 == 0 {
            v /= 10;
            p -= 1;
        }
        p
    };
    let unit = 10i128.pow(SCALE - places(a).min(places(b)));
    let round = |v: i128| {
        let (q, r) = (v / unit, v % unit);
        match r.abs() * 2 >= unit {
            true => q + v.signum(),
            false => q,
        }
    };
    round(a) == round(b)
}

/// A date, date-time or time read from its text (`@` and `T` prefixes allowed): its
/// components to the precision written (year, month, day, hour, minute, second in
/// microseconds; a time: hour, minute, second), whether it is a time, and its offset in
/// minutes when it has one.
struct Moment {
    parts: Vec<i64>,
    time: bool,
    offset: Option<i64>,
}

fn moment(text: &str) -> Option<Moment> {
    let t = text.trim_start_matches('@');
    let (time, t) = match t.strip_prefix('T') {
        Some(rest) => (true, rest),
        None => (t.len() >= 3 && t.as_bytes()[2] == b':', t),
    };
    let mut parts = Vec::new();
    let (date, clock) = match time {
        true => ("", t),
        false => t.split_once('T').unwrap_or((t, "")),
    };
    if !date.is_empty() {
        for p in date.split('-') {
            parts.push(p.parse::<i64>().ok()?);
        }
        if parts.len() > 3 {
            return None;
        }
    }
    let mut offset = None;
    if !clock.is_empty() {
        let (clock, zone) = match clock.find(['Z', '+', '-']) {
            Some(i) => (&clock[..i], &clock[i..]),
            None => (clock, ""),
        };
        offset = match zone {
            "" => None,
            "Z" => Some(0),
            z => {
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let (h, m) = z[1..].split_once(':')?;
                Some(sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?))
            }
        };
        for (k, p) in clock.split(':').enumerate() {
            match k {
                0 | 1 => parts.push(p.parse().ok()?),
                2 => {
                    let secs: f64 = p.parse().ok()?;
                    parts.push((secs * 1e6).round() as i64);
                }
                _ => return None,
            }
        }
    }
    (!parts.is_empty()).then_some(Moment {
        parts,
        time,
        offset,
    })
}

impl Moment {
    /// The same moment in UTC (a date-time with an offset, to the hour or finer).
    fn in_utc(mut self) -> Moment {
        let Some(off) = self.offset.filter(|_| !self.time && self.parts.len() >= 4) else {
            return self;
        };
        let p = &self.parts;
        let get = |i: usize| p.get(i).copied().unwrap_or(0);
        let Some(t) = chrono::NaiveDate::from_ymd_opt(get(0) as i32, get(1) as u32, get(2) as u32)
            .and_then(|d| d.and_hms_opt(get(3) as u32, get(4) as u32, 0))
        else {
            return self;
        };
        let t = t - chrono::Duration::minutes(off);
        use chrono::{Datelike, Timelike};
        let utc = [
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
            t.minute() as i64,
        ];
        for (i, v) in utc.iter().enumerate().take(self.parts.len().min(5)) {
            self.parts[i] = *v;
        }
        self.offset = Some(0);
        self
    }
}

/// A date or date-time plus a calendar duration (whole units: a fraction is dropped), written
/// back to its own precision: years and months by the calendar, the day of month kept where
/// it exists (else the last); hours and finer leave a date as it is (FHIRPath 6.6.1).
pub fn add_duration(text: &str, amount: f64, unit: &str) -> Option<String> {
    use chrono::{Datelike, Months, NaiveDate, TimeDelta, Timelike};
    let m = moment(text)?;
    if m.time {
        return None;
    }
    let unit = match unit {
        // UCUM's `a` and `mo` are definite durations, not calendar ones: no date arithmetic.
        "year" | "years" => "year",
        "month" | "months" => "month",
        "week" | "weeks" | "wk" => "week",
        "day" | "days" | "d" => "day",
        "hour" | "hours" | "h" => "hour",
        "minute" | "minutes" | "min" => "minute",
        "second" | "seconds" | "s" => "second",
        "millisecond" | "milliseconds" | "ms" => "millisecond",
        _ => return None,
    };
    let p = &m.parts;
    let get = |i: usize, d: i64| p.get(i).copied().unwrap_or(d);
    let date = NaiveDate::from_ymd_opt(get(0, 0) as i32, get(1, 1) as u32, get(2, 1) as u32)?;
    let micros = get(5, 0);
    let t = date.and_hms_micro_opt(
        get(3, 0) as u32,
        get(4, 0) as u32,
        (micros / 1_000_000) as u32,
        (micros % 1_000_000) as u32,
    )?;
    let whole = amount.trunc() as i64;
    let t = match unit {
        "year" | "month" => {
            let months = if unit == "year" { whole * 12 } else { whole };
            match months >= 0 {
                true => t.checked_add_months(Months::new(months as u32))?,
                false => t.checked_sub_months(Months::new((-months) as u32))?,
            }
        }
        _ => {
            let micros_per = match unit {
                "week" => 7 * 86_400_000_000i64,
                "day" => 86_400_000_000,
                "hour" => 3_600_000_000,
                "minute" => 60_000_000,
                "second" => 1_000_000,
                _ => 1_000,
            };
            // Whole units: the fraction of a quantity is dropped (`7.7 days`: 7 days).
            let delta = whole * micros_per;
            if p.len() <= 3 && micros_per < 86_400_000_000 {
                // Hours and finer do not change a date.
                t
            } else {
                t.checked_add_signed(TimeDelta::microseconds(delta))?
            }
        }
    };
    // Back to the text, to the precision written.
    let (date_text, rest) = text
        .trim_start_matches('@')
        .split_once('T')
        .unwrap_or((text.trim_start_matches('@'), ""));
    let _ = date_text;
    let zone = rest.find(['Z', '+', '-']).map(|i| &rest[i..]).unwrap_or("");
    let fraction = rest
        .split_once('.')
        .map(|(_, f)| f.chars().take_while(char::is_ascii_digit).count());
    Some(match p.len() {
        1 => format!("{:04}", t.year()),
        2 => format!("{:04}-{:02}", t.year(), t.month()),
        3 => t.format("%Y-%m-%d").to_string(),
        4 => format!("{}T{:02}{zone}", t.format("%Y-%m-%d"), t.hour()),
        5 => format!("{}{zone}", t.format("%Y-%m-%dT%H:%M")),
        _ => {
            let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            match fraction {
                Some(k) if k > 0 => {
                    let f = format!("{:06}", t.nanosecond() / 1000);
                    let mut f: String = f.chars().take(k.min(6)).collect();
                    while f.len() < k {
                        f.push('0');
                    }
                    format!("{base}.{f}{zone}")
                }
                _ => format!("{base}{zone}"),
            }
        }
    })
}

/// A quantity's text (`4.0 'g'`, `7 days`, `1 'wk'`): its value and unit.
pub fn quantity(text: &str) -> Option<(f64, String)> {
    let t = text.trim();
    let (n, unit) = match t.split_once(' ') {
        Some((n, u)) => (n, u.trim().trim_matches('\'').to_string()),
        None => (t, "1".to_string()),
    };
    let v: f64 = n.parse().ok()?;
    if unit.is_empty() {
        return None;
    }
    Some((v, unit))
}

/// A unit's dimension and its size in that dimension's base unit (UCUM codes and the calendar
/// words for weeks and shorter; years and months only equal themselves).
fn unit_scale(unit: &str) -> Option<(&'static str, f64)> {
    Some(match unit {
        "g" => ("mass", 1.0),
        "mg" => ("mass", 1e-3),
        "ug" => ("mass", 1e-6),
        "kg" => ("mass", 1e3),
        "[lb_av]" => ("mass", 453.59237),
        "m" => ("length", 1.0),
        "cm" => ("length", 1e-2),
        "mm" => ("length", 1e-3),
        "km" => ("length", 1e3),
        "[in_i]" => ("length", 0.0254),
        "ms" | "millisecond" | "milliseconds" => ("time", 1e-3),
        "s" | "second" | "seconds" => ("time", 1.0),
        "min" | "minute" | "minutes" => ("time", 60.0),
        "h" | "hour" | "hours" => ("time", 3600.0),
        "d" | "day" | "days" => ("time", 86400.0),
        "wk" | "week" | "weeks" => ("time", 604800.0),
        "1" => ("one", 1.0),
        _ => return None,
    })
}

/// FHIRPath's comparison of two quantities: in one unit where they convert; empty (for `~`:
/// false) when they do not.
fn quantity_cmp(op: Op, a: &str, b: &str) -> Option<bool> {
    let ((x, ux), (y, uy)) = (quantity(a)?, quantity(b)?);
    let pair = match (unit_scale(&ux), unit_scale(&uy)) {
        _ if ux == uy => Some((x, y)),
        (Some((dx, fx)), Some((dy, fy))) if dx == dy => Some((x * fx, y * fy)),
        _ => None,
    };
    let Some((x, y)) = pair else {
        return match op {
            Op::Equiv => Some(false),
            Op::NotEquiv => Some(true),
            _ => None,
        };
    };
    let mut eq = (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    if matches!(op, Op::Equiv | Op::NotEquiv) && !eq {
        // `~`: to the precision of the less precise side, in its unit (`4 'g' ~ 4040 'mg'`).
        let places = |t: &str| {
            t.trim()
                .split(' ')
                .next()
                .and_then(|n| n.split_once('.'))
                .map_or(0, |(_, f)| f.len() as i32)
        };
        let (pa, pb) = (places(a), places(b));
        let (keep, scale) = match pa <= pb {
            true => (pa, unit_scale(&ux).map_or(1.0, |u| u.1)),
            false => (pb, unit_scale(&uy).map_or(1.0, |u| u.1)),
        };
        let round = |v: f64| {
            let f = 10f64.powi(keep);
            ((v / scale) * f).round() / f
        };
        eq = round(x) == round(y);
    }
    Some(match op {
        Op::Eq | Op::Equiv => eq,
        Op::Ne | Op::NotEquiv => !eq,
        Op::Lt => !eq && x < y,
        Op::Le => eq || x < y,
        Op::Gt => !eq && x > y,
        Op::Ge => eq || x > y,
        _ => return None,
    })
}

/// FHIRPath's comparison of two dates, date-times or times (see [`Node::Temporal`]).
fn temporal(op: Op, a: &str, b: &str) -> Option<bool> {
    let (a, b) = (moment(a)?, moment(b)?);
    use std::cmp::Ordering::*;
    // A time and a date are never equal, and not in order.
    if a.time != b.time {
        return match op {
            Op::Eq | Op::Equiv => Some(false),
            Op::Ne | Op::NotEquiv => Some(true),
            _ => None,
        };
    }
    let ordering = {
        let timed = |m: &Moment| m.time || m.parts.len() >= 4;
        // One with an offset and one without cannot be put in order (no local zone is assumed).
        if timed(&a) && timed(&b) && a.offset.is_some() != b.offset.is_some() {
            None
        } else {
            let (a, b) = (a.in_utc(), b.in_utc());
            let common = a.parts.len().min(b.parts.len());
            match (0..common)
                .map(|i| a.parts[i].cmp(&b.parts[i]))
                .find(|o| o.is_ne())
            {
                Some(o) => Some(o),
                None if a.parts.len() == b.parts.len() => Some(std::cmp::Ordering::Equal),
                None => None,
            }
        }
    };
    match op {
        Op::Eq => ordering.map(|o| o == Equal),
        Op::Ne => ordering.map(|o| o != Equal),
        Op::Equiv => Some(ordering == Some(Equal)),
        Op::NotEquiv => Some(ordering != Some(Equal)),
        Op::Lt => ordering.map(|o| o == Less),
        Op::Le => ordering.map(|o| o != Greater),
        Op::Gt => ordering.map(|o| o == Greater),
        Op::Ge => ordering.map(|o| o != Less),
        _ => None,
    }
}

/// For every item of `a`, whether the same row of `b` holds an equal item.
fn membership(a: &Coll, b: &Coll) -> EvalResult<Vec<bool>> {
    let (av, bv) = same_type(&a.values, &b.values)?;
    if av.is_empty() {
        return Ok(Vec::new());
    }
    if bv.is_empty() || bv.data_type() == &DataType::Null {
        return Ok(vec![false; av.len()]);
    }
    let both = arrow::compute::concat(&[av.as_ref(), bv.as_ref()]).map_err(|e| e.to_string())?;
    let rows = comparable(&both)?;
    let split = av.len();
    let mut out = vec![false; av.len()];
    for r in 0..a.rows() {
        let theirs: std::collections::HashSet<_> = (b.offsets[r]..b.offsets[r + 1])
            .map(|j| rows.row(j as usize + split))
            .collect();
        for i in a.offsets[r]..a.offsets[r + 1] {
            out[i as usize] = theirs.contains(&rows.row(i as usize));
        }
    }
    Ok(out)
}

/// A math function of one number per row (and its argument): integers stay integers where
/// FHIRPath says so (abs, ceiling, floor, truncate; power of two integers).
fn math(f: MathFn, s: &ArrayRef, arg: Option<&ArrayRef>) -> EvalResult<Coll> {
    let n = s.len();
    if s.data_type() == &DataType::Null {
        return Ok(Coll::empty(n, &DataType::Null));
    }
    let ints =
        s.data_type() == &DataType::Int32 && arg.is_none_or(|a| a.data_type() == &DataType::Int32);
    let x = cast(s, &DataType::Float64).map_err(|e| e.to_string())?;
    let x = x.as_primitive::<arrow::datatypes::Float64Type>();
    let y = match arg {
        Some(a) => Some(cast(a, &DataType::Float64).map_err(|e| e.to_string())?),
        None => None,
    };
    let y = y
        .as_ref()
        .map(|y| y.as_primitive::<arrow::datatypes::Float64Type>());
    let value = |r: usize| -> Option<f64> {
        if x.is_null(r) {
            return None;
        }
        let v = x.value(r);
        let a = y.and_then(|y| y.is_valid(r).then(|| y.value(r)));
        let out = match f {
            MathFn::Abs => v.abs(),
            MathFn::Ceiling => v.ceil(),
            MathFn::Floor => v.floor(),
            MathFn::Truncate => v.trunc(),
            MathFn::Round => {
                let p = 10f64.powi(a.unwrap_or(0.0) as i32);
                (v * p).round() / p
            }
            MathFn::Sqrt => v.sqrt(),
            MathFn::Exp => v.exp(),
            MathFn::Ln => v.ln(),
            MathFn::Log => v.ln() / a?.ln(),
            MathFn::Power => v.powf(a?),
        };
        out.is_finite().then_some(out)
    };
    let out: ArrayRef = match f.integer_result(ints) {
        true => Arc::new(
            (0..n)
                .map(|r| value(r).map(|v| v as i32))
                .collect::<Int32Array>(),
        ),
        false => {
            let d: arrow::array::Float64Array = (0..n).map(value).collect();
            cast(
                &(Arc::new(d) as ArrayRef),
                &DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
            )
            .map_err(|e| e.to_string())?
        }
    };
    Coll::from_nullable(out)
}

/// A string function over one string per row and its arguments (one per row each).
fn string_fn(f: StrFn, s: &ArrayRef, args: &[ArrayRef]) -> EvalResult<Coll> {
    let n = s.len();
    if s.data_type() == &DataType::Null {
        return Ok(Coll::empty(n, &f.result().1));
    }
    let s = cast(s, &DataType::Utf8).map_err(|e| e.to_string())?;
    let s = s.as_string::<i32>();
    let typed: Vec<ArrayRef> = args
        .iter()
        .map(|a| cast(a, &f.arg_type()).map_err(|e| e.to_string()))
        .collect::<EvalResult<_>>()?;
    let text = |k: usize, r: usize| -> Option<&str> {
        let a = typed.get(k)?.as_string_opt::<i32>()?;
        a.is_valid(r).then(|| a.value(r))
    };
    let int = |k: usize, r: usize| -> Option<i32> {
        let a = typed.get(k)?.as_primitive_opt::<Int32Type>()?;
        a.is_valid(r).then(|| a.value(r))
    };
    let mut cache: std::collections::HashMap<String, regex::Regex> = Default::default();
    let mut regex = |p: &str| -> EvalResult<regex::Regex> {
        if let Some(r) = cache.get(p) {
            return Ok(r.clone());
        }
        // FHIRPath's regular expressions are in single-line mode: `.` matches a newline too.
        let r = regex::Regex::new(&format!("(?s){p}"))
            .map_err(|e| format!("the regular expression {p:?}: {e}"))?;
        cache.insert(p.to_string(), r.clone());
        Ok(r)
    };
    let values: ArrayRef = match f {
        StrFn::StartsWith
        | StrFn::EndsWith
        | StrFn::Contains
        | StrFn::Matches
        | StrFn::MatchesFull => {
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                out.push(match (s.is_valid(r), text(0, r)) {
                    (true, Some(a)) => {
                        let v = s.value(r);
                        Some(match f {
                            StrFn::StartsWith => v.starts_with(a),
                            StrFn::EndsWith => v.ends_with(a),
                            StrFn::Contains => v.contains(a),
                            StrFn::MatchesFull => regex(&format!("^(?:{a})$"))?.is_match(v),
                            _ => regex(a)?.is_match(v),
                        })
                    }
                    _ => None,
                });
            }
            Arc::new(BooleanArray::from(out))
        }
        StrFn::Length | StrFn::IndexOf => {
            let out: Int32Array = (0..n)
                .map(|r| {
                    if !s.is_valid(r) {
                        return None;
                    }
                    let v = s.value(r);
                    match f {
                        StrFn::Length => Some(v.chars().count() as i32),
                        _ => text(0, r).map(|a| match v.find(a) {
                            Some(b) => v[..b].chars().count() as i32,
                            None => -1,
                        }),
                    }
                })
                .collect();
            Arc::new(out)
        }
        _ => {
            let mut out = StringBuilder::new();
            for r in 0..n {
                if !s.is_valid(r) {
                    out.append_null();
                    continue;
                }
                let v = s.value(r);
                let res: Option<String> = match f {
                    StrFn::Upper => Some(v.to_uppercase()),
                    StrFn::Lower => Some(v.to_lowercase()),
                    StrFn::Trim => Some(v.trim().to_string()),
                    StrFn::Substring => {
                        let chars: Vec<char> = v.chars().collect();
                        match int(0, r) {
                            Some(start) if start >= 0 && (start as usize) < chars.len() => {
                                let start = start as usize;
                                let end = match (typed.len() > 1, int(1, r)) {
                                    (true, Some(l)) => (start + l.max(0) as usize).min(chars.len()),
                                    _ => chars.len(),
                                };
                                Some(chars[start..end].iter().collect())
                            }
                            _ => None,
                        }
                    }
                    StrFn::Replace => match (text(0, r), text(1, r)) {
                        // An empty pattern: the substitution between every character and at
                        // both ends.
                        (Some(""), Some(w)) => {
                            let mut o = String::from(w);
                            for c in v.chars() {
                                o.push(c);
                                o.push_str(w);
                            }
                            Some(o)
                        }
                        (Some(p), Some(w)) => Some(v.replace(p, w)),
                        _ => None,
                    },
                    StrFn::ReplaceMatches => match (text(0, r), text(1, r)) {
                        // An empty expression matches nothing to replace.
                        (Some(""), Some(_)) => Some(v.to_string()),
                        (Some(p), Some(w)) => Some(regex(p)?.replace_all(v, w).into_owned()),
                        _ => None,
                    },
                    _ => unreachable!("a function that gives a string"),
                };
                match res {
                    Some(x) => out.append_value(x),
                    None => out.append_null(),
                }
            }
            Arc::new(out.finish())
        }
    };
    Coll::from_nullable(values)
}

/// FHIRPath's conversions (5.5) of one value per row: the converted value, or (`test`)
/// whether it converts; empty for an empty input.
fn convert(s: &ArrayRef, to: Conversion, test: bool) -> EvalResult<Coll> {
    let n = s.len();
    let from = s.data_type().clone();
    let text = cast(s, &DataType::Utf8).map_err(|e| e.to_string())?;
    let text = text.as_string::<i32>();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    // The converted text (typed below); None: it does not convert.
    let one = |r: usize| -> Option<String> {
        let t = text.value(r);
        match to {
            Conversion::String => Some(match &from {
                DataType::Decimal128(..) => decimal_text(t),
                _ => t.to_string(),
            }),
            Conversion::Boolean => match (&from, t) {
                (DataType::Boolean, _) => Some(t.to_string()),
                (DataType::Decimal128(..), _) => match decimal_text(t).as_str() {
                    "1" => Some("true".into()),
                    "0" => Some("false".into()),
                    _ => None,
                },
                (_, x) => match x.to_ascii_lowercase().as_str() {
                    "true" | "t" | "yes" | "y" | "1" | "1.0" => Some("true".into()),
                    "false" | "f" | "no" | "n" | "0" | "0.0" => Some("false".into()),
                    _ => None,
                },
            },
            Conversion::Integer => match &from {
                DataType::Boolean => Some(if t == "true" { "1" } else { "0" }.into()),
                DataType::Int32 => Some(t.to_string()),
                DataType::Utf8 => {
                    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
                    digits(body)
                        .then(|| t.parse::<i32>().ok().map(|v| v.to_string()))
                        .flatten()
                }
                _ => None,
            },
            Conversion::Decimal => match &from {
                DataType::Boolean => Some(if t == "true" { "1" } else { "0" }.into()),
                DataType::Int32 | DataType::Decimal128(..) => Some(t.to_string()),
                DataType::Utf8 => {
                    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
                    let ok = match body.split_once('.') {
                        Some((i, f)) => digits(i) && digits(f),
                        None => digits(body),
                    };
                    ok.then(|| t.to_string())
                }
                _ => None,
            },
            Conversion::Date => moment(t)
                .filter(|m| !m.time && m.parts.len() <= 3)
                .map(|_| t.trim_start_matches('@').to_string()),
            Conversion::DateTime => moment(t)
                .filter(|m| !m.time)
                .map(|_| t.trim_start_matches('@').to_string()),
            Conversion::Quantity => match &from {
                DataType::Int32 | DataType::Decimal128(..) => {
                    Some(format!("{} '1'", decimal_text(t)))
                }
                DataType::Boolean => {
                    Some(format!("{} '1'", if t == "true" { "1.0" } else { "0.0" }))
                }
                _ => {
                    let q = quantity(t)?;
                    // A unit written as a word is a calendar one; quoted, a UCUM code.
                    let unit = t.trim().split_once(' ').map(|(_, u)| u.trim());
                    match unit {
                        Some(u)
                            if !u.starts_with('\'')
                                && !super::parse::CALENDAR_UNITS.contains(&u) =>
                        {
                            None
                        }
                        _ => Some(format!("{} '{}'", decimal_text(&q.0.to_string()), q.1)),
                    }
                }
            },
            Conversion::Time => moment(&format!("T{}", t.trim_start_matches(['@', 'T'])))
                .filter(|m| m.time && m.offset.is_none())
                .map(|_| t.trim_start_matches(['@', 'T']).to_string()),
        }
    };
    if test {
        let out: BooleanArray = (0..n)
            .map(|r| text.is_valid(r).then(|| one(r).is_some()))
            .collect();
        return Coll::from_nullable(Arc::new(out));
    }
    let out: StringArray = (0..n)
        .map(|r| if text.is_valid(r) { one(r) } else { None })
        .collect();
    let out: ArrayRef = Arc::new(out);
    let dt = match to {
        Conversion::Boolean => DataType::Boolean,
        Conversion::Integer => DataType::Int32,
        Conversion::Decimal => DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
        _ => DataType::Utf8,
    };
    Coll::from_nullable(cast(&out, &dt).map_err(|e| e.to_string())?)
}

/// A decimal's text without the zeros the schema's scale adds (`1.500000000000000000`: `1.5`).
fn decimal_text(t: &str) -> String {
    match t.contains('.') {
        true => t.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => t.to_string(),
    }
}

/// Timestamps (UTC microseconds) as FHIR instant text in UTC to the millisecond:
/// `2010-01-09T19:04:32.819Z`.
fn instant_text(a: &ArrayRef) -> EvalResult<ArrayRef> {
    let micros = cast(
        a,
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
    )
    .map_err(|e| e.to_string())?;
    let micros = micros.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let out: StringArray = micros
        .iter()
        .map(|v| {
            let t = chrono::DateTime::from_timestamp_micros(v?)?;
            Some(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        })
        .collect();
    Ok(Arc::new(out))
}

/// A column as booleans: an all-empty one (`{}`, of no type) is all NULL; anything else that
/// is not boolean is an error, never a panic.
fn booleans(a: &ArrayRef) -> EvalResult<BooleanArray> {
    match a.data_type() {
        DataType::Boolean => Ok(a.as_boolean().clone()),
        DataType::Null => Ok(BooleanArray::new_null(a.len())),
        other => Err(format!("a boolean was expected, not {other}")),
    }
}

fn take_opt(values: &ArrayRef, idx: Vec<Option<u32>>) -> EvalResult<ArrayRef> {
    take(values.as_ref(), &UInt32Array::from(idx), None).map_err(|e| e.to_string())
}

fn take_idx(values: &ArrayRef, idx: Vec<u32>) -> EvalResult<ArrayRef> {
    take(values.as_ref(), &UInt32Array::from(idx), None).map_err(|e| e.to_string())
}

/// Drops the null values, fixing the offsets.
pub fn compact(offsets: OffsetBuffer<i32>, values: ArrayRef) -> EvalResult<Coll> {
    if values.null_count() == 0 && !matches!(values.data_type(), DataType::Null) {
        return Ok(Coll { offsets, values });
    }
    if matches!(values.data_type(), DataType::Null) {
        return Ok(Coll {
            offsets: OffsetBuffer::new_zeroed(offsets.len() - 1),
            values,
        });
    }
    let keep: BooleanArray = (0..values.len())
        .map(|i| Some(values.is_valid(i)))
        .collect();
    let mut lens = Vec::with_capacity(offsets.len() - 1);
    for w in offsets.windows(2) {
        lens.push((w[0]..w[1]).filter(|&i| keep.value(i as usize)).count());
    }
    let values = filter(values.as_ref(), &keep).map_err(|e| e.to_string())?;
    Ok(Coll {
        offsets: OffsetBuffer::from_lengths(lens),
        values,
    })
}

/// A compiled FHIRPath expression.
#[derive(Debug, Clone)]
pub enum Node {
    /// The input collection (`$this`, or the start of a path).
    Focus,
    /// The resource the row comes from.
    Root,
    /// `%rowIndex`.
    RowIndex,
    /// A literal or constant: one value per row, or none for NULL.
    Lit(ScalarValue),
    /// A child of a struct, lists flattened.
    Field(Box<Node>, String),
    Where(Box<Node>, Box<Node>),
    Exists(Box<Node>),
    /// Whether any of the alternatives has a value (`exists()` on a choice).
    AnyExists(Vec<Node>),
    Empty(Box<Node>),
    Count(Box<Node>),
    First(Box<Node>),
    Last(Box<Node>),
    Index(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Join(Box<Node>, String),
    Compare(Op, Box<Node>, Box<Node>),
    Logic(Op, Box<Node>, Box<Node>),
    Arith(Op, Box<Node>, Box<Node>),
    Concat(Box<Node>, Box<Node>),
    /// String `+`: empty when either side is (only `&` reads empty as `''`).
    Plus(Box<Node>, Box<Node>),
    /// A comparison of dates, date-times or times (their text): by their components to the
    /// precision both have, across time-zone offsets; empty when the precisions differ and
    /// the values agree as far as both go (`~`: false).
    Temporal(Op, Box<Node>, Box<Node>),
    /// Values of both sides, duplicates removed (the first of each kept), per row.
    Union(Box<Node>, Box<Node>),
    /// Values of both sides, in order, duplicates kept (`combine()`).
    Combine(Box<Node>, Box<Node>),
    /// The values without repeats (`distinct()`).
    Distinct(Box<Node>),
    /// `sort()`, `sort($this)` (`false`) or `sort(-$this)` (`true`: descending) of values.
    Sort(Box<Node>, bool),
    /// A date or date-time plus (or minus: a negative amount) a time-valued quantity
    /// (FHIRPath 6.6.1): the amount, its unit (`year` .. `millisecond`, UCUM `a` .. `ms`).
    DateAdd(Box<Node>, f64, String),
    /// A Quantity (a struct with `value` and `code` or `unit`) as the text of a quantity
    /// literal: `185 '[lb_av]'`.
    QuantityText(Box<Node>),
    /// A comparison of two quantities (their texts, see [`Node::QuantityText`]): the values
    /// in one unit where the units convert (mass, length, time), else only in the same unit.
    QuantityCmp(Op, Box<Node>, Box<Node>),
    /// `body` evaluated with the one item of `src` (or none) as its focus: a function whose
    /// arguments are relative to its input (`('a').iif($this = 'a', ...)`).
    With(Box<Node>, Box<Node>),
    /// `today()` (a date) or `now()` (a date-time in UTC), when the view runs.
    Now(bool),
    /// `encode(form)` (`true`) or `decode(form)` of one string: base64, urlbase64, hex; and
    /// `escape(form)` (`true`) or `unescape(form)`: html, json.
    Encode(Box<Node>, String, bool),
    /// `split(separator)` of one string: its parts.
    Split(Box<Node>, String),
    /// `select(projection)`: the projection of every item, flattened, in order.
    Select(Box<Node>, Box<Node>),
    /// `all(criteria)`: whether every item meets the criteria (true for none).
    All(Box<Node>, Box<Node>),
    /// The items of the left side that are (`keep`) or are not in the right side
    /// (`intersect()` with `distinct`, `exclude()`).
    Filter {
        src: Box<Node>,
        other: Box<Node>,
        keep: bool,
        distinct: bool,
    },
    /// Whether every item of the left side is in the right side (`subsetOf()`; `supersetOf()`
    /// the other way round).
    SubsetOf(Box<Node>, Box<Node>),
    /// A math function of the one number of the input.
    Math(MathFn, Box<Node>, Option<Box<Node>>),
    /// A string function of the one string of the input, its arguments evaluated on it.
    Str(StrFn, Box<Node>, Vec<Node>),
    /// `iif(condition, then, else)`: the condition over the input (one boolean per row).
    Iif(Box<Node>, Box<Node>, Box<Node>),
    /// The items from `skip` on, at most `take` of them (`skip()`, `take()`, `tail()`).
    Slice {
        src: Box<Node>,
        skip: Box<Node>,
        take: Option<Box<Node>>,
    },
    /// Whether the one item on the left is in the collection on the right (`in`,
    /// `contains`): empty when the left is empty.
    Member(Box<Node>, Box<Node>),
    /// A conversion of the one item of the input (`toInteger()`, ...), or with `test` whether
    /// it converts (`convertsToInteger()`, ...).
    Convert {
        src: Box<Node>,
        to: Conversion,
        test: bool,
    },
    Cast(Box<Node>, DataType),
    /// The id a Reference points to, when its type is the given one (or any).
    ReferenceKey(Box<Node>, Option<String>),
    /// `lowBoundary()`/`highBoundary()` of date, dateTime and time text.
    Boundary(Box<Node>, Boundary, bool),
    /// Items reached by applying the paths again and again, depth first: per level, the path
    /// nodes (applied to that level's items) and the struct type every item is projected to.
    /// With `cyclic`, the last level's paths apply again at every depth below it (items read
    /// from JSON, where a recursive element has no bound). `beyond`: the elements past the
    /// last level, which the typed columns do not hold (a repeat compiled for engines that
    /// read the typed columns only; empty otherwise).
    Repeat {
        src: Box<Node>,
        levels: Vec<Vec<Node>>,
        dt: DataType,
        cyclic: bool,
        beyond: Vec<String>,
    },
    /// The property of JSON objects (items as JSON text): objects stay text, primitives become
    /// their typed values; arrays are flattened.
    JsonField(Box<Node>, String, JsonKind),
}

/// The string functions of FHIRPath (5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
    Upper,
    Lower,
    Length,
    IndexOf,
    Substring,
    Replace,
    Matches,
    MatchesFull,
    ReplaceMatches,
    Trim,
}

impl StrFn {
    pub fn from_name(name: &str) -> Option<(StrFn, std::ops::RangeInclusive<usize>)> {
        Some(match name {
            "startsWith" => (StrFn::StartsWith, 1..=1),
            "endsWith" => (StrFn::EndsWith, 1..=1),
            "contains" => (StrFn::Contains, 1..=1),
            "upper" => (StrFn::Upper, 0..=0),
            "lower" => (StrFn::Lower, 0..=0),
            "length" => (StrFn::Length, 0..=0),
            "indexOf" => (StrFn::IndexOf, 1..=1),
            "substring" => (StrFn::Substring, 1..=2),
            "replace" => (StrFn::Replace, 2..=2),
            "matches" => (StrFn::Matches, 1..=1),
            "matchesFull" => (StrFn::MatchesFull, 1..=1),
            "replaceMatches" => (StrFn::ReplaceMatches, 2..=2),
            "trim" => (StrFn::Trim, 0..=0),
            _ => return None,
        })
    }

    /// The FHIRPath type of the result.
    pub fn result(self) -> (&'static str, DataType) {
        match self {
            StrFn::StartsWith
            | StrFn::EndsWith
            | StrFn::Contains
            | StrFn::Matches
            | StrFn::MatchesFull => ("boolean", DataType::Boolean),
            StrFn::Length | StrFn::IndexOf => ("integer", DataType::Int32),
            _ => ("string", DataType::Utf8),
        }
    }

    /// The argument types (integers for substring, strings otherwise).
    pub fn arg_type(self) -> DataType {
        match self {
            StrFn::Substring => DataType::Int32,
            _ => DataType::Utf8,
        }
    }
}

/// The math functions of FHIRPath (5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathFn {
    Abs,
    Ceiling,
    Floor,
    Round,
    Truncate,
    Sqrt,
    Exp,
    Ln,
    Log,
    Power,
}

impl MathFn {
    /// Whether the result is an integer, for an input (and argument) of integers or not: the
    /// rounding functions always, `abs` and `power` of integers.
    pub fn integer_result(self, integers: bool) -> bool {
        match self {
            MathFn::Ceiling | MathFn::Floor | MathFn::Truncate => true,
            MathFn::Abs | MathFn::Power => integers,
            _ => false,
        }
    }

    pub fn from_name(name: &str) -> Option<(MathFn, std::ops::RangeInclusive<usize>)> {
        Some(match name {
            "abs" => (MathFn::Abs, 0..=0),
            "ceiling" => (MathFn::Ceiling, 0..=0),
            "floor" => (MathFn::Floor, 0..=0),
            "round" => (MathFn::Round, 0..=1),
            "truncate" => (MathFn::Truncate, 0..=0),
            "sqrt" => (MathFn::Sqrt, 0..=0),
            "exp" => (MathFn::Exp, 0..=0),
            "ln" => (MathFn::Ln, 0..=0),
            "log" => (MathFn::Log, 1..=1),
            "power" => (MathFn::Power, 1..=1),
            _ => return None,
        })
    }
}

/// What [`Node::Convert`] converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    Boolean,
    Integer,
    Decimal,
    String,
    Date,
    DateTime,
    Time,
    Quantity,
}

/// What a [`Node::JsonField`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// Objects, kept as JSON text.
    Object,
    /// A primitive, as its typed Arrow value.
    Prim(Prim),
    /// A primitive as the text it was written with (a decimal's digits).
    Text,
    /// A primitive as the element FHIRPath sees: an object (JSON text) of its `value` and of
    /// what its `_name` sibling holds at the same place (`id`, `extension`). An item with an
    /// extension and no value is there too.
    Element,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    Date,
    DateTime,
    Time,
    /// A decimal from its text, optionally to a number of digits after the point.
    Decimal(Option<u8>),
}

/// What the rows being evaluated are: the resource of each (`root`), and where they come from.
pub struct Env<'a> {
    pub root: &'a ArrayRef,
    pub row_index: &'a ArrayRef,
    /// For each row being evaluated, its row in `root` (None: the same rows).
    pub row_of: Option<Vec<u32>>,
}

impl<'a> Env<'a> {
    /// The environment of items whose rows (of the rows evaluated here) are `rows`.
    fn for_items(&self, rows: &[u32]) -> Env<'a> {
        Env {
            root: self.root,
            row_index: self.row_index,
            row_of: Some(match &self.row_of {
                None => rows.to_vec(),
                Some(outer) => rows.iter().map(|&r| outer[r as usize]).collect(),
            }),
        }
    }

    fn mapped(&self, a: &ArrayRef) -> EvalResult<ArrayRef> {
        match &self.row_of {
            None => Ok(a.clone()),
            Some(rows) => take_idx(a, rows.clone()),
        }
    }
}

impl Node {
    pub fn eval(&self, focus: &Coll, env: &Env) -> EvalResult<Coll> {
        let n = focus.rows();
        match self {
            Node::Focus => Ok(focus.clone()),
            Node::Root => Coll::from_nullable(env.mapped(env.root)?),
            Node::RowIndex => Coll::from_nullable(env.mapped(env.row_index)?),
            Node::Lit(s) => {
                let a = s.to_array_of_size(n).map_err(|e| e.to_string())?;
                Coll::from_nullable(a)
            }
            Node::Field(src, name) => field(&src.eval(focus, env)?, name),
            Node::Where(src, cond) => {
                let s = src.eval(focus, env)?;
                let mask = item_mask(&s, cond, env)?;
                filter_items(&s, &mask)
            }
            Node::Exists(src) => {
                let s = src.eval(focus, env)?;
                let b: BooleanArray = (0..n).map(|r| Some(s.len(r) > 0)).collect();
                Ok(Coll::singletons(Arc::new(b)))
            }
            Node::AnyExists(alts) => {
                let mut any = vec![false; n];
                for a in alts {
                    let s = a.eval(focus, env)?;
                    for (r, x) in any.iter_mut().enumerate() {
                        *x |= s.len(r) > 0;
                    }
                }
                Ok(Coll::singletons(Arc::new(BooleanArray::from(any))))
            }
            Node::Empty(src) => {
                let s = src.eval(focus, env)?;
                let b: BooleanArray = (0..n).map(|r| Some(s.len(r) == 0)).collect();
                Ok(Coll::singletons(Arc::new(b)))
            }
            Node::Count(src) => {
                let s = src.eval(focus, env)?;
                let c: Int32Array = (0..n).map(|r| Some(s.len(r) as i32)).collect();
                Ok(Coll::singletons(Arc::new(c)))
            }
            Node::First(src) | Node::Last(src) => {
                let s = src.eval(focus, env)?;
                let last = matches!(self, Node::Last(_));
                let idx = (0..n)
                    .map(|r| {
                        (s.len(r) > 0).then(|| {
                            if last {
                                s.offsets[r + 1] as u32 - 1
                            } else {
                                s.offsets[r] as u32
                            }
                        })
                    })
                    .collect();
                Coll::from_nullable(take_opt(&s.values, idx)?)
            }
            Node::Index(src, i) => {
                let s = src.eval(focus, env)?;
                let i = i.eval(focus, env)?.singleton()?;
                let i = cast(&i, &DataType::Int32).map_err(|e| e.to_string())?;
                let i = i.as_primitive::<Int32Type>();
                let idx = (0..n)
                    .map(|r| {
                        let k = i.is_valid(r).then(|| i.value(r))?;
                        (k >= 0 && (k as usize) < s.len(r)).then(|| (s.offsets[r] + k) as u32)
                    })
                    .collect();
                Coll::from_nullable(take_opt(&s.values, idx)?)
            }
            Node::Not(src) => {
                let s = booleans(&src.eval(focus, env)?.singleton()?)?;
                let b = not(&s).map_err(|e| e.to_string())?;
                Coll::from_nullable(Arc::new(b))
            }
            Node::Join(src, sep) => {
                let s = src.eval(focus, env)?;
                let v = cast(&s.values, &DataType::Utf8).map_err(|e| e.to_string())?;
                let v = v.as_string::<i32>();
                let mut b = StringBuilder::new();
                for r in 0..n {
                    // join() of an empty collection is empty (FHIRPath 3.0, SQL on FHIR 2.0).
                    if s.len(r) == 0 {
                        b.append_null();
                        continue;
                    }
                    let mut out = String::new();
                    for (k, i) in (s.offsets[r]..s.offsets[r + 1]).enumerate() {
                        if k > 0 {
                            out.push_str(sep);
                        }
                        out.push_str(v.value(i as usize));
                    }
                    b.append_value(out);
                }
                Coll::from_nullable(Arc::new(b.finish()))
            }
            Node::Compare(op @ (Op::Eq | Op::Ne | Op::Equiv | Op::NotEquiv), l, r) => {
                let (l, r) = (l.eval(focus, env)?, r.eval(focus, env)?);
                equality(*op, &l, &r)
            }
            Node::Temporal(op, l, r) => {
                let l = cast(&l.eval(focus, env)?.singleton()?, &DataType::Utf8)
                    .map_err(|e| e.to_string())?;
                let r = cast(&r.eval(focus, env)?.singleton()?, &DataType::Utf8)
                    .map_err(|e| e.to_string())?;
                let (l, r) = (l.as_string::<i32>(), r.as_string::<i32>());
                let b: BooleanArray = (0..n)
                    .map(|i| {
                        if l.is_null(i) || r.is_null(i) {
                            return None;
                        }
                        temporal(*op, l.value(i), r.value(i))
                    })
                    .collect();
                Coll::from_nullable(Arc::new(b))
            }
            Node::Compare(op, l, r) => {
                let l = l.eval(focus, env)?.singleton()?;
                let r = r.eval(focus, env)?.singleton()?;
                // Equality and equivalence are taken by `equality` above.
                let b = match op {
                    Op::Lt => cmp::lt(&l, &r),
                    Op::Le => cmp::lt_eq(&l, &r),
                    Op::Gt => cmp::gt(&l, &r),
                    Op::Ge => cmp::gt_eq(&l, &r),
                    _ => unreachable!("not an ordering"),
                }
                .map_err(|e| e.to_string())?;
                Coll::from_nullable(Arc::new(b))
            }
            Node::Logic(op, l, r) => {
                let l = l.eval(focus, env)?.singleton()?;
                let r = r.eval(focus, env)?.singleton()?;
                let (l, r) = (booleans(&l)?, booleans(&r)?);
                let (l, r) = (&l, &r);
                let b = match op {
                    Op::And => and_kleene(l, r),
                    Op::Or => or_kleene(l, r),
                    Op::Xor => cmp::neq(l, r),
                    Op::Implies => not(l).and_then(|nl| or_kleene(&nl, r)),
                    _ => unreachable!("not a boolean operator"),
                }
                .map_err(|e| e.to_string())?;
                Coll::from_nullable(Arc::new(b))
            }
            Node::Arith(op, l, r) => {
                let l = l.eval(focus, env)?.singleton()?;
                let r = r.eval(focus, env)?.singleton()?;
                Coll::from_nullable(arith(*op, &l, &r)?)
            }
            Node::Concat(l, r) => {
                let l = l.eval(focus, env)?.singleton()?;
                let r = r.eval(focus, env)?.singleton()?;
                let (l, r) = (l.as_string::<i32>(), r.as_string::<i32>());
                let mut b = StringBuilder::new();
                for i in 0..n {
                    let a = if l.is_valid(i) { l.value(i) } else { "" };
                    let c = if r.is_valid(i) { r.value(i) } else { "" };
                    b.append_value(format!("{a}{c}"));
                }
                Ok(Coll::singletons(Arc::new(b.finish())))
            }
            Node::Plus(l, r) => {
                let l = l.eval(focus, env)?.singleton()?;
                let r = r.eval(focus, env)?.singleton()?;
                let (l, r) = (l.as_string::<i32>(), r.as_string::<i32>());
                let out: StringArray = (0..n)
                    .map(|i| match (l.is_valid(i), r.is_valid(i)) {
                        (true, true) => Some(format!("{}{}", l.value(i), r.value(i))),
                        _ => None,
                    })
                    .collect();
                Coll::from_nullable(Arc::new(out))
            }
            Node::Distinct(src) => distinct(&src.eval(focus, env)?),
            Node::Sort(src, descending) => {
                let s = src.eval(focus, env)?;
                if s.values.is_empty() || s.values.data_type() == &DataType::Null {
                    return Ok(s);
                }
                let rows = comparable(&s.values)?;
                let mut idx = Vec::with_capacity(s.values.len());
                for r in 0..n {
                    let mut items: Vec<u32> =
                        (s.offsets[r] as u32..s.offsets[r + 1] as u32).collect();
                    items.sort_by(|&a, &b| {
                        let o = rows.row(a as usize).cmp(&rows.row(b as usize));
                        if *descending {
                            o.reverse()
                        } else {
                            o
                        }
                    });
                    idx.extend(items);
                }
                Ok(Coll {
                    offsets: s.offsets.clone(),
                    values: take_idx(&s.values, idx)?,
                })
            }
            Node::DateAdd(src, amount, unit) => {
                let s = cast(&src.eval(focus, env)?.singleton()?, &DataType::Utf8)
                    .map_err(|e| e.to_string())?;
                let s = s.as_string::<i32>();
                let out: StringArray = s.iter().map(|v| add_duration(v?, *amount, unit)).collect();
                Coll::from_nullable(Arc::new(out))
            }
            Node::QuantityText(src) => {
                let s = src.eval(focus, env)?;
                let v = s.values.as_struct_opt().ok_or("a Quantity was expected")?;
                let value = v
                    .column_by_name("value")
                    .map(|c| cast(c, &DataType::Utf8))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                let code = v
                    .column_by_name("code")
                    .or_else(|| v.column_by_name("unit"))
                    .cloned();
                let out: StringArray = (0..v.len())
                    .map(|i| {
                        let value = value.as_ref()?.as_string::<i32>();
                        if value.is_null(i) {
                            return None;
                        }
                        let unit = code.as_ref().and_then(|c| {
                            let c = c.as_string_opt::<i32>()?;
                            c.is_valid(i).then(|| c.value(i).to_string())
                        });
                        Some(format!(
                            "{} '{}'",
                            decimal_text(value.value(i)),
                            unit.unwrap_or_else(|| "1".into())
                        ))
                    })
                    .collect();
                compact(s.offsets, Arc::new(out))
            }
            Node::QuantityCmp(op, l, r) => {
                let l = l.eval(focus, env)?.singleton()?;
                let r = r.eval(focus, env)?.singleton()?;
                let (l, r) = (l.as_string::<i32>(), r.as_string::<i32>());
                let out: BooleanArray = (0..n)
                    .map(|i| {
                        if l.is_null(i) || r.is_null(i) {
                            return None;
                        }
                        quantity_cmp(*op, l.value(i), r.value(i))
                    })
                    .collect();
                Coll::from_nullable(Arc::new(out))
            }
            Node::With(src, body) => {
                let s = src.eval(focus, env)?;
                if let Some(k) = (0..s.rows()).map(|r| s.len(r)).find(|k| *k > 1) {
                    return Err(format!(
                        "gave {k} items to a function that takes one (single(), as(), iif() on \
                         an input, the `as` operator): pick one first (first(), where(...)), or \
                         use ofType() to keep the items of a type"
                    ));
                }
                let s = s.singleton()?;
                body.eval(&Coll::from_nullable(s)?, env)
            }
            Node::Now(time) => {
                let t = chrono::Utc::now();
                let text = match time {
                    true => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    false => t.format("%Y-%m-%d").to_string(),
                };
                Ok(Coll::singletons(Arc::new(StringArray::from(vec![text; n]))))
            }
            Node::Encode(src, form, encode) => {
                use base64::Engine;
                let s = src.eval(focus, env)?.singleton()?;
                let s = s.as_string::<i32>();
                let engine = match form.as_str() {
                    "urlbase64" => base64::engine::general_purpose::URL_SAFE,
                    _ => base64::engine::general_purpose::STANDARD,
                };
                let out: StringArray = s
                    .iter()
                    .map(|v| {
                        let v = v?;
                        match (encode, form.as_str()) {
                            (true, "html") => Some(
                                v.replace('&', "&amp;")
                                    .replace('<', "&lt;")
                                    .replace('>', "&gt;")
                                    .replace('"', "&quot;")
                                    .replace('\'', "&#39;"),
                            ),
                            (false, "html") => Some(
                                v.replace("&lt;", "<")
                                    .replace("&gt;", ">")
                                    .replace("&quot;", "\"")
                                    .replace("&#39;", "'")
                                    .replace("&apos;", "'")
                                    .replace("&amp;", "&"),
                            ),
                            (true, "json") => {
                                let quoted = serde_json::to_string(v).ok()?;
                                Some(quoted[1..quoted.len() - 1].to_string())
                            }
                            (false, "json") => {
                                // Quotes the text left bare are its own.
                                let mut quoted = String::from('"');
                                let mut escaped = false;
                                for c in v.chars() {
                                    if c == '"' && !escaped {
                                        quoted.push('\\');
                                    }
                                    escaped = c == '\\' && !escaped;
                                    quoted.push(c);
                                }
                                quoted.push('"');
                                serde_json::from_str(&quoted).ok()
                            }
                            (true, "hex") => Some(v.bytes().map(|b| format!("{b:02x}")).collect()),
                            (true, _) => Some(engine.encode(v)),
                            (false, "hex") => {
                                let bytes: Option<Vec<u8>> = (0..v.len())
                                    .step_by(2)
                                    .map(|i| u8::from_str_radix(v.get(i..i + 2)?, 16).ok())
                                    .collect();
                                String::from_utf8(bytes?).ok()
                            }
                            (false, _) => String::from_utf8(engine.decode(v).ok()?).ok(),
                        }
                    })
                    .collect();
                Coll::from_nullable(Arc::new(out))
            }
            Node::Split(src, sep) => {
                let s = src.eval(focus, env)?.singleton()?;
                let s = s.as_string::<i32>();
                let mut values = StringBuilder::new();
                let mut lens = Vec::with_capacity(n);
                for r in 0..n {
                    if s.is_null(r) {
                        lens.push(0);
                        continue;
                    }
                    let parts: Vec<&str> = match sep.is_empty() {
                        true => vec![s.value(r)],
                        false => s.value(r).split(sep.as_str()).collect(),
                    };
                    lens.push(parts.len());
                    for p in parts {
                        values.append_value(p);
                    }
                }
                Ok(Coll {
                    offsets: OffsetBuffer::from_lengths(lens),
                    values: Arc::new(values.finish()),
                })
            }
            Node::Select(src, projection) => {
                let s = src.eval(focus, env)?;
                let items = Coll::singletons(s.values.clone());
                let inner = env.for_items(&s.row_of_values());
                let p = projection.eval(&items, &inner)?;
                // Item i's values are p's row i: a row's values are those of its items.
                let lens: Vec<usize> = (0..n)
                    .map(|r| {
                        (s.offsets[r]..s.offsets[r + 1])
                            .map(|i| p.len(i as usize))
                            .sum()
                    })
                    .collect();
                Ok(Coll {
                    offsets: OffsetBuffer::from_lengths(lens),
                    values: p.values,
                })
            }
            Node::All(src, cond) => {
                let s = src.eval(focus, env)?;
                let mask = item_mask(&s, cond, env)?;
                let out: BooleanArray = (0..n)
                    .map(|r| Some((s.offsets[r]..s.offsets[r + 1]).all(|i| mask[i as usize])))
                    .collect();
                Ok(Coll::singletons(Arc::new(out)))
            }
            Node::Filter {
                src,
                other,
                keep,
                distinct: dedupe,
            } => {
                let (a, b) = (src.eval(focus, env)?, other.eval(focus, env)?);
                let inside = membership(&a, &b)?;
                let kept =
                    filter_items(&a, &inside.iter().map(|&x| x == *keep).collect::<Vec<_>>())?;
                match dedupe {
                    true => distinct(&kept),
                    false => Ok(kept),
                }
            }
            Node::SubsetOf(a, b) => {
                let (a, b) = (a.eval(focus, env)?, b.eval(focus, env)?);
                let inside = membership(&a, &b)?;
                let out: BooleanArray = (0..n)
                    .map(|r| Some((a.offsets[r]..a.offsets[r + 1]).all(|i| inside[i as usize])))
                    .collect();
                Ok(Coll::singletons(Arc::new(out)))
            }
            Node::Math(f, src, arg) => {
                let s = src.eval(focus, env)?.singleton()?;
                let a = match arg {
                    Some(a) => Some(a.eval(focus, env)?.singleton()?),
                    None => None,
                };
                math(*f, &s, a.as_ref())
            }
            Node::Str(f, src, args) => {
                let s = src.eval(focus, env)?.singleton()?;
                let item = Coll::singletons(s.clone());
                let args = args
                    .iter()
                    .map(|a| a.eval(&item, env)?.singleton())
                    .collect::<EvalResult<Vec<_>>>()?;
                string_fn(*f, &s, &args)
            }
            Node::Iif(cond, a, b) => {
                let c = booleans(&cond.eval(focus, env)?.singleton()?)?;
                let (a, b) = (a.eval(focus, env)?, b.eval(focus, env)?);
                let (av, bv) = same_type(&a.values, &b.values)?;
                let mut pairs = Vec::new();
                let mut lens = Vec::with_capacity(n);
                for r in 0..n {
                    let yes = c.is_valid(r) && c.value(r);
                    let (which, from) = if yes { (0, &a) } else { (1, &b) };
                    pairs.extend(
                        (from.offsets[r]..from.offsets[r + 1]).map(|i| (which, i as usize)),
                    );
                    lens.push(from.len(r));
                }
                let values =
                    interleave(&[av.as_ref(), bv.as_ref()], &pairs).map_err(|e| e.to_string())?;
                Ok(Coll {
                    offsets: OffsetBuffer::from_lengths(lens),
                    values,
                })
            }
            Node::Slice { src, skip, take } => {
                let s = src.eval(focus, env)?;
                let k = skip.eval(focus, env)?.singleton()?;
                let k = cast(&k, &DataType::Int32).map_err(|e| e.to_string())?;
                let k = k.as_primitive::<Int32Type>().clone();
                let t = match take {
                    Some(t) => {
                        let t = cast(&t.eval(focus, env)?.singleton()?, &DataType::Int32)
                            .map_err(|e| e.to_string())?;
                        Some(t.as_primitive::<Int32Type>().clone())
                    }
                    None => None,
                };
                let mut idx = Vec::new();
                let mut lens = Vec::with_capacity(n);
                for r in 0..n {
                    let skip = if k.is_valid(r) { k.value(r).max(0) } else { 0 };
                    let start = s.offsets[r] as i64 + i64::from(skip);
                    let end = match &t {
                        Some(t) if t.is_null(r) => start,
                        Some(t) => start + i64::from(t.value(r).max(0)),
                        None => s.offsets[r + 1] as i64,
                    };
                    let end = end.min(s.offsets[r + 1] as i64);
                    let before = idx.len();
                    idx.extend((start..end.max(start)).map(|i| i as u32));
                    lens.push(idx.len() - before);
                }
                Ok(Coll {
                    offsets: OffsetBuffer::from_lengths(lens),
                    values: take_idx(&s.values, idx)?,
                })
            }
            Node::Member(item, coll) => {
                // The one item (none: empty), looked for in the collection.
                let one = Coll::from_nullable(item.eval(focus, env)?.singleton()?)?;
                let inside = membership(&one, &coll.eval(focus, env)?)?;
                let out: BooleanArray = (0..n)
                    .map(|r| (one.len(r) == 1).then(|| inside[one.offsets[r] as usize]))
                    .collect();
                Coll::from_nullable(Arc::new(out))
            }
            Node::Convert { src, to, test } => {
                let s = src.eval(focus, env)?.singleton()?;
                convert(&s, *to, *test)
            }
            Node::Combine(l, r) | Node::Union(l, r) => {
                let l = l.eval(focus, env)?;
                let r = r.eval(focus, env)?;
                if l.values.data_type() == &DataType::Null
                    && r.values.data_type() == &DataType::Null
                {
                    return Ok(Coll::empty(n, &DataType::Null));
                }
                let mut pairs = Vec::with_capacity(l.values.len() + r.values.len());
                let mut lens = Vec::with_capacity(n);
                for row in 0..n {
                    pairs.extend((l.offsets[row]..l.offsets[row + 1]).map(|i| (0, i as usize)));
                    pairs.extend((r.offsets[row]..r.offsets[row + 1]).map(|i| (1, i as usize)));
                    lens.push(l.len(row) + r.len(row));
                }
                let (lv, rv) = same_type(&l.values, &r.values)?;
                let values =
                    interleave(&[lv.as_ref(), rv.as_ref()], &pairs).map_err(|e| e.to_string())?;
                let all = Coll {
                    offsets: OffsetBuffer::from_lengths(lens),
                    values,
                };
                match self {
                    Node::Union(..) => distinct(&all),
                    _ => Ok(all),
                }
            }
            Node::Cast(src, dt) => {
                let s = src.eval(focus, env)?;
                let values = match (s.values.data_type(), dt) {
                    // An instant's text: UTC, to the millisecond (as every dialect writes it).
                    (DataType::Timestamp(..), DataType::Utf8) => instant_text(&s.values)?,
                    _ => cast(&s.values, dt).map_err(|e| e.to_string())?,
                };
                compact(s.offsets, values)
            }
            Node::ReferenceKey(src, want) => {
                let s = src.eval(focus, env)?;
                let refs = match s.values.data_type() {
                    DataType::Utf8 => json_field(&s, "reference", JsonKind::Prim(Prim::String))?,
                    _ => field(&s, "reference")?,
                };
                let text = refs.values.as_string::<i32>();
                let keys: StringArray = (0..text.len())
                    .map(|i| {
                        // A contained resource (`#p1`) has no key of its own: it would join
                        // to an unrelated resource with that id.
                        if text.value(i).starts_with('#') {
                            return None;
                        }
                        let (t, id) = crate::reference::parse_reference(text.value(i));
                        match want {
                            Some(w) if t != Some(w.as_str()) => None,
                            _ => id,
                        }
                    })
                    .collect();
                compact(refs.offsets, Arc::new(keys))
            }
            Node::Boundary(src, Boundary::Decimal(precision), high) => {
                let s = src.eval(focus, env)?;
                let text = s.values.as_string::<i32>();
                let out: PrimitiveArray<Decimal128Type> = (0..text.len())
                    .map(|i| decimal_boundary(text.value(i), *precision, *high))
                    .collect();
                let out =
                    out.with_data_type(DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE));
                compact(s.offsets, Arc::new(out))
            }
            Node::Boundary(src, kind, high) => {
                let s = src.eval(focus, env)?;
                let text = s.values.as_string::<i32>();
                let out: StringArray = (0..text.len())
                    .map(|i| boundary(text.value(i), *kind, *high))
                    .collect();
                compact(s.offsets, Arc::new(out))
            }
            Node::Repeat {
                src,
                levels,
                dt,
                cyclic,
                ..
            } => repeat(&src.eval(focus, env)?, levels, dt, *cyclic, env),
            Node::JsonField(src, name, kind) => json_field(&src.eval(focus, env)?, name, *kind),
        }
    }
}

/// The child `name` of every struct value; list children are flattened.
pub fn field(s: &Coll, name: &str) -> EvalResult<Coll> {
    let st = match s.values.as_struct_opt() {
        Some(st) => st,
        None => return Err(format!("'{name}' of a value that is not an object")),
    };
    let child = st
        .column_by_name(name)
        .ok_or_else(|| format!("no column '{name}'"))?
        .clone();
    let child = match st.nulls() {
        Some(nulls) if nulls.null_count() > 0 => mask_nulls(&child, nulls)?,
        _ => child,
    };
    match child.data_type() {
        DataType::List(_) => {
            let list = child.as_list::<i32>();
            let lo = list.value_offsets();
            let start = lo[s.offsets[0] as usize];
            let end = lo[s.offsets[s.rows()] as usize];
            let offsets: Vec<i32> = s.offsets.iter().map(|&o| lo[o as usize] - start).collect();
            let values = list.values().slice(start as usize, (end - start) as usize);
            compact(OffsetBuffer::new(ScalarBuffer::from(offsets)), values)
        }
        _ => compact(s.offsets.clone(), child),
    }
}

/// `child` with the rows where `nulls` is null made null (a null struct's children).
fn mask_nulls(child: &ArrayRef, nulls: &NullBuffer) -> EvalResult<ArrayRef> {
    let keep = BooleanArray::new(nulls.inner().clone(), None);
    arrow::compute::nullif(child.as_ref(), &not(&keep).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())
}

/// For every item of `s`, whether `cond` is true for it.
fn item_mask(s: &Coll, cond: &Node, env: &Env) -> EvalResult<Vec<bool>> {
    let items = Coll::singletons(s.values.clone());
    let inner = env.for_items(&s.row_of_values());
    let c = cond.eval(&items, &inner)?;
    let b = c
        .values
        .as_boolean_opt()
        .ok_or("the condition of where() is not a boolean")?;
    Ok((0..items.rows())
        .map(|i| c.len(i) == 1 && b.value(c.offsets[i] as usize))
        .collect())
}

fn filter_items(s: &Coll, mask: &[bool]) -> EvalResult<Coll> {
    let mut lens = Vec::with_capacity(s.rows());
    for r in 0..s.rows() {
        lens.push(
            (s.offsets[r]..s.offsets[r + 1])
                .filter(|&i| mask[i as usize])
                .count(),
        );
    }
    let values =
        filter(s.values.as_ref(), &BooleanArray::from(mask.to_vec())).map_err(|e| e.to_string())?;
    Ok(Coll {
        offsets: OffsetBuffer::from_lengths(lens),
        values,
    })
}

const SCALE: u32 = DECIMAL_SCALE as u32;

fn arith(op: Op, l: &ArrayRef, r: &ArrayRef) -> EvalResult<ArrayRef> {
    /// `f` of each pair of values; NULL where either is NULL or `f` has no result (overflow,
    /// division by zero: empty in FHIRPath).
    fn zip_opt<T: ArrowPrimitiveType>(
        l: &ArrayRef,
        r: &ArrayRef,
        f: impl Fn(T::Native, T::Native) -> Option<T::Native>,
    ) -> PrimitiveArray<T> {
        let (l, r) = (l.as_primitive::<T>(), r.as_primitive::<T>());
        l.iter().zip(r.iter()).map(|(a, b)| f(a?, b?)).collect()
    }
    match (l.data_type(), r.data_type()) {
        (DataType::Int32, DataType::Int32) if op != Op::Div => {
            Ok(Arc::new(zip_opt::<Int32Type>(l, r, |a, b| match op {
                Op::Add => a.checked_add(b),
                Op::Sub => a.checked_sub(b),
                Op::Mul => a.checked_mul(b),
                Op::IntDiv => a.checked_div(b),
                Op::Mod => a.checked_rem(b),
                _ => None,
            })))
        }
        _ => {
            let (l, r) = (to_decimal(l)?, to_decimal(r)?);
            let unit = 10i128.pow(SCALE);
            let f = i256::from_i128(unit);
            let out = zip_opt::<Decimal128Type>(&l, &r, |a, b| match op {
                Op::Add => a.checked_add(b),
                Op::Sub => a.checked_sub(b),
                Op::Mul => rounded(i256::from_i128(a) * i256::from_i128(b), f),
                Op::Div if b != 0 => rounded(i256::from_i128(a) * f, i256::from_i128(b)),
                Op::IntDiv if b != 0 => (a / b).checked_mul(unit),
                Op::Mod if b != 0 => Some(a % b),
                _ => None,
            });
            Ok(Arc::new(out.with_data_type(DataType::Decimal128(
                DECIMAL_PRECISION,
                DECIMAL_SCALE,
            ))))
        }
    }
}

/// `n / d` rounded half away from zero (as the SQL engines' casts round), if it fits.
fn rounded(n: i256, d: i256) -> Option<i128> {
    let (q, r) = (n / d, n % d);
    let twice = r.wrapping_abs() * i256::from_i128(2);
    let away = twice >= d.wrapping_abs();
    let q = match (away, (n < i256::ZERO) != (d < i256::ZERO)) {
        (false, _) => q,
        (true, true) => q - i256::ONE,
        (true, false) => q + i256::ONE,
    };
    q.to_i128()
}

fn to_decimal(a: &ArrayRef) -> EvalResult<ArrayRef> {
    match a.data_type() {
        DataType::Int32 | DataType::Decimal128(_, _) => {
            cast(a, &DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE))
                .map_err(|e| e.to_string())
        }
        other => Err(format!("arithmetic on {other}")),
    }
}

/// The earliest or latest moment a FHIR date, dateTime or time text can stand for.
pub fn boundary(text: &str, kind: Boundary, high: bool) -> Option<String> {
    match kind {
        Boundary::Decimal(_) => None,
        Boundary::Time => {
            let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
            let parts: Vec<&str> = hms.split(':').collect();
            let pad = |i: usize, lo: &str, hi: &str| {
                parts
                    .get(i)
                    .map_or(if high { hi } else { lo }.to_string(), |s| s.to_string())
            };
            let frac = if frac.is_empty() {
                if high { "999" } else { "000" }.to_string()
            } else {
                let mut f = frac.to_string();
                while f.len() < 3 {
                    f.push(if high { '9' } else { '0' });
                }
                f
            };
            Some(format!(
                "{}:{}:{}.{frac}",
                pad(0, "00", "23"),
                pad(1, "00", "59"),
                pad(2, "00", "59")
            ))
        }
        Boundary::Date | Boundary::DateTime => {
            let (date, time) = match text.split_once('T') {
                Some((d, t)) => (d, Some(t)),
                None => (text, None),
            };
            let year: i32 = date.get(0..4)?.parse().ok()?;
            let month: u32 = match date.get(5..7) {
                Some(m) => m.parse().ok()?,
                None => {
                    if high {
                        12
                    } else {
                        1
                    }
                }
            };
            let day: u32 = match date.get(8..10) {
                Some(d) => d.parse().ok()?,
                None if high => {
                    let next = if month == 12 {
                        chrono::NaiveDate::from_ymd_opt(year + 1, 1, 1)
                    } else {
                        chrono::NaiveDate::from_ymd_opt(year, month + 1, 1)
                    }?;
                    chrono::Datelike::day(&next.pred_opt()?)
                }
                None => 1,
            };
            let d = format!("{year:04}-{month:02}-{day:02}");
            if kind == Boundary::Date {
                return Some(d);
            }
            match time {
                None => Some(if high {
                    format!("{d}T23:59:59.999-12:00")
                } else {
                    format!("{d}T00:00:00.000+14:00")
                }),
                Some(t) => {
                    let split = t.find(['Z', '+', '-']).unwrap_or(t.len());
                    let (clock, offset) = t.split_at(split);
                    let clock = boundary(clock, Boundary::Time, high)?;
                    let offset = if offset.is_empty() {
                        if high {
                            "-12:00"
                        } else {
                            "+14:00"
                        }
                    } else {
                        offset
                    };
                    Some(format!("{d}T{clock}{offset}"))
                }
            }
        }
    }
}

/// Data nests far less deep than this; a `repeat` whose paths lead back to the same items does not.
const MAX_REPEAT_DEPTH: usize = 1000;

/// Depth-first: every item reached from the focus by the paths, at any depth.
///
/// Items are kept in *segments*: the focus, then one segment per path applied to a segment.
/// Items of different segments may have different struct types (the depths of a recursive
/// element); they are projected to `dt` only when the result is assembled.
fn repeat(
    start: &Coll,
    levels: &[Vec<Node>],
    dt: &DataType,
    cyclic: bool,
    env: &Env,
) -> EvalResult<Coll> {
    struct Segment {
        values: ArrayRef,
        level: usize,
        /// The row of each item.
        rows: Vec<u32>,
        /// The children of each item: (segment, start, end).
        children: Vec<Vec<(usize, u32, u32)>>,
    }
    let n = start.rows();
    let mut segs = vec![Segment {
        values: start.values.clone(),
        level: 0,
        rows: start.row_of_values(),
        children: vec![Vec::new(); start.values.len()],
    }];
    let mut next = 0;
    while next < segs.len() {
        let s = next;
        next += 1;
        let level = segs[s].level;
        if segs[s].values.is_empty() || (level >= levels.len() && !cyclic) {
            continue;
        }
        if level > MAX_REPEAT_DEPTH {
            return Err(format!(
                "repeat went {MAX_REPEAT_DEPTH} levels deep: do its paths lead back to the items?"
            ));
        }
        let items = Coll::singletons(segs[s].values.clone());
        let inner = env.for_items(&segs[s].rows);
        for p in &levels[level.min(levels.len() - 1)] {
            let c = p.eval(&items, &inner)?;
            if c.values.is_empty() {
                continue;
            }
            let t = segs.len();
            let mut rows = Vec::with_capacity(c.values.len());
            for item in 0..items.rows() {
                let (a, b) = (c.offsets[item] as u32, c.offsets[item + 1] as u32);
                if b > a {
                    segs[s].children[item].push((t, a, b));
                }
                rows.extend(std::iter::repeat_n(segs[s].rows[item], (b - a) as usize));
            }
            segs.push(Segment {
                children: vec![Vec::new(); c.values.len()],
                values: c.values,
                level: level + 1,
                rows,
            });
        }
    }
    fn visit(seg: usize, item: u32, segs: &[Segment], out: &mut Vec<(usize, usize)>) {
        out.push((seg, item as usize));
        for &(t, a, b) in &segs[seg].children[item as usize] {
            for c in a..b {
                visit(t, c, segs, out);
            }
        }
    }
    let mut pairs = Vec::new();
    let mut lens = Vec::with_capacity(n);
    for r in 0..n {
        let before = pairs.len();
        for item in start.offsets[r] as u32..start.offsets[r + 1] as u32 {
            for &(t, a, b) in &segs[0].children[item as usize] {
                for c in a..b {
                    visit(t, c, &segs, &mut pairs);
                }
            }
        }
        lens.push(pairs.len() - before);
    }
    // The focus segment is never part of the result: a placeholder of the right type.
    let mut arrays = vec![arrow::array::new_null_array(dt, 0)];
    for seg in &segs[1..] {
        arrays.push(project(&seg.values, dt)?);
    }
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    let values = if pairs.is_empty() {
        new_empty_array(dt)
    } else {
        interleave(&refs, &pairs).map_err(|e| e.to_string())?
    };
    Ok(Coll {
        offsets: OffsetBuffer::from_lengths(lens),
        values,
    })
}

/// `a` with only the fields of `dt`, recursively (items of different depths of a recursive
/// element, made one type).
pub fn project(a: &ArrayRef, dt: &DataType) -> EvalResult<ArrayRef> {
    if a.data_type() == dt {
        return Ok(a.clone());
    }
    match (a.data_type(), dt) {
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let st = a.as_struct();
            let cols = fields
                .iter()
                .map(|f| {
                    let c = st
                        .column_by_name(f.name())
                        .ok_or_else(|| format!("no field '{}' to project", f.name()))?;
                    project(c, f.data_type())
                })
                .collect::<EvalResult<Vec<_>>>()?;
            Ok(Arc::new(StructArray::new(
                fields.clone(),
                cols,
                st.nulls().cloned(),
            )))
        }
        (DataType::List(_), DataType::List(f)) => {
            let l = a.as_list::<i32>();
            let values = project(l.values(), f.data_type())?;
            Ok(Arc::new(ListArray::new(
                f.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )))
        }
        (DataType::Null, _) => Ok(arrow::array::new_null_array(dt, a.len())),
        _ => cast(a, dt).map_err(|e| e.to_string()),
    }
}

/// `List<Struct{i: Int32, v}>`: the items of each row with their index, for `forEach`. With
/// `or_null`, an empty row gets one item `{i: 0, v: NULL}`.
pub fn indexed_items(c: &Coll, or_null: bool) -> EvalResult<ListArray> {
    let n = c.rows();
    let dt = c.values.data_type().clone();
    let (offsets, values, idx) = if or_null && (0..n).any(|r| c.len(r) == 0) {
        let mut take_idx = Vec::new();
        let mut idx = Vec::new();
        let mut lens = Vec::with_capacity(n);
        for r in 0..n {
            if c.len(r) == 0 {
                take_idx.push(None);
                idx.push(0);
                lens.push(1);
            } else {
                for (k, i) in (c.offsets[r]..c.offsets[r + 1]).enumerate() {
                    take_idx.push(Some(i as u32));
                    idx.push(k as i32);
                }
                lens.push(c.len(r));
            }
        }
        (
            OffsetBuffer::from_lengths(lens),
            take_opt(&c.values, take_idx)?,
            idx,
        )
    } else {
        let mut idx = Vec::with_capacity(c.values.len());
        for r in 0..n {
            idx.extend(0..c.len(r) as i32);
        }
        (c.offsets.clone(), c.values.clone(), idx)
    };
    let fields = item_fields(&dt);
    let st = StructArray::new(
        fields.clone(),
        vec![Arc::new(Int32Array::from(idx)) as ArrayRef, values],
        None,
    );
    Ok(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Struct(fields), true)),
        offsets,
        Arc::new(st),
        None,
    ))
}

/// The fields of a `forEach` item: its index and its value.
pub fn item_fields(dt: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("i", DataType::Int32, false),
        Field::new("v", dt.clone(), true),
    ])
}

/// A boolean per row: whether the collection is exactly `true`.
pub fn truthy(c: &Coll) -> EvalResult<BooleanArray> {
    let b = c
        .values
        .as_boolean_opt()
        .ok_or("does not evaluate to a boolean")?;
    let mut out = BooleanBufferBuilder::new(c.rows());
    for r in 0..c.rows() {
        out.append(c.len(r) == 1 && b.value(c.offsets[r] as usize));
    }
    Ok(BooleanArray::new(out.finish(), None))
}

/// The property `name` of every JSON object item (JSON text) of `s`, arrays flattened, nulls
/// and values of another JSON type skipped.
pub fn json_field(s: &Coll, name: &str, kind: JsonKind) -> EvalResult<Coll> {
    let text = s
        .values
        .as_string_opt::<i32>()
        .ok_or_else(|| format!("'{name}' of a value that is not an object"))?;
    let mut out = JsonValues::new(kind);
    let mut lens = Vec::with_capacity(s.rows());
    for r in 0..s.rows() {
        let before = out.len;
        for i in s.offsets[r] as usize..s.offsets[r + 1] as usize {
            if text.is_null(i) {
                continue;
            }
            let Ok(doc) = crate::json::parse(text.value(i)) else {
                continue;
            };
            if kind == JsonKind::Element {
                for element in primitive_elements(&doc, name) {
                    out.push(&element);
                }
                continue;
            }
            match doc.get(name) {
                Some(Json::Arr(items)) => items.iter().for_each(|v| out.push(v)),
                Some(v) => out.push(v),
                None => {}
            }
        }
        lens.push(out.len - before);
    }
    // Values of another JSON type are NULL here: dropped.
    compact(OffsetBuffer::from_lengths(lens), out.finish())
}

/// The primitive `name` of an object as elements: `{"value": v, "id": .., "extension": [..]}`
/// from `name` and `_name`, place by place (FHIR JSON keeps the two arrays aligned, `null` where
/// one has nothing).
fn primitive_elements<'a>(doc: &Json<'a>, name: &str) -> Vec<Json<'a>> {
    let under = format!("_{name}");
    let at = |v: Option<&Json<'a>>, i: usize, many: bool| -> Option<Json<'a>> {
        match v? {
            Json::Arr(items) => items.get(i).cloned(),
            _ if many || i > 0 => None,
            x => Some(x.clone()),
        }
    };
    let (value, element) = (doc.get(name), doc.get(&under));
    let len = |v: Option<&Json>| match v {
        Some(Json::Arr(items)) => items.len(),
        Some(Json::Null) | None => 0,
        Some(_) => 1,
    };
    let many = matches!(value, Some(Json::Arr(_))) || matches!(element, Some(Json::Arr(_)));
    let mut out = Vec::new();
    for i in 0..len(value).max(len(element)) {
        let mut members: Vec<(std::borrow::Cow<'a, str>, Json<'a>)> = Vec::new();
        if let Some(v) = at(value, i, many).filter(|v| !matches!(v, Json::Null)) {
            members.push(("value".into(), v));
        }
        if let Some(Json::Obj(m)) = at(element, i, many) {
            members.extend(m.iter().cloned());
        }
        if !members.is_empty() {
            out.push(Json::Obj(std::borrow::Cow::Owned(members)));
        }
    }
    out
}

/// Values read from JSON, built as the Arrow array of their kind: objects and number texts by
/// hand, primitives by the converter's own decoders. A value of another kind is NULL.
struct JsonValues {
    kind: JsonKind,
    text: StringBuilder,
    prim: Option<(Box<dyn crate::decode::ArrayDecoder>, crate::decode::Context)>,
    len: usize,
}

impl JsonValues {
    fn new(kind: JsonKind) -> JsonValues {
        let prim = match kind {
            JsonKind::Prim(p) => Some((
                crate::decode::primitive_decoder(p),
                crate::decode::Context::default(),
            )),
            JsonKind::Object | JsonKind::Text | JsonKind::Element => None,
        };
        JsonValues {
            kind,
            text: StringBuilder::new(),
            prim,
            len: 0,
        }
    }

    fn push(&mut self, v: &Json) {
        self.len += 1;
        if let Some((decoder, cx)) = &mut self.prim {
            return decoder.decode(Some(v), cx);
        }
        match (self.kind, v) {
            (JsonKind::Object | JsonKind::Element, Json::Obj(_)) => {
                let mut t = String::new();
                v.write_to(&mut t);
                self.text.append_value(t);
            }
            (JsonKind::Text, Json::Str(t) | Json::Num(t)) => self.text.append_value(t),
            _ => self.text.append_null(),
        }
    }

    fn finish(mut self) -> ArrayRef {
        match &mut self.prim {
            // The first array: a date's text, not its `_ts` companion.
            Some((decoder, _)) => decoder.flush().swap_remove(0),
            None => Arc::new(self.text.finish()),
        }
    }
}

/// `lowBoundary()` / `highBoundary()` of a decimal written as `text`: half a unit of its last
/// digit below or above (`1.0` → 0.95 / 1.05), optionally rounded outwards to `precision`
/// digits after the point.
pub fn decimal_boundary(text: &str, precision: Option<u8>, high: bool) -> Option<i128> {
    let digits = text.trim_start_matches('-');
    if digits.contains(['e', 'E']) {
        return None;
    }
    let scale = digits.split_once('.').map_or(0, |(_, f)| f.len()) as u32;
    let (v, _) = crate::decode::decimal::parse_decimal(text)?;
    if scale + 1 > SCALE {
        return Some(v);
    }
    // Half a unit of the last written digit, at the column's scale.
    let half = 5 * 10i128.pow(SCALE - scale - 1);
    let b = if high {
        v.checked_add(half)?
    } else {
        v.checked_sub(half)?
    };
    let b = match precision {
        Some(p) if (p as u32) < scale + 1 => {
            let unit = 10i128.pow(SCALE - p as u32);
            let floor = b.div_euclid(unit) * unit;
            if high && floor != b {
                floor + unit
            } else {
                floor
            }
        }
        _ => b,
    };
    Some(b)
}
