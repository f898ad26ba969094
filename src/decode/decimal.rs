//! FHIR decimals as exact fixed-point numbers.

use crate::schema::node::DECIMAL_SCALE;

const SCALE: i32 = DECIMAL_SCALE as i32;
const MAX_DIGITS: usize = 38;

/// A JSON number as a Decimal128 at [`DECIMAL_SCALE`]: the value, and whether it is exact (digits
/// beyond the scale are rounded half away from zero). None when it is out of range.
pub fn parse_decimal(text: &str) -> Option<(i128, bool)> {
    let b = text.as_bytes();
    let (neg, rest) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let mut digits: Vec<u8> = Vec::with_capacity(rest.len());
    let mut frac_len: i32 = 0;
    let mut in_frac = false;
    let mut exp: i32 = 0;
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            d @ b'0'..=b'9' => {
                digits.push(d - b'0');
                if in_frac {
                    frac_len += 1;
                }
            }
            b'.' => in_frac = true,
            b'e' | b'E' => {
                exp = std::str::from_utf8(&rest[i + 1..]).ok()?.parse().ok()?;
                break;
            }
            _ => return None,
        }
        i += 1;
    }
    let first = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
    let digits = &digits[first..];
    let shift = exp.checked_sub(frac_len)?.checked_add(SCALE)?;
    let (kept, dropped): (&[u8], &[u8]) = if shift >= 0 {
        (digits, &[])
    } else {
        let cut = digits.len().saturating_sub((-shift) as usize);
        digits.split_at(cut)
    };
    let pad = shift.max(0) as usize;
    if kept.len() + pad > MAX_DIGITS {
        return None;
    }
    let mut v: i128 = 0;
    for &d in kept {
        v = v * 10 + d as i128;
    }
    for _ in 0..pad {
        v *= 10;
    }
    // Digits dropped beyond what `dropped` holds (a very small number) are zeros of the shift.
    let exact = dropped.iter().all(|&d| d == 0);
    let round_up =
        shift < 0 && digits.len() >= (-shift) as usize && dropped.first().is_some_and(|&d| d >= 5);
    if round_up {
        v += 1;
    }
    Some((if neg { -v } else { v }, exact))
}

/// The shortest text of a Decimal128 at [`DECIMAL_SCALE`]: no trailing zeros, no exponent.
pub fn decimal_text(v: i128) -> String {
    let scale = 10i128.pow(SCALE as u32);
    let abs = v.unsigned_abs();
    let int = abs / scale as u128;
    let frac = abs % scale as u128;
    let sign = if v < 0 { "-" } else { "" };
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        let f = format!("{frac:0width$}", width = SCALE as usize);
        format!("{sign}{int}.{}", f.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &str) -> Option<String> {
        parse_decimal(t).map(|(v, _)| decimal_text(v))
    }

    #[test]
    fn exact_values() {
        assert_eq!(round_trip("1.5").as_deref(), Some("1.5"));
        assert_eq!(round_trip("1.50").as_deref(), Some("1.5"));
        assert_eq!(round_trip("-0.001").as_deref(), Some("-0.001"));
        assert_eq!(round_trip("1e3").as_deref(), Some("1000"));
        assert_eq!(round_trip("12.5E-1").as_deref(), Some("1.25"));
        assert_eq!(
            round_trip("45.557980450962866").as_deref(),
            Some("45.557980450962866")
        );
        assert_eq!(
            parse_decimal("0.1234567890123456789"),
            Some((123456789012345679, false))
        );
        assert_eq!(parse_decimal("1e-30"), Some((0, false)));
        assert_eq!(parse_decimal("1e30"), None);
        assert_eq!(
            parse_decimal("99999999999999999999"),
            Some((99999999999999999999 * 10i128.pow(18), true))
        );
        assert_eq!(parse_decimal("100000000000000000000"), None);
    }
}
