//! The expression lexer: tokens with their 1-based columns.

use super::expr::SyntaxError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Int(i64),
    Name(String),
    /// A string in single or double quotes (einsum's subscripts).
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Eq,
    LBracket,
    RBracket,
    Colon,
    Dot,
    Ellipsis,
    End,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("number {n}"),
            Tok::Int(n) => format!("number {n}"),
            Tok::Name(n) => format!("name '{n}'"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Op(o) => format!("'{o}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Eq => "'='".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Colon => "':'".into(),
            Tok::Dot => "'.'".into(),
            Tok::Ellipsis => "'...'".into(),
            Tok::End => "the end of the expression".into(),
        }
    }
}

pub(super) fn lex(src: &str) -> Result<Vec<(Tok, usize)>, SyntaxError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let col = |idx: usize| idx + 1;
    let err = |column: usize, message: String| SyntaxError {
        expr: src.to_string(),
        column,
        message,
    };
    let mut out = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        let (_, c) = chars[k];
        let start = k;
        if c.is_whitespace() {
            k += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(k + 1).is_some_and(|(_, d)| d.is_ascii_digit())) {
            let mut s = String::new();
            while k < chars.len() && (chars[k].1.is_ascii_digit() || chars[k].1 == '.' || chars[k].1 == '_') {
                s.push(chars[k].1);
                k += 1;
            }
            if k < chars.len() && (chars[k].1 == 'e' || chars[k].1 == 'E') {
                let save = k;
                let mut e = String::from("e");
                k += 1;
                if k < chars.len() && (chars[k].1 == '+' || chars[k].1 == '-') {
                    e.push(chars[k].1);
                    k += 1;
                }
                if k < chars.len() && chars[k].1.is_ascii_digit() {
                    while k < chars.len() && chars[k].1.is_ascii_digit() {
                        e.push(chars[k].1);
                        k += 1;
                    }
                    s.push_str(&e);
                } else {
                    k = save;
                }
            }
            let digits = s.replace('_', "");
            let tok = if digits.bytes().all(|b| b.is_ascii_digit()) {
                digits
                    .parse()
                    .map(Tok::Int)
                    .map_err(|_| err(col(start), format!("integer '{s}' is too large")))?
            } else {
                Tok::Num(digits.parse().map_err(|_| err(col(start), format!("bad number '{s}'")))?)
            };
            out.push((tok, col(start)));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut s = String::new();
            while k < chars.len() && (chars[k].1.is_alphanumeric() || chars[k].1 == '_') {
                s.push(chars[k].1);
                k += 1;
            }
            out.push((Tok::Name(s), col(start)));
            continue;
        }
        if c == '\'' || c == '"' {
            let Some(len) = chars[k + 1..].iter().position(|(_, d)| *d == c) else {
                return Err(err(col(start), format!("string opened with {c} is not closed")));
            };
            let s: String = chars[k + 1..k + 1 + len].iter().map(|(_, d)| d).collect();
            k += len + 2;
            out.push((Tok::Str(s), col(start)));
            continue;
        }
        let next_is = |d: char| chars.get(k + 1).is_some_and(|(_, n)| *n == d);
        let tok = match c {
            '+' => Tok::Op("+"),
            '-' => Tok::Op("-"),
            '*' if next_is('*') => {
                k += 1;
                Tok::Op("**")
            }
            '*' => Tok::Op("*"),
            '/' if next_is('/') => {
                k += 1;
                Tok::Op("//")
            }
            '/' => Tok::Op("/"),
            '%' => Tok::Op("%"),
            '@' => Tok::Op("@"),
            '&' => Tok::Op("&"),
            '|' => Tok::Op("|"),
            '~' => Tok::Op("~"),
            '<' | '>' | '=' | '!' if next_is('=') => {
                k += 1;
                match c {
                    '<' => Tok::Op("<="),
                    '>' => Tok::Op(">="),
                    '=' => Tok::Op("=="),
                    _ => Tok::Op("!="),
                }
            }
            '<' => Tok::Op("<"),
            '>' => Tok::Op(">"),
            '!' => {
                return Err(err(
                    col(start),
                    "unexpected '!' (numpy negates booleans with ~ or logical_not(), and compares with !=)".into(),
                ));
            }
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ':' => Tok::Colon,
            '.' if next_is('.') && chars.get(k + 2).is_some_and(|(_, n)| *n == '.') => {
                k += 2;
                Tok::Ellipsis
            }
            '.' => Tok::Dot,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => Tok::Eq,
            other => return Err(err(col(start), format!("unexpected character '{other}'"))),
        };
        k += 1;
        out.push((tok, col(start)));
    }
    out.push((Tok::End, src.chars().count() + 1));
    Ok(out)
}
