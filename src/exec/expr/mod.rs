//! The expression language: numpy-like arithmetic over named arrays.
//!
//! Grammar (lowest precedence first, as Python's: comparisons, then `|`, `&`, `+ -`,
//! `* / // %`, unary `- + ~`; `**` binds tighter than a unary operator on its left
//! and is right-associative):
//! ```text
//! expr   := bor (CMP bor)?            CMP: < <= > >= == != (not chained)
//! bor    := band ('|' band)*
//! band   := arith ('&' arith)*
//! arith  := term (('+' | '-') term)*
//! term   := unary (('*' | '/' | '//' | '%' | '@') unary)*
//! unary  := ('-' | '+' | '~') unary | power
//! power  := atom ('**' unary)?
//! atom   := NUMBER | STRING | NAME | NAME '(' args ')' | '(' expr ')'
//! args   := expr (',' 'axis' '=' axis)?
//! axis   := INT | '-' INT | '(' INT (',' INT)* ','? ')' | 'None'
//! ```

use serde::{Deserialize, Serialize};

use super::lex::{Tok, lex};

pub use super::view::Item;

/// A parse error with the 1-based column where it happened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("syntax error in expression \"{expr}\" at column {column}: {message}")]
pub struct SyntaxError {
    pub expr: String,
    pub column: usize,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Mod,
    FloorDiv,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    /// `@`, numpy's matmul (a contraction, not an elementwise operation).
    MatMul,
}

/// Each operator: its symbol and the registry operation it computes.
const OPERATORS: &[(BinOp, &str, &str)] = &[
    (BinOp::Add, "+", "add"),
    (BinOp::Sub, "-", "subtract"),
    (BinOp::Mul, "*", "multiply"),
    (BinOp::Div, "/", "divide"),
    (BinOp::Pow, "**", "power"),
    (BinOp::Mod, "%", "remainder"),
    (BinOp::FloorDiv, "//", "floor_divide"),
    (BinOp::Lt, "<", "less"),
    (BinOp::Le, "<=", "less_equal"),
    (BinOp::Gt, ">", "greater"),
    (BinOp::Ge, ">=", "greater_equal"),
    (BinOp::Eq, "==", "equal"),
    (BinOp::Ne, "!=", "not_equal"),
    (BinOp::And, "&", "logical_and"),
    (BinOp::Or, "|", "logical_or"),
    (BinOp::MatMul, "@", "matmul"),
];

impl BinOp {
    fn row(self) -> &'static (BinOp, &'static str, &'static str) {
        OPERATORS.iter().find(|r| r.0 == self).expect("every operator has a row")
    }

    pub fn symbol(self) -> &'static str {
        self.row().1
    }

    /// The registry operation ([`super::ops`]) the operator computes.
    pub fn op_name(self) -> &'static str {
        self.row().2
    }

    fn of_symbol(sym: &str) -> Option<BinOp> {
        OPERATORS.iter().find(|r| r.1 == sym).map(|r| r.0)
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `~x`
    Not,
}

impl UnOp {
    pub fn symbol(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Not => "~",
        }
    }

    pub fn op_name(self) -> &'static str {
        match self {
            UnOp::Neg => "negative",
            UnOp::Not => "logical_not",
        }
    }
}

/// The axis argument of a reduction as written.
#[derive(Clone, Debug, PartialEq)]
pub enum AxisArg {
    All,
    Axes(Vec<i64>),
    /// `True` or `False` (`keepdims=True`).
    Flag(bool),
    /// Numbers, one or a tuple, at least one written with a point (`range=(-5, 5.5)`).
    Nums(Vec<f64>),
    /// A tuple of integer tuples (`axes=((1, 0), (0, 1))`).
    Lists(Vec<Vec<i64>>),
    /// A string (`by="month"`).
    Str(String),
    /// An array expression (`weights=cos(deg2rad(lat))[:, None]`).
    Expr(Box<Ast>),
}

