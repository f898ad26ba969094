//! A parser for the FHIRPath subset that SQL on FHIR v2 requires: paths, indexers, function
//! calls, literals, `%constants`, `$this`, and the operators by FHIRPath's precedence.

use std::fmt;

/// A parsed FHIRPath expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    /// `{}`
    Empty,
    Str(String),
    Int(i64),
    /// A decimal literal, by its text.
    Dec(String),
    Bool(bool),
    /// `@2020-01-01`, `@2020-01-01T10:00:00Z` (the text after `@`).
    DateTime(String),
    /// `@T12:00` (the text after `@T`).
    Time(String),
    /// `%name`
    Var(String),
    /// `$this`
    This,
    /// A name at the start of a path or after a dot: `name`, `a.name`.
    Member(Option<Box<Ast>>, String),
    /// `f(args)` or `a.f(args)`.
    Call(Option<Box<Ast>>, String, Vec<Ast>),
    /// `a[i]`
    Index(Box<Ast>, Box<Ast>),
    Binary(Op, Box<Ast>, Box<Ast>),
    /// Unary minus.
    Neg(Box<Ast>),
    /// A quantity literal: the number's text and the unit (`4 days`, `10 'mg'`).
    Quantity(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    And,
    Or,
    Xor,
    Implies,
    /// `a in b`: the item `a` is in the collection `b`.
    In,
    /// `a contains b`: the collection `a` holds the item `b`.
    Contains,
}

impl Op {
    fn precedence(self) -> u8 {
        match self {
            Op::Mul | Op::Div | Op::IntDiv | Op::Mod => 9,
            Op::Add | Op::Sub | Op::Concat => 8,
            // 7: the type operators `is` and `as` (see `Parser::expr`).
            Op::Union => 6,
            Op::Lt | Op::Le | Op::Gt | Op::Ge => 5,
            Op::Eq | Op::Ne | Op::Equiv | Op::NotEquiv => 4,
            Op::In | Op::Contains => 3,
            Op::And => 2,
            Op::Or | Op::Xor => 1,
            Op::Implies => 0,
        }
    }
}

/// The calendar duration units a quantity literal may be written with, unquoted.
pub const CALENDAR_UNITS: &[&str] = &[
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

/// The precedence of the type operators `is` and `as` (between `+` and `|`).
const TYPE_OPERATORS: u8 = 7;

/// A syntax error: what was wrong and at which character.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at character {}", self.message, self.offset + 1)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    DateTime(String),
    Time(String),
    Var(String),
    This,
    Sym(&'static str),
    End,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, SyntaxError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |offset: usize, message: &str| SyntaxError {
        offset,
        message: message.to_string(),
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            match src[i + 2..].find("*/") {
                Some(end) => i += 2 + end + 2,
                None => return Err(err(start, "unterminated /* comment */")),
            }
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Tok::Ident(src[start..i].to_string())
        } else if c == b'`' {
            i += 1;
            let s = i;
            while i < b.len() && b[i] != b'`' {
                i += 1;
            }
            if i >= b.len() {
                return Err(err(start, "unterminated `identifier`"));
            }
            i += 1;
            Tok::Ident(src[s..i - 1].to_string())
        } else if c == b'\'' {
            i += 1;
            let mut s = String::new();
            loop {
                match b.get(i) {
                    None => return Err(err(start, "unterminated string")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        // The escaped character whole: it may be more than one byte.
                        let e = src[i + 1..]
                            .chars()
                            .next()
                            .ok_or_else(|| err(i, "bad escape"))?;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            'f' => '\u{c}',
                            'u' => {
                                let hex = src.get(i + 2..i + 6).ok_or_else(|| err(i, "bad \\u"))?;
                                let cp =
                                    u32::from_str_radix(hex, 16).map_err(|_| err(i, "bad \\u"))?;
                                i += 4;
                                char::from_u32(cp).ok_or_else(|| err(i, "bad \\u"))?
                            }
                            other => other,
                        });
                        i += 1 + e.len_utf8();
                    }
                    Some(_) => {
                        let ch = src[i..].chars().next().expect("in bounds");
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            Tok::Str(s)
        } else if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            Tok::Num(src[start..i].to_string())
        } else if c == b'@' {
            i += 1;
            let time = b.get(i) == Some(&b'T');
            if time {
                i += 1;
            }
            let s = i;
            // Digits, separators, `T`, `Z`; a `.` only before the digits of a fraction (after
            // the literal, `.` starts an invocation: `@2015.is(Date)`).
            while i < b.len()
                && (b[i].is_ascii_digit()
                    || matches!(b[i], b'-' | b':' | b'+' | b'T' | b'Z')
                    || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                i += 1;
            }
            if i == s {
                return Err(err(start, "expected a date or time after @"));
            }
            let text = src[s..i].to_string();
            // A time of day has no time zone (FHIRPath's grammar: TIME has none).
            if time && text.contains(['Z', '+', '-']) {
                return Err(err(
                    start,
                    "a time literal has no time zone: @T14:34:28, not @T14:34:28Z",
                ));
            }
            if time {
                Tok::Time(text)
            } else {
                Tok::DateTime(text)
            }
        } else if c == b'%' {
            i += 1;
            let s = i;
            if b.get(i) == Some(&b'`') || b.get(i) == Some(&b'\'') {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                if i >= b.len() {
                    return Err(err(start, "unterminated %name"));
                }
                i += 1;
                Tok::Var(src[s + 1..i - 1].to_string())
            } else {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if i == s {
                    return Err(err(start, "expected a name after %"));
                }
                Tok::Var(src[s..i].to_string())
            }
        } else if c == b'$' {
            i += 1;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            match &src[start..i] {
                "$this" => Tok::This,
                other => return Err(err(start, &format!("{other} is not supported"))),
            }
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let sym: &'static str = match two {
                "<=" => "<=",
                ">=" => ">=",
                "!=" => "!=",
                "!~" => "!~",
                _ => match c {
                    b'.' => ".",
                    b'(' => "(",
                    b')' => ")",
                    b'[' => "[",
                    b']' => "]",
                    b'{' => "{",
                    b'}' => "}",
                    b',' => ",",
                    b'=' => "=",
                    b'~' => "~",
                    b'<' => "<",
                    b'>' => ">",
                    b'+' => "+",
                    b'-' => "-",
                    b'*' => "*",
                    b'/' => "/",
                    b'&' => "&",
                    b'|' => "|",
                    _ => return Err(err(start, "unexpected character")),
                },
            };
            i += sym.len();
            Tok::Sym(sym)
        };
        out.push((start, tok));
    }
    out.push((src.len(), Tok::End));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
}

