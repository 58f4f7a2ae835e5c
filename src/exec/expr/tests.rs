use super::*;

/// The tree as a string with every operator parenthesized, to check grouping.
fn show(a: &Ast) -> String {
    match a {
        Ast::Num(v) => format!("{v:?}"),
        Ast::Int(v) => v.to_string(),
        Ast::Str(s, _) => format!("{s:?}"),
        Ast::Name { name, .. } => name.clone(),
        Ast::Unary(op, x, _) => format!("({}{})", op.symbol(), show(x)),
        Ast::Bin(op, l, r, _) => format!("({} {} {})", show(l), op.symbol(), show(r)),
        Ast::Call { func, args, .. } => format!("{func}({})", args.iter().map(show).collect::<Vec<_>>().join(", ")),
        Ast::Index { base, items, .. } => {
            let item = |i: &Item| match i {
                Item::Int(v) => v.to_string(),
                Item::Slice(a, b, c) => {
                    let o = |v: &Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
                    format!("{}:{}:{}", o(a), o(b), o(c))
                }
                Item::Ellipsis => "...".into(),
                Item::NewAxis => "None".into(),
            };
            format!(
                "{}[{}]",
                show(base),
                items.iter().map(|(i, _)| item(i)).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

#[test]
fn precedence_and_associativity_follow_python() {
    for (src, want) in [
        // -x**2 == -(x**2); 2**3**2 == 2**(3**2); 2**-1 binds the minus
        ("-x**2", "(-(x ** 2))"),
        ("2**3**2", "(2 ** (3 ** 2))"),
        ("2**-x", "(2 ** (-x))"),
        ("a - b - c", "((a - b) - c)"),
        ("1 + 2 * 3", "(1 + (2 * 3))"),
        ("a // b % c * d", "(((a // b) % c) * d)"),
        ("a @ b * c + d", "(((a @ b) * c) + d)"),
        ("-a @ b", "((-a) @ b)"),
        ("einsum('ij,jk', a, \"x\")", "einsum(\"ij,jk\", a, \"x\")"),
        // Python binds & tighter than |, and both looser than arithmetic and
        // tighter than comparisons: t > 280 & u is t > (280 & u), as in numpy.
        ("a | b & c", "(a | (b & c))"),
        ("t > 280 & u", "(t > (280 & u))"),
        ("(t > 280) & (t < 300)", "((t > 280) & (t < 300))"),
        ("~m | n", "((~m) | n)"),
        ("~-x", "(~(-x))"),
        ("a + b <= c * 2", "((a + b) <= (c * 2))"),
        ("x != 1.0", "(x != 1.0)"),
        ("a == b", "(a == b)"),
    ] {
        assert_eq!(show(&parse(src).unwrap()), want, "{src}");
    }
}

#[test]
fn indexing_methods_and_attributes() {
    for (src, want) in [
        ("x[0]", "x[0]"),
        ("x[-1, 2:]", "x[-1, 2::]"),
        ("x[::-1, :-2, 1:9:3]", "x[::-1, :-2:, 1:9:3]"),
        ("lat[:, None]", "lat[::, None]"),
        ("x[..., 0,]", "x[..., 0]"),
        ("x[1:] - x[:-1]", "(x[1::] - x[:-1:])"),
        ("-x[0]**2", "(-(x[0] ** 2))"),
        ("(a + b)[2][0:1]", "(a + b)[2][0:1:]"),
        ("x.T", "transpose(x)"),
        ("x.T[0]", "transpose(x)[0]"),
        ("x.mean(axis=0)", "mean(x)"),
        ("(x - 1).sum()", "sum((x - 1))"),
        ("transpose(x, axes=(1, 0))", "transpose(x)"),
    ] {
        assert_eq!(show(&parse(src).unwrap()), want, "{src}");
    }
    let Ast::Index { items, pos, .. } = parse("x[1, ::2]").unwrap() else {
        panic!()
    };
    assert_eq!(pos, 2);
    assert_eq!(items[1], (Item::Slice(None, None, Some(2)), 6));
    let Ast::Call { kwargs, .. } = parse("transpose(x, axes=(2, 0, 1))").unwrap() else {
        panic!()
    };
    assert_eq!(kwargs, vec![("axes".to_string(), AxisArg::Axes(vec![2, 0, 1]), 14)]);
    // reshape's shape as a positional tuple (numpy's spelling), kept as shape=.
    for (src, col) in [("reshape(x, (3, -1))", 12), ("reshape(x, [3, 4])", 12)] {
        let Ast::Call { args, kwargs, .. } = parse(src).unwrap() else {
            panic!()
        };
        assert_eq!(args.len(), 1, "{src}");
        assert_eq!(kwargs[0].0, "shape", "{src}");
        assert_eq!(kwargs[0].2, col, "{src}");
    }
    let Ast::Call { func, args, .. } = parse("x.reshape(3, 4)").unwrap() else {
        panic!()
    };
    assert_eq!((func.as_str(), args.len()), ("reshape", 3));
    let e = parse("reshape(x, (3, 4.5, )").unwrap_err();
    assert_eq!(e.column, 22, "{e}");
}

#[test]
fn operator_positions() {
    let Ast::Bin(BinOp::Ge, _, _, pos) = parse("x >= 2").unwrap() else {
        panic!()
    };
    assert_eq!(pos, 3);
    let Ast::Bin(BinOp::And, _, r, 3) = parse("a & ~b").unwrap() else {
        panic!()
    };
    assert!(matches!(*r, Ast::Unary(UnOp::Not, _, 5)));
}

#[test]
fn comparison_and_operator_errors() {
    let e = parse("a < b < c").unwrap_err();
    assert_eq!(e.column, 7);
    assert!(e.message.contains("chained"), "{e}");
    let e = parse("!x").unwrap_err();
    assert_eq!(e.column, 1);
    assert!(e.message.contains("~"), "{e}");
    assert_eq!(parse("x = 1").unwrap_err().column, 3);
    assert_eq!(parse("x <").unwrap_err().column, 4);
    assert_eq!(parse("x & & y").unwrap_err().column, 5);
}

#[test]
fn calls_with_axis_forms() {
    let e = parse("mean(x, axis=(0, -1))").unwrap();
    let Ast::Call { func, args, axis, .. } = e else { panic!() };
    assert_eq!(func, "mean");
    assert_eq!(args.len(), 1);
    assert_eq!(axis.unwrap().0, AxisArg::Axes(vec![0, -1]));
    let Ast::Call { axis, .. } = parse("sum(x, axis=None)").unwrap() else {
        panic!()
    };
    assert_eq!(axis.unwrap().0, AxisArg::All);
    let Ast::Call { axis, .. } = parse("sum(x, axis=-2)").unwrap() else {
        panic!()
    };
    assert_eq!(axis.unwrap().0, AxisArg::Axes(vec![-2]));
    let Ast::Call { axis, .. } = parse("sum(x)").unwrap() else {
        panic!()
    };
    assert!(axis.is_none());
}

#[test]
fn numbers() {
    assert_eq!(parse("2").unwrap(), Ast::Int(2));
    assert_eq!(parse("1_000").unwrap(), Ast::Int(1000));
    assert_eq!(parse("2.").unwrap(), Ast::Num(2.0));
    assert_eq!(parse("1.5e3").unwrap(), Ast::Num(1500.0));
    assert_eq!(parse(".5").unwrap(), Ast::Num(0.5));
    assert_eq!(parse("2E-2").unwrap(), Ast::Num(0.02));
}

#[test]
fn errors_carry_columns() {
    let e = parse("x + * 2").unwrap_err();
    assert_eq!(e.column, 5);
    assert!(e.to_string().contains("\"x + * 2\" at column 5"), "{e}");
    assert_eq!(parse("(x + 1").unwrap_err().column, 7);
    assert_eq!(parse("x $ 1").unwrap_err().column, 3);
    assert_eq!(parse("x 1").unwrap_err().column, 3);
    assert_eq!(parse("").unwrap_err().column, 1);
    assert_eq!(parse("mean(x, axis=a)").unwrap_err().column, 14);
    assert_eq!(parse("mean(x, axis=1, axis=2)").unwrap_err().column, 17);
    assert_eq!(parse("x[1.5]").unwrap_err().column, 3);
    // an array index parses (as take along axis 0); the resolver says what it takes
    assert_eq!(show(&parse("x[a]").unwrap()), "take(x, a)");
    assert_eq!(parse("x[a, 1]").unwrap_err().column, 4);
    assert_eq!(parse("x[1 2]").unwrap_err().column, 5);
    assert_eq!(parse("x.foo").unwrap_err().column, 3);
    assert_eq!(parse("x.").unwrap_err().column, 3);
}

#[test]
fn trees_deeper_than_the_limit_are_refused_not_a_stack_overflow() {
    // Found by fuzzing: a few hundred nested parentheses overflowed the stack.
    let ok = format!("{}x{}", "(".repeat(150), ")".repeat(150));
    assert!(parse(&ok).is_ok());
    for deep in [
        format!("{}x{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("{}x", "-".repeat(100_000)),
        format!("x{}", " + x".repeat(100_000)),
        format!("x{}", " ** x".repeat(100_000)),
        format!("{}x{}", "sqrt(".repeat(100_000), ")".repeat(100_000)),
    ] {
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains(&format!("more than {MAX_DEPTH} levels")), "{}", e.message);
    }
    // Chains within the limit at every level are fine.
    let wide = format!("x{}", " + x * x".repeat(150));
    assert!(parse(&wide).is_ok());
}