/// Parsed expression. `pos` fields are 1-based columns, for error messages.
#[derive(Clone, Debug, PartialEq)]
pub enum Ast {
    /// A number written with a point or an exponent (numpy: float).
    Num(f64),
    /// A number written as an integer (numpy: int).
    Int(i64),
    /// A string literal (einsum's subscripts) at `pos`.
    Str(String, usize),
    Name {
        name: String,
        pos: usize,
    },
    /// A unary operator at `pos`.
    Unary(UnOp, Box<Ast>, usize),
    /// A binary operator at `pos`.
    Bin(BinOp, Box<Ast>, Box<Ast>, usize),
    Call {
        func: String,
        pos: usize,
        args: Vec<Ast>,
        axis: Option<(AxisArg, usize)>,
        /// Other keyword arguments (integers, tuples of integers, `None`), in order.
        kwargs: Vec<(String, AxisArg, usize)>,
    },
    /// numpy basic indexing `base[items]`; each item with its column.
    Index {
        base: Box<Ast>,
        items: Vec<(Item, usize)>,
        pos: usize,
    },
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    i: usize,
    /// Levels of the tree above the cursor (nesting and operator chains).
    depth: usize,
}

/// The deepest expression tree accepted: every pass over the tree recurses, and a
/// deeper one (ten thousand parentheses, or `x + x + ... + x` with ten thousand
/// terms) would overflow a thread's stack instead of being refused.
pub const MAX_DEPTH: usize = 200;

