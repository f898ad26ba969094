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
    // The digits, on the stack for any number of ordinary length.
    let mut stack = [0u8; 64];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if rest.len() <= stack.len() {
        &mut stack
    } else {
        heap.resize(rest.len(), 0);
        &mut heap
    };
    let mut count = 0;
    let mut frac_len: i32 = 0;
    let mut in_frac = false;
    let mut exp: i32 = 0;
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            d @ b'0'..=b'9' => {
                buf[count] = d - b'0';
                count += 1;
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
    let digits = &buf[..count];
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
    let mut s = String::new();
    write_decimal_text(v, &mut s).expect("a String takes any text");
    s
}

/// Whether `text` is exactly [`decimal_text`] of `v`, without allocating.
pub fn is_decimal_text(v: i128, text: &str) -> bool {
    let mut out = StackText {
        buf: [0; 64],
        len: 0,
    };
    write_decimal_text(v, &mut out).is_ok() && &out.buf[..out.len] == text.as_bytes()
}

fn write_decimal_text(v: i128, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let scale = 10u128.pow(SCALE as u32);
    let abs = v.unsigned_abs();
    let (int, frac) = (abs / scale, abs % scale);
    if v < 0 {
        out.write_char('-')?;
    }
    write!(out, "{int}")?;
    if frac != 0 {
        let (mut f, mut width) = (frac, SCALE as usize);
        while f % 10 == 0 {
            f /= 10;
            width -= 1;
        }
        write!(out, ".{f:0width$}")?;
    }
    Ok(())
}

/// Text written to a buffer on the stack.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &str) -> Option<String> {
        parse_decimal(t).map(|(v, _)| {
            let text = decimal_text(v);
            assert!(is_decimal_text(v, &text));
            text
        })
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
