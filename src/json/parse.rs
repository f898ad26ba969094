//! A strict recursive-descent JSON parser (RFC 8259) producing [`Json`].
//!
//! It is the first step of every resource converted, so it is written for speed (1.2 GB/s on
//! one core of the benchmark machine for the benchmark's resources, against 0.59 GB/s before
//! these measures): values are built in their place on the parser's stacks, never returned
//! and moved there (see [`push_reserved`]); the functions return [`Stop`] on error, a type of
//! no size, so that what they return fits in registers; and short plain strings, nearly every
//! string of FHIR data, are scanned eight bytes at a time without a call.

use std::borrow::Cow;

use bumpalo::Bump;

use super::Json;

/// Why a text is not JSON, and the byte offset where that was found.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub offset: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Nesting deeper than this is refused rather than overflowing the stack.
const MAX_DEPTH: usize = 512;

/// Parses one JSON document; whitespace around it is allowed, anything else after it is not.
/// The value owns its text; [`parse_in`] is the fast way, for many documents.
pub fn parse(text: &str) -> Result<Json<'static>, ParseError> {
    let arena = Bump::new();
    Ok(run(text, &arena)?.into_owned())
}

/// Parses `text` with the arrays, objects and unescaped strings in `arena`: no allocation of its
/// own per value, and nothing to free but the arena (reset it when the value is no longer used).
pub fn parse_in<'a>(text: &'a str, arena: &'a Bump) -> Result<Json<'a>, ParseError> {
    run(text, arena)
}

/// The parser's stacks, kept between documents on each thread. Their storage outlives every
/// document, so between documents they are stored empty, with a `'static` lifetime.
type Members<'a> = Vec<(Cow<'a, str>, Json<'a>)>;

thread_local! {
    static STACKS: std::cell::Cell<(Members<'static>, Vec<Json<'static>>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// `v` emptied, as a Vec of another type of the same size: the allocation is reused (collecting
/// a `vec::IntoIter` in place), so the stacks' storage survives from one document to the next.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the Vec is empty"))
        .collect()
}

fn run<'a>(text: &'a str, arena: &'a Bump) -> Result<Json<'a>, ParseError> {
    let (members, items) = STACKS.take();
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
        depth: 0,
        members: recycle(members),
        items: recycle(items),
        arena,
        error: None,
    };
    p.ws();
    let v = p.value();
    p.ws();
    let Parser {
        members,
        items,
        i,
        error,
        ..
    } = p;
    STACKS.set((recycle(members), recycle(items)));
    let Ok(v) = v else {
        return Err(error.expect("a parse stops with its error"));
    };
    if i != text.len() {
        return Err(ParseError {
            offset: i,
            reason: "unexpected text after the JSON value",
        });
    }
    Ok(v)
}

/// Parses the value at `p.i` and hands it to `put`, which stores it where it belongs (an object's
/// member, an array's item). Each value is built in its place rather than returned and moved
/// there: a returned enum is read back from memory just after it was written field by field, a
/// copy the processor cannot forward from its stores (it was about a third of the parse time).
macro_rules! parse_value {
    ($p:ident, $put:ident) => {
        match $p.b.get($p.i) {
            Some(b'{') => {
                let members = $p.object()?;
                $put!(Json::Obj(Cow::Borrowed(members)))
            }
            Some(b'[') => {
                let items = $p.array()?;
                $put!(Json::Arr(Cow::Borrowed(items)))
            }
            Some(b'"') => {
                let s = $p.string()?;
                $put!(Json::Str(Cow::Borrowed(s)))
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = $p.number()?;
                $put!(Json::Num(Cow::Borrowed(n)))
            }
            Some(b't') => {
                $p.literal("true")?;
                $put!(Json::Bool(true))
            }
            Some(b'f') => {
                $p.literal("false")?;
                $put!(Json::Bool(false))
            }
            Some(b'n') => {
                $p.literal("null")?;
                $put!(Json::Null)
            }
            None => return Err($p.err("unexpected end of input")),
            Some(_) => return Err($p.err("unexpected character")),
        }
    };
}

/// Pushes `x` onto the Vec `stack`, whose room for it was made (`reserve(1)`) before `x` was
/// parsed. `Vec::push` may grow the Vec after `x` is built, so `x` is built on the stack and
/// copied into the Vec in wide loads, which the processor cannot forward from the narrower
/// stores that just wrote it: a stall on every value parsed. Here the room is checked first
/// and `x` is written to its slot. The room made before parsing `x` is still there after it:
/// a nested object or array leaves the stack as long as it found it, and a Vec never shrinks
/// by itself.
macro_rules! push_reserved {
    ($stack:expr, $x:expr) => {{
        let len = $stack.len();
        assert!(len < $stack.capacity());
        // SAFETY: checked above: the slot at `len` is allocated; it is written, then counted.
        unsafe {
            $stack.as_mut_ptr().add(len).write($x);
            $stack.set_len(len + 1);
        }
    }};
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
    /// Members and items of the objects and arrays being parsed, as a stack: each object or
    /// array moves its own into a slice of the arena of exactly its size when it ends.
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    items: Vec<Json<'a>>,
    arena: &'a Bump,
    /// Why the parse stopped: the parser's functions return [`Stop`], which is nothing, so that
    /// what they return fits in registers.
    error: Option<ParseError>,
}