/// Parse an expression.
pub fn parse(src: &str) -> Result<Ast, SyntaxError> {
    let toks = lex(src)?;
    let mut p = Parser { src, toks, i: 0, depth: 0 };
    if p.peek() == &Tok::End {
        return Err(p.error_here("the expression is empty".into()));
    }
    let ast = p.expr()?;
    if p.peek() != &Tok::End {
        return Err(p.error_here(format!("unexpected {} after a complete expression", p.peek().describe())));
    }
    Ok(ast)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }

    fn pos(&self) -> usize {
        self.toks[self.i].1
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn error_here(&self, message: String) -> SyntaxError {
        SyntaxError {
            expr: self.src.to_string(),
            column: self.pos(),
            message,
        }
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), SyntaxError> {
        if *self.peek() == want {
            self.next();
            Ok(())
        } else {
            Err(self.error_here(format!("expected {what} but found {}", self.peek().describe())))
        }
    }

    fn expr(&mut self) -> Result<Ast, SyntaxError> {
        let lhs = self.bor()?;
        let Some(op) = self.peek_op(&["<", "<=", ">", ">=", "==", "!="]) else {
            return Ok(lhs);
        };
        let pos = self.pos();
        self.next();
        let rhs = self.bor()?;
        if self.peek_op(&["<", "<=", ">", ">=", "==", "!="]).is_some() {
            return Err(self.error_here("comparisons cannot be chained (numpy arrays cannot either); write (a < b) & (b < c)".into()));
        }
        Ok(Ast::Bin(op, Box::new(lhs), Box::new(rhs), pos))
    }

    /// The operator at the cursor when it is one of `symbols`.
    fn peek_op(&self, symbols: &[&str]) -> Option<BinOp> {
        match self.peek() {
            Tok::Op(o) if symbols.contains(o) => BinOp::of_symbol(o),
            _ => None,
        }
    }

    /// A left-associative level: `next (op next)*` for the operators `symbols`.
    fn left_assoc(&mut self, symbols: &[&str], next: fn(&mut Self) -> Result<Ast, SyntaxError>) -> Result<Ast, SyntaxError> {
        let mut lhs = next(self)?;
        let outer = self.depth;
        while let Some(op) = self.peek_op(symbols) {
            // Each operator of a chain is a level of the tree above its left side.
            self.deeper()?;
            let pos = self.pos();
            self.next();
            let rhs = next(self)?;
            lhs = Ast::Bin(op, Box::new(lhs), Box::new(rhs), pos);
        }
        self.depth = outer;
        Ok(lhs)
    }

    /// One level deeper, refused past [`MAX_DEPTH`].
    fn deeper(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(format!(
                "the expression nests more than {MAX_DEPTH} levels deep (parentheses, calls, chained operators); name parts of it in [let]"
            )));
        }
        Ok(())
    }

    fn bor(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(&["|"], Self::band)
    }

    fn band(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(&["&"], Self::arith)
    }

    fn arith(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(&["+", "-"], Self::term)
    }

    fn term(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(&["*", "/", "//", "%", "@"], Self::unary)
    }

    fn unary(&mut self) -> Result<Ast, SyntaxError> {
        self.deeper()?;
        let ast = self.unary_inner();
        self.depth -= 1;
        ast
    }

    fn unary_inner(&mut self) -> Result<Ast, SyntaxError> {
        let pos = self.pos();
        match self.peek() {
            Tok::Op("-") => {
                self.next();
                Ok(Ast::Unary(UnOp::Neg, Box::new(self.unary()?), pos))
            }
            Tok::Op("~") => {
                self.next();
                Ok(Ast::Unary(UnOp::Not, Box::new(self.unary()?), pos))
            }
            Tok::Op("+") => {
                self.next();
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Ast, SyntaxError> {
        let base = self.postfix()?;
        if self.peek() == &Tok::Op("**") {
            let pos = self.pos();
            self.next();
            let exp = self.unary()?;
            return Ok(Ast::Bin(BinOp::Pow, Box::new(base), Box::new(exp), pos));
        }
        Ok(base)
    }

    /// An atom followed by indexing `[...]`, `.T` and method calls `.name(args)`.
    fn postfix(&mut self) -> Result<Ast, SyntaxError> {
        let mut e = self.atom()?;
        loop {
            match self.peek() {
                Tok::LBracket => {
                    let pos = self.pos();
                    self.next();
                    if matches!(self.peek(), Tok::Name(n) if n != "None") {
                        // An array index (`clim[groups(t2m, "month")]`): numpy's integer-array
                        // indexing along the first axis, i.e. take(base, index, axis=0).
                        let ipos = self.pos();
                        let index = self.expr()?;
                        self.expect(Tok::RBracket, "']' (an array index is the only item)")?;
                        e = Ast::Call {
                            func: "take".into(),
                            pos: ipos,
                            args: vec![e, index],
                            axis: Some((AxisArg::Axes(vec![0]), ipos)),
                            kwargs: vec![],
                        };
                        continue;
                    }
                    let items = self.index_items()?;
                    e = Ast::Index {
                        base: Box::new(e),
                        items,
                        pos,
                    };
                }
                Tok::Dot => {
                    self.next();
                    let (tok, npos) = self.next();
                    let Tok::Name(name) = tok else {
                        return Err(SyntaxError {
                            expr: self.src.to_string(),
                            column: npos,
                            message: format!("expected an attribute name after '.' but found {}", tok.describe()),
                        });
                    };
                    e = if self.peek() == &Tok::LParen {
                        self.next();
                        let Ast::Call {
                            func,
                            pos,
                            mut args,
                            axis,
                            kwargs,
                        } = self.call(name, npos)?
                        else {
                            unreachable!("call() makes calls")
                        };
                        args.insert(0, e);
                        Ast::Call {
                            func,
                            pos,
                            args,
                            axis,
                            kwargs,
                        }
                    } else if name == "T" {
                        Ast::Call {
                            func: "transpose".into(),
                            pos: npos,
                            args: vec![e],
                            axis: None,
                            kwargs: vec![],
                        }
                    } else {
                        return Err(SyntaxError {
                            expr: self.src.to_string(),
                            column: npos,
                            message: format!(
                                "unknown attribute '.{name}' (arrays have .T; methods are called with parentheses, e.g. x.mean(axis=0))"
                            ),
                        });
                    };
                }
                _ => return Ok(e),
            }
        }
    }

    /// The items of `[...]` up to and including `]`.
    fn index_items(&mut self) -> Result<Vec<(Item, usize)>, SyntaxError> {
        let mut items = Vec::new();
        loop {
            let pos = self.pos();
            let item = match self.peek() {
                Tok::Ellipsis => {
                    self.next();
                    Item::Ellipsis
                }
                Tok::Name(n) if n == "None" => {
                    self.next();
                    Item::NewAxis
                }
                _ => {
                    let start = self.opt_int()?;
                    if self.peek() == &Tok::Colon {
                        self.next();
                        let stop = self.opt_int()?;
                        let step = if self.peek() == &Tok::Colon {
                            self.next();
                            self.opt_int()?
                        } else {
                            None
                        };
                        Item::Slice(start, stop, step)
                    } else if let Some(i) = start {
                        Item::Int(i)
                    } else {
                        return Err(self.error_here(format!(
                            "expected an integer, a slice (a:b:c), '...' or None in the index but found {}",
                            self.peek().describe()
                        )));
                    }
                }
            };
            items.push((item, pos));
            match self.peek() {
                Tok::Comma => {
                    self.next();
                    if self.peek() == &Tok::RBracket {
                        self.next();
                        return Ok(items);
                    }
                }
                Tok::RBracket => {
                    self.next();
                    return Ok(items);
                }
                other => {
                    return Err(self.error_here(format!(
                        "expected ',' or ']' in the index but found {} (indices are integer constants, slices a:b:c, '...' or None)",
                        other.describe()
                    )));
                }
            }
        }
    }

    /// An optional integer constant (with an optional minus) in an index.
    fn opt_int(&mut self) -> Result<Option<i64>, SyntaxError> {
        match self.peek() {
            Tok::Int(_) | Tok::Op("-") => self.int().map(Some),
            Tok::Colon | Tok::Comma | Tok::RBracket => Ok(None),
            other => Err(self.error_here(format!(
                "expected an integer constant in the index but found {} (indices are integer constants, slices a:b:c, '...' or None)",
                other.describe()
            ))),
        }
    }

    fn atom(&mut self) -> Result<Ast, SyntaxError> {
        let (tok, pos) = self.next();
        match tok {
            Tok::Num(v) => Ok(Ast::Num(v)),
            Tok::Int(v) => Ok(Ast::Int(v)),
            Tok::Str(s) => Ok(Ast::Str(s, pos)),
            Tok::Name(name) => {
                if self.peek() == &Tok::LParen {
                    self.next();
                    self.call(name, pos)
                } else {
                    Ok(Ast::Name { name, pos })
                }
            }
            Tok::LParen => {
                let e = self.expr()?;
                self.expect(Tok::RParen, "')'")?;
                Ok(e)
            }
            other => {
                self.i -= usize::from(other != Tok::End);
                Err(SyntaxError {
                    expr: self.src.to_string(),
                    column: pos,
                    message: format!("expected a number, a name or '(' but found {}", other.describe()),
                })
            }
        }
    }

    fn call(&mut self, func: String, pos: usize) -> Result<Ast, SyntaxError> {
        let mut args = Vec::new();
        let mut axis = None;
        let mut kwargs: Vec<(String, AxisArg, usize)> = Vec::new();
        let mut more = self.peek() != &Tok::RParen;
        while more {
            let is_kw = matches!(self.peek(), Tok::Name(_)) && self.toks.get(self.i + 1).is_some_and(|t| t.0 == Tok::Eq);
            if is_kw {
                let (Tok::Name(kw), kpos) = self.next() else { unreachable!() };
                if kw == "axis" && axis.is_some() || kwargs.iter().any(|k| k.0 == kw) {
                    return Err(SyntaxError {
                        expr: self.src.to_string(),
                        column: kpos,
                        message: format!("'{kw}' given twice"),
                    });
                }
                self.next(); // '='
                let apos = self.pos();
                let value = match self.peek().clone() {
                    _ if kw == "weights" => AxisArg::Expr(Box::new(self.expr()?)),
                    // q=0.9 is a number (no result axis), q=(0.1, 0.9) a tuple.
                    Tok::LParen | Tok::LBracket if kw == "q" => self.axis_value()?,
                    _ if kw == "q" => AxisArg::Expr(Box::new(self.expr()?)),
                    Tok::Str(s) => {
                        self.next();
                        AxisArg::Str(s)
                    }
                    _ => self.axis_value()?,
                };
                if kw == "axis" {
                    axis = Some((value, apos));
                } else {
                    kwargs.push((kw, value, kpos));
                }
            } else {
                if axis.is_some() || !kwargs.is_empty() {
                    return Err(self.error_here("positional argument after a keyword argument".into()));
                }
                let tuple_kw = match func.as_str() {
                    "reshape" => Some("shape"),
                    "transpose" => Some("axes"),
                    "quantile" | "nanquantile" | "percentile" | "nanpercentile" => Some("q"),
                    _ => None,
                };
                if let Some(name) = tuple_kw
                    && args.len() == 1
                    && matches!(self.peek(), Tok::LParen | Tok::LBracket)
                {
                    // A tuple as numpy writes it: reshape(x, (3, 4)), transpose(x, (1, 0)).
                    let spos = self.pos();
                    kwargs.push((name.into(), self.axis_value()?, spos));
                } else {
                    args.push(self.expr()?);
                }
            }
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => more = false,
                other => return Err(self.error_here(format!("expected ',' or ')' but found {}", other.describe()))),
            }
        }
        self.next(); // ')'
        Ok(Ast::Call {
            func,
            pos,
            args,
            axis,
            kwargs,
        })
    }

    /// A number constant with an optional minus, and whether it was written as an
    /// integer.
    fn number(&mut self) -> Result<(f64, bool), SyntaxError> {
        let neg = if self.peek() == &Tok::Op("-") {
            self.next();
            -1.0
        } else {
            1.0
        };
        match self.peek().clone() {
            Tok::Int(v) => {
                self.next();
                Ok((neg * v as f64, true))
            }
            Tok::Num(v) => {
                self.next();
                Ok((neg * v, false))
            }
            other => Err(self.error_here(format!("expected a number but found {}", other.describe()))),
        }
    }

    fn int(&mut self) -> Result<i64, SyntaxError> {
        let neg = if self.peek() == &Tok::Op("-") {
            self.next();
            true
        } else {
            false
        };
        match self.peek().clone() {
            Tok::Int(v) => {
                self.next();
                Ok(if neg { -v } else { v })
            }
            other => Err(self.error_here(format!("expected an integer but found {}", other.describe()))),
        }
    }

    fn axis_value(&mut self) -> Result<AxisArg, SyntaxError> {
        match self.peek() {
            Tok::Name(n) if n == "None" => {
                self.next();
                Ok(AxisArg::All)
            }
            Tok::Name(n) if n == "True" || n == "False" => {
                let flag = n == "True";
                self.next();
                Ok(AxisArg::Flag(flag))
            }
            Tok::LParen | Tok::LBracket if matches!(self.toks.get(self.i + 1).map(|t| &t.0), Some(Tok::LParen | Tok::LBracket)) => {
                // A tuple of integer tuples: tensordot's axes=((1, 0), (0, 1)).
                let close = if self.peek() == &Tok::LParen { Tok::RParen } else { Tok::RBracket };
                self.next();
                let mut lists = Vec::new();
                loop {
                    match self.axis_value()? {
                        AxisArg::Axes(v) => lists.push(v),
                        _ => return Err(self.error_here("expected a tuple of integers inside the tuple".into())),
                    }
                    match self.peek() {
                        Tok::Comma => {
                            self.next();
                            if *self.peek() == close {
                                self.next();
                                break;
                            }
                        }
                        t if *t == close => {
                            self.next();
                            break;
                        }
                        other => {
                            return Err(self.error_here(format!(
                                "expected ',' or {} in the tuple but found {}",
                                close.describe(),
                                other.describe()
                            )));
                        }
                    }
                }
                Ok(AxisArg::Lists(lists))
            }
            Tok::LParen | Tok::LBracket => {
                let close = if self.peek() == &Tok::LParen { Tok::RParen } else { Tok::RBracket };
                self.next();
                let mut nums: Vec<(f64, bool)> = Vec::new();
                loop {
                    if *self.peek() == close {
                        self.next();
                        break;
                    }
                    nums.push(self.number()?);
                    match self.peek() {
                        Tok::Comma => {
                            self.next();
                        }
                        t if *t == close => {
                            self.next();
                            break;
                        }
                        other => {
                            return Err(self.error_here(format!(
                                "expected ',' or {} in the tuple but found {}",
                                close.describe(),
                                other.describe()
                            )));
                        }
                    }
                }
                Ok(if nums.iter().all(|n| n.1) {
                    AxisArg::Axes(nums.iter().map(|n| n.0 as i64).collect())
                } else {
                    AxisArg::Nums(nums.iter().map(|n| n.0).collect())
                })
            }
            _ => {
                let (v, int) = self.number()?;
                Ok(if int {
                    AxisArg::Axes(vec![v as i64])
                } else {
                    AxisArg::Nums(vec![v])
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
