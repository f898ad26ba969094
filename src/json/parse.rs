//! A strict recursive-descent JSON parser (RFC 8259) producing [`Json`].

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
pub fn parse(text: &str) -> Result<Json<'_>, ParseError> {
    run(text, None)
}

/// Parses `text` with the arrays, objects and unescaped strings in `arena`: no allocation of its
/// own per value, and nothing to free but the arena (reset it when the value is no longer used).
pub fn parse_in<'a>(text: &'a str, arena: &'a Bump) -> Result<Json<'a>, ParseError> {
    run(text, Some(arena))
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

fn run<'a>(text: &'a str, arena: Option<&'a Bump>) -> Result<Json<'a>, ParseError> {
    let (members, items) = STACKS.take();
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
        depth: 0,
        members: recycle(members),
        items: recycle(items),
        arena,
    };
    p.ws();
    let v = p.value();
    p.ws();
    let Parser {
        members, items, i, ..
    } = p;
    STACKS.set((recycle(members), recycle(items)));
    let v = v?;
    if i != text.len() {
        return Err(ParseError {
            offset: i,
            reason: "unexpected text after the JSON value",
        });
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
    /// Members and items of the objects and arrays being parsed, as a stack: each object or
    /// array moves its own into a Vec of exactly its size when it ends (one allocation each,
    /// instead of one per doubling).
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    items: Vec<Json<'a>>,
    arena: Option<&'a Bump>,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &'static str) -> ParseError {
        ParseError {
            offset: self.i,
            reason,
        }
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

    fn value(&mut self) -> Result<Json<'a>, ParseError> {
        match self.b.get(self.i) {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn literal(&mut self, word: &'static str, v: Json<'a>) -> Result<Json<'a>, ParseError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Json<'a>, ParseError> {
        self.enter()?;
        self.i += 1;
        let base = self.members.len();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Json::Obj(Cow::Borrowed(&[])));
        }
        loop {
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a member name"));
            }
            let key = self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            self.ws();
            let v = self.value()?;
            self.members.push((key, v));
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
        Ok(Json::Obj(match self.arena {
            Some(a) => Cow::Borrowed(a.alloc_slice_fill_iter(members)),
            None => Cow::Owned(members.collect()),
        }))
    }

    fn array(&mut self) -> Result<Json<'a>, ParseError> {
        self.enter()?;
        self.i += 1;
        let base = self.items.len();
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Json::Arr(Cow::Borrowed(&[])));
        }
        loop {
            let v = self.value()?;
            self.items.push(v);
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
        Ok(Json::Arr(match self.arena {
            Some(a) => Cow::Borrowed(a.alloc_slice_fill_iter(items)),
            None => Cow::Owned(items.collect()),
        }))
    }

    fn number(&mut self) -> Result<Json<'a>, ParseError> {
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
        Ok(Json::Num(Cow::Borrowed(&self.s[start..self.i])))
    }

    #[inline]
    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
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
            return Ok(Cow::Borrowed(s));
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(match self.arena {
                        Some(a) => Cow::Borrowed(a.alloc_str(&out)),
                        None => Cow::Owned(out),
                    });
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

    fn hex4(&mut self) -> Result<u32, ParseError> {
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
        for len in 0..60 {
            let plain = "a".repeat(len);
            assert_eq!(
                parse(&format!("\"{plain}\"")).unwrap(),
                Json::Str(plain.clone().into())
            );
            let e = parse(&format!("\"{plain}")).unwrap_err();
            assert_eq!(e.reason, "unterminated string");
            for at in 0..len {
                let mut b = plain.clone().into_bytes();
                b[at] = b'\\';
                b.insert(at + 1, b'n');
                let escaped = format!("\"{}\"", String::from_utf8(b).unwrap());
                let want: String = serde_json::from_str(&escaped).unwrap();
                assert_eq!(
                    parse(&escaped).unwrap(),
                    Json::Str(want.into()),
                    "{escaped}"
                );
                let mut b = plain.clone().into_bytes();
                b[at] = 0x1f;
                let control = format!("\"{}\"", String::from_utf8(b).unwrap());
                let e = parse(&control).unwrap_err();
                assert_eq!(e.offset, at + 1, "{len} {at}");
                // Unterminated too: the control character comes first and is what is reported.
                let e = parse(&control[..control.len() - 1]).unwrap_err();
                assert_eq!(
                    (e.offset, e.reason),
                    (at + 1, "control character in string")
                );
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