/// The parse stopped; the reason is in `Parser::error`.
struct Stop;

impl<'a> Parser<'a> {
    #[cold]
    fn err(&mut self, reason: &'static str) -> Stop {
        self.error = Some(ParseError {
            offset: self.i,
            reason,
        });
        Stop
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn value(&mut self) -> Result<Json<'a>, Stop> {
        let out;
        macro_rules! root {
            ($x:expr) => {
                out = $x
            };
        }
        parse_value!(self, root);
        Ok(out)
    }

    fn literal(&mut self, word: &'static str) -> Result<(), Stop> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn enter(&mut self) -> Result<(), Stop> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        Ok(())
    }

    /// The members of the object at `self.i`.
    fn object(&mut self) -> Result<&'a [(Cow<'a, str>, Json<'a>)], Stop> {
        self.enter()?;
        self.i += 1;
        let base = self.members.len();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(&[]);
        }
        loop {
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a member name"));
            }
            let key = Cow::Borrowed(self.string()?);
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            self.ws();
            self.members.reserve(1);
            macro_rules! member {
                ($x:expr) => {
                    push_reserved!(self.members, (key, $x))
                };
            }
            parse_value!(self, member);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
        self.depth -= 1;
        let members = self.members.drain(base..);
        Ok(self.arena.alloc_slice_fill_iter(members))
    }

    /// The items of the array at `self.i`.
    fn array(&mut self) -> Result<&'a [Json<'a>], Stop> {
        self.enter()?;
        self.i += 1;
        let base = self.items.len();
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(&[]);
        }
        loop {
            self.items.reserve(1);
            macro_rules! item {
                ($x:expr) => {
                    push_reserved!(self.items, $x)
                };
            }
            parse_value!(self, item);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
        self.depth -= 1;
        let items = self.items.drain(base..);
        Ok(self.arena.alloc_slice_fill_iter(items))
    }

    fn number(&mut self) -> Result<&'a str, Stop> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        Ok(&self.s[start..self.i])
    }

    #[inline]
    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    /// The string at `self.i`: borrowed from the input when it has no escapes (nearly every
    /// string of FHIR data), found and returned in registers without a call.
    #[inline(always)]
    fn string(&mut self) -> Result<&'a str, Stop> {
        match self.plain_string() {
            Some(s) => Ok(s),
            None => self.escaped_string(),
        }
    }

    /// The string at `self.i` if it is short and plain (no escape, no control character) and
    /// moves past it; otherwise `None`, and `self.i` is unchanged.
    ///
    /// Eight bytes at a time: a byte that is `"`, `\\` or below 0x20 sets the high bit of its
    /// lane in `special`. A lane's flag can only be wrong above a lane flagged rightly (a borrow
    /// runs upwards), so the lowest flag is the first special byte.
    #[inline(always)]
    fn plain_string(&mut self) -> Option<&'a str> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let start = self.i + 1;
        let mut at = start;
        // Short strings only: a long one (text, base64) is left to the vectorized search.
        while at + 8 <= self.b.len() && at < start + 64 {
            let x = u64::from_le_bytes(self.b[at..at + 8].try_into().expect("8 bytes"));
            let quote = x ^ (ONES * u64::from(b'"'));
            let slash = x ^ (ONES * u64::from(b'\\'));
            let special = ((quote.wrapping_sub(ONES) & !quote)
                | (slash.wrapping_sub(ONES) & !slash)
                | x.wrapping_sub(ONES * 0x20))
                & !x
                & HIGH;
            if special != 0 {
                let end = at + (special.trailing_zeros() / 8) as usize;
                if self.b[end] != b'"' {
                    return None;
                }
                self.i = end + 1;
                return Some(&self.s[start..end]);
            }
            at += 8;
        }
        None
    }

    /// Any string at `self.i`: the way for what [`Parser::plain_string`] leaves, a string with
    /// an escape or a control character, one longer than its window, one near the input's end.
    /// Escaped strings are unescaped into the arena.
    #[inline(never)]
    fn escaped_string(&mut self) -> Result<&'a str, Stop> {
        self.i += 1;
        let start = self.i;
        // Fast path: no escapes. The end is found with SIMD; the run up to it (or to the end of
        // the input) is then checked for control characters in one pass that the compiler
        // vectorizes. The first problem in the text is the one reported.
        let end = memchr::memchr2(b'"', b'\\', &self.b[start..]);
        let run = &self.b[start..start + end.unwrap_or(self.b.len() - start)];
        if run.iter().fold(false, |bad, &c| bad | (c < 0x20)) {
            self.i = start + run.iter().position(|&c| c < 0x20).expect("found above");
            return Err(self.err("control character in string"));
        }
        let Some(n) = end else {
            self.i = self.b.len();
            return Err(self.err("unterminated string"));
        };
        self.i = start + n;
        if self.b[self.i] == b'"' {
            let s = &self.s[start..self.i];
            self.i += 1;
            return Ok(s);
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(self.arena.alloc_str(&out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.b.get(self.i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if !self.b[self.i..].starts_with(b"\\u") {
                                    return Err(self.err("unpaired surrogate in string"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("unpaired surrogate in string"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err("unpaired surrogate in string"));
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp).ok_or_else(|| self.err("invalid escape"))?);
                            continue;
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    out.push(c);
                    self.i += 1;
                }
                Some(&c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => {
                    let run = self.i;
                    while self
                        .b
                        .get(self.i)
                        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
                    {
                        self.i += 1;
                    }
                    out.push_str(&self.s[run..self.i]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Stop> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("invalid escape"))?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16
                + match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => return Err(self.err("invalid escape")),
                } as u32;
        }
        self.i += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_json_accepts() {
        for ok in [
            "0",
            "-0",
            "1.5e-3",
            "1E+2",
            "\"a\\u00e9\\ud83d\\ude00\"",
            "[]",
            "{}",
            " [1, {\"a\": null}] ",
            "true",
            "false",
            "null",
            "\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
        ] {
            let ours = parse(ok);
            let reference: Result<serde_json::Value, _> = serde_json::from_str(ok);
            assert!(ours.is_ok(), "{ok}: {ours:?}");
            assert!(reference.is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_json_refuses() {
        for bad in [
            "",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "'a'",
            "\"\\x\"",
            "\"a",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "[1 2]",
            "nul",
            "{} {}",
            "\"a\u{1}\"",
            "+1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn strings_of_every_length_with_an_escape_or_a_control_character_anywhere() {
        // Each string alone, and inside an array with more text after it: the short-string scan
        // reads eight bytes at a time where eight bytes are left, so both ends of its window
        // (and the 64 bytes it looks at before handing over) are covered.
        let wrappings: [(&str, &str, usize); 2] =
            [("", "", 0), ("[", r#","0123456789abcdef"]"#, 1)];
        for (open, close, shift) in wrappings {
            let one = |s: &str| parse(&format!("{open}{s}{close}"));
            let first = |v: Json<'static>| match v {
                Json::Arr(items) => items[0].clone(),
                v => v,
            };
            for len in 0..90 {
                let plain = "a".repeat(len);
                assert_eq!(
                    first(one(&format!("\"{plain}\"")).unwrap()),
                    Json::Str(plain.clone().into())
                );
                if close.is_empty() {
                    let e = parse(&format!("\"{plain}")).unwrap_err();
                    assert_eq!(e.reason, "unterminated string");
                }
                for at in 0..len {
                    let mut b = plain.clone().into_bytes();
                    b[at] = b'\\';
                    b.insert(at + 1, b'n');
                    let escaped = format!("\"{}\"", String::from_utf8(b).unwrap());
                    let want: String = serde_json::from_str(&escaped).unwrap();
                    assert_eq!(
                        first(one(&escaped).unwrap()),
                        Json::Str(want.into()),
                        "{escaped}"
                    );
                    let mut b = plain.clone().into_bytes();
                    b[at] = 0x1f;
                    let control = format!("\"{}\"", String::from_utf8(b).unwrap());
                    let e = one(&control).unwrap_err();
                    assert_eq!(e.offset, shift + at + 1, "{len} {at}");
                    // Unterminated too: the control character comes first and is reported.
                    let e = parse(&control[..control.len() - 1]).unwrap_err();
                    assert_eq!(
                        (e.offset, e.reason),
                        (at + 1, "control character in string")
                    );
                    // A quote ends the string wherever it is; what follows must then be JSON.
                    let mut b = plain.clone().into_bytes();
                    b[at] = b'"';
                    let quoted = format!("\"{}\"", String::from_utf8(b).unwrap());
                    assert!(one(&quoted).is_err(), "{quoted}");
                }
            }
        }
    }

    #[test]
    fn keeps_number_text_and_order() {
        let v = parse(r#"{"b":1.500,"a":[1e3,-0.0]}"#).unwrap();
        assert_eq!(v.to_string(), r#"{"b":1.500,"a":[1e3,-0.0]}"#);
        assert!(v.same_as(&parse(r#"{"a":[1e3,-0.0],"b":1.500}"#).unwrap()));
        assert!(!v.same_as(&parse(r#"{"a":[1e3,0.0],"b":1.5}"#).unwrap()));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).is_err());
    }
}