/// Parses a FHIRPath expression.
pub fn parse(src: &str) -> Result<Ast, SyntaxError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    if p.peek() == &Tok::End {
        return Err(p.error("empty expression"));
    }
    let ast = p.expr(0)?;
    if p.peek() != &Tok::End {
        return Err(p.error("unexpected text after the expression"));
    }
    Ok(ast)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].1.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, message: &str) -> SyntaxError {
        SyntaxError {
            offset: self.toks[self.pos].0,
            message: message.to_string(),
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), SyntaxError> {
        match self.peek() {
            Tok::Sym(s) if *s == sym => {
                self.next();
                Ok(())
            }
            _ => Err(self.error(&format!("expected '{sym}'"))),
        }
    }

    fn binary_op(&self) -> Option<Op> {
        Some(match self.peek() {
            Tok::Sym(s) => match *s {
                "*" => Op::Mul,
                "/" => Op::Div,
                "+" => Op::Add,
                "-" => Op::Sub,
                "&" => Op::Concat,
                "|" => Op::Union,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "=" => Op::Eq,
                "!=" => Op::Ne,
                "~" => Op::Equiv,
                "!~" => Op::NotEquiv,
                _ => return None,
            },
            Tok::Ident(s) => match s.as_str() {
                "div" => Op::IntDiv,
                "mod" => Op::Mod,
                "and" => Op::And,
                "or" => Op::Or,
                "xor" => Op::Xor,
                "implies" => Op::Implies,
                "in" => Op::In,
                "contains" => Op::Contains,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// A type name after `is` or `as`: `Quantity`, `FHIR.string`, `System.Integer`.
    fn type_specifier(&mut self) -> Result<Ast, SyntaxError> {
        let mut ty = match self.next() {
            Tok::Ident(n) => Ast::Member(None, n),
            _ => {
                self.pos -= 1;
                return Err(self.error("expected a type name"));
            }
        };
        while self.peek() == &Tok::Sym(".") {
            self.next();
            match self.next() {
                Tok::Ident(n) => ty = Ast::Member(Some(Box::new(ty)), n),
                _ => {
                    self.pos -= 1;
                    return Err(self.error("expected a type name"));
                }
            }
        }
        Ok(ty)
    }

    fn expr(&mut self, min: u8) -> Result<Ast, SyntaxError> {
        let mut left = self.unary()?;
        loop {
            // `x is Type`, `x as Type`: the functions `is(Type)`, `as(Type)`.
            if let Tok::Ident(kw) = self.peek() {
                if (kw == "is" || kw == "as") && TYPE_OPERATORS >= min {
                    let kw = kw.clone();
                    self.next();
                    let ty = self.type_specifier()?;
                    left = Ast::Call(Some(Box::new(left)), kw, vec![ty]);
                    continue;
                }
            }
            let Some(op) = self.binary_op() else { break };
            let prec = op.precedence();
            if prec < min {
                break;
            }
            self.next();
            let right = self.expr(prec + 1)?;
            left = Ast::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Ast, SyntaxError> {
        match self.peek() {
            Tok::Sym("-") => {
                self.next();
                Ok(Ast::Neg(Box::new(self.unary()?)))
            }
            Tok::Sym("+") => {
                self.next();
                self.unary()
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Ast, SyntaxError> {
        let mut e = self.term()?;
        loop {
            match self.peek() {
                Tok::Sym(".") => {
                    self.next();
                    e = self.invocation(Some(e))?;
                }
                Tok::Sym("[") => {
                    self.next();
                    let idx = self.expr(0)?;
                    self.expect("]")?;
                    e = Ast::Index(Box::new(e), Box::new(idx));
                }
                _ => return Ok(e),
            }
        }
    }

    /// A name or a function call, on `src` or at the start of a path.
    fn invocation(&mut self, src: Option<Ast>) -> Result<Ast, SyntaxError> {
        let name = match self.next() {
            Tok::Ident(n) => n,
            Tok::This if src.is_none() => return Ok(Ast::This),
            _ => {
                self.pos -= 1;
                return Err(self.error("expected a name"));
            }
        };
        if self.peek() == &Tok::Sym("(") {
            self.next();
            let mut args = Vec::new();
            if self.peek() != &Tok::Sym(")") {
                loop {
                    args.push(self.expr(0)?);
                    if self.peek() == &Tok::Sym(",") {
                        self.next();
                    } else {
                        break;
                    }
                }
            }
            self.expect(")")?;
            return Ok(Ast::Call(src.map(Box::new), name, args));
        }
        Ok(Ast::Member(src.map(Box::new), name))
    }

    fn term(&mut self) -> Result<Ast, SyntaxError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(Ast::Str(s))
            }
            Tok::Num(n) => {
                self.next();
                // A quantity: a number and a unit (a UCUM code in quotes, or a calendar one).
                let unit = match self.peek().clone() {
                    Tok::Str(u) => Some(u),
                    Tok::Ident(u) if CALENDAR_UNITS.contains(&u.as_str()) => Some(u),
                    _ => None,
                };
                if let Some(u) = unit {
                    self.next();
                    return Ok(Ast::Quantity(n, u));
                }
                if n.contains('.') {
                    Ok(Ast::Dec(n))
                } else {
                    n.parse()
                        .map(Ast::Int)
                        .map_err(|_| self.error("integer out of range"))
                }
            }
            Tok::DateTime(s) => {
                self.next();
                Ok(Ast::DateTime(s))
            }
            Tok::Time(s) => {
                self.next();
                Ok(Ast::Time(s))
            }
            Tok::Var(v) => {
                self.next();
                Ok(Ast::Var(v))
            }
            Tok::This => {
                self.next();
                Ok(Ast::This)
            }
            Tok::Sym("(") => {
                self.next();
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("{") => {
                self.next();
                self.expect("}")?;
                Ok(Ast::Empty)
            }
            Tok::Ident(ref s) if s == "true" || s == "false" => {
                self.next();
                Ok(Ast::Bool(s == "true"))
            }
            Tok::Ident(_) => self.invocation(None),
            Tok::End => Err(self.error("unexpected end of expression")),
            _ => Err(self.error("unexpected token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_character_of_several_bytes_is_kept_whole() {
        // Found by the fuzzer: `\` before a two-byte character split it.
        assert!(matches!(parse("'\\é'"), Ok(Ast::Str(s)) if s == "é"));
        assert!(parse("'\\\u{655}aeee\\w'").is_ok());
    }

    #[test]
    fn precedence_and_paths() {
        let a = parse("name.where(use = 'official' and family = 'f1').exists()").unwrap();
        let Ast::Call(Some(src), f, args) = a else {
            panic!()
        };
        assert_eq!(f, "exists");
        assert!(args.is_empty());
        assert!(matches!(*src, Ast::Call(_, ref w, _) if w == "where"));
        assert_eq!(
            parse("a + b * 2").unwrap(),
            Ast::Binary(
                Op::Add,
                Box::new(Ast::Member(None, "a".into())),
                Box::new(Ast::Binary(
                    Op::Mul,
                    Box::new(Ast::Member(None, "b".into())),
                    Box::new(Ast::Int(2))
                ))
            )
        );
        assert!(matches!(
            parse("name[%i].family").unwrap(),
            Ast::Member(Some(_), _)
        ));
        assert!(parse("@@").is_err());
        assert!(parse("name.").is_err());
        assert!(parse("").is_err());
    }
}
