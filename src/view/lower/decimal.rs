//! Exact decimal arithmetic in each dialect, as the views compute it: FHIRPath decimals are
//! exact, and a view's decimal is a DECIMAL(38,18).
//!
//! `+`, `-` and `mod` are exact in every engine once both sides are DECIMALs of a width the
//! engine adds without dropping a digit. A product or a quotient is the exact value rounded
//! to 18 places, half away from zero (what `fhir2parquet view` gives):
//!
//! - a product is four partial products of the integer and fraction parts, each exact in
//!   DuckDB, Spark and Trino (whose plain `DECIMAL(38,18) * DECIMAL(38,18)` overflows or keeps
//!   6 places), only the last, below 10⁻¹⁸, rounded by a cast; BigQuery multiplies BIGNUMERICs;
//! - a quotient is long division of the values as integers of 10⁻¹⁸ (DuckDB's decimal `/`
//!   goes through DOUBLE, Spark's keeps 6 places): 19 digits past the point, the last rounding
//!   the 18th; Trino's and Snowflake's decimal `/` rounds exactly, BigQuery's BIGNUMERIC keeps
//!   38 places;
//! - `div` is the integer part of that division.
//!
//! Values of 10¹⁹ and more (integer part) make the engine fail with an overflow rather than
//! give another answer.

use arrow::datatypes::DataType;

use super::dialect::Dialect::{self, Bigquery, Duckdb, Snowflake, Spark, Trino};

/// 10¹⁸, the scale of a view's decimal.
const UNIT: &str = "1000000000000000000";

impl Dialect {
    /// `DECIMAL(p,s)` as this dialect spells it.
    fn dec(self, p: u8, s: u8) -> String {
        match self {
            Snowflake => format!("NUMBER({p},{s})"),
            Bigquery => "BIGNUMERIC".into(),
            _ => format!("DECIMAL({p},{s})"),
        }
    }

    /// `x` truncated toward zero (Spark's `trunc` is of dates).
    fn trunc(self, x: &str) -> String {
        match self {
            Spark => format!("(CASE WHEN {x} < 0 THEN ceil({x}) ELSE floor({x}) END)"),
            Trino => format!("truncate({x})"),
            _ => format!("trunc({x})"),
        }
    }

    /// The integer part of a DECIMAL(38,18) value, as a DECIMAL(19,0).
    fn int(self, x: &str) -> String {
        self.as_dec(&self.trunc(x), 19, 0)
    }

    /// The fraction part of a DECIMAL(38,18) value, as a DECIMAL(18,18) (of widths Spark
    /// subtracts without dropping a place).
    fn frac(self, x: &str) -> String {
        let e = format!("({} - {})", self.as_dec(x, 37, 18), self.int(x));
        self.as_dec(&e, 18, 18)
    }

    fn as_dec(self, e: &str, p: u8, s: u8) -> String {
        format!("CAST({e} AS {})", self.dec(p, s))
    }

    /// `a + b` or `a - b` (`minus`) of two DECIMAL(38,18) values, exact.
    pub fn decimal_add(self, a: &str, b: &str, minus: bool) -> String {
        let op = if minus { "-" } else { "+" };
        match self {
            // Spark widens DECIMAL(38,18) + DECIMAL(38,18) to 39 digits and drops one place.
            Spark => format!(
                "({} {op} {})",
                self.as_dec(a, 37, 18),
                self.as_dec(b, 37, 18)
            ),
            _ => format!("({a} {op} {b})"),
        }
    }

    /// `a * b` of two DECIMAL(38,18) values, rounded to 18 places half away from zero.
    pub fn decimal_mul(self, a: &str, b: &str) -> String {
        if self == Bigquery {
            return format!(
                "ROUND(CAST({a} AS BIGNUMERIC) * CAST({b} AS BIGNUMERIC), 18, 'ROUND_HALF_AWAY_FROM_ZERO')"
            );
        }
        let (ai, af, bi, bf) = (self.int(a), self.frac(a), self.int(b), self.frac(b));
        let term = |e: String| self.as_dec(&e, 37, 18);
        format!(
            "({} + {})",
            term(format!(
                "({} + {})",
                term(format!("{ai} * {bi}")),
                term(format!("{ai} * {bf}"))
            )),
            term(format!(
                "({} + {})",
                term(format!("{af} * {bi}")),
                term(format!("{af} * {bf}"))
            )),
        )
    }

    /// `a / b` of two DECIMAL(38,18) values, rounded to 18 places half away from zero; NULL
    /// when `b` is 0.
    pub fn decimal_div(self, a: &str, b: &str, var: &str) -> String {
        match self {
            Trino | Snowflake => format!("({a} / nullif({b}, 0))"),
            Bigquery => format!(
                "ROUND(SAFE_DIVIDE(CAST({a} AS BIGNUMERIC), CAST({b} AS BIGNUMERIC)), 18, 'ROUND_HALF_AWAY_FROM_ZERO')"
            ),
            Duckdb | Spark => self.long_division(a, b, var, false),
        }
    }

    /// `a div b` of two DECIMAL(38,18) values: the integer part of the quotient, as a
    /// DECIMAL(38,18); NULL when `b` is 0.
    pub fn decimal_int_div(self, a: &str, b: &str, var: &str) -> String {
        match self {
            // `a - a mod b` is a multiple of b: its quotient is exact.
            Trino | Snowflake => format!("(({a} - mod({a}, nullif({b}, 0))) / nullif({b}, 0))"),
            Bigquery => format!("CAST(DIV(CAST({a} AS BIGNUMERIC), NULLIF(CAST({b} AS BIGNUMERIC), 0)) AS BIGNUMERIC)"),
            Duckdb | Spark => self.long_division(a, b, var, true),
        }
    }

    /// A wide integer type: DuckDB's HUGEINT, Spark's DECIMAL(38,0).
    fn wide(self) -> String {
        match self {
            Duckdb => "HUGEINT".into(),
            _ => self.dec(38, 0),
        }
    }

    /// `|x|` as an integer of 10⁻¹⁸ (exact: the integer and the fraction parts apart).
    fn scaled(self, x: &str) -> String {
        let w = self.wide();
        let unit = format!("CAST({UNIT} AS {w})");
        let abs = format!("abs({x})");
        let int = format!("CAST({} AS {w})", self.trunc(&abs));
        let frac = format!(
            "CAST({} * CAST({UNIT} AS {}) AS {w})",
            self.frac(&abs),
            self.dec(19, 0)
        );
        format!("({int} * {unit} + {frac})")
    }

    /// Long division of `a` by `b` (DECIMAL(38,18) values) in integers of 10⁻¹⁸: the integer
    /// part, then 19 digits of the fraction, the last rounding the 18th. `whole`: the integer
    /// part only. `var` names the lambdas' parameters.
    fn long_division(self, a: &str, b: &str, var: &str, whole: bool) -> String {
        let w = self.wide();
        let (na, nb) = (format!("{var}.na"), format!("{var}.nb"));
        let idiv = |x: &str, y: &str| match self {
            Duckdb => format!("(({x}) // ({y}))"),
            _ => format!("CAST(({x}) div ({y}) AS {w})"),
        };
        let neg = format!("(({a} < 0) <> ({b} < 0))");
        let signed = |e: String| format!("(CASE WHEN {neg} THEN -({e}) ELSE {e} END)");
        let q = idiv(&na, &nb);
        let body = if whole {
            signed(self.as_dec(&q, 38, 18))
        } else {
            let s = format!("{var}_s");
            // The state: the fraction's digits so far and the remainder.
            let state = |f: String, r: String| {
                self.struct_of(
                    &[
                        ("f".into(), format!("CAST({f} AS {w})")),
                        ("r".into(), format!("CAST({r} AS {w})")),
                    ],
                    &DataType::Null,
                )
            };
            let step = |f: &str, r: &str| {
                state(
                    format!("{f} * 10 + {}", idiv(&format!("{r} * 10"), &nb)),
                    format!("({r} * 10) % {nb}"),
                )
            };
            let start = state("0".into(), format!("{na} % {nb}"));
            let fraction = match self {
                // list_reduce starts from the list's first item: the start, then 19 steps.
                Duckdb => format!(
                    "list_reduce(list_concat([{start}], list_transform(range(19), lambda {s}_i: {start})), \
                     lambda {s}, {s}_x: {})['f']",
                    step(&format!("{s}.f"), &format!("{s}.r"))
                ),
                _ => format!(
                    "aggregate(sequence(1, 19), {start}, ({s}, {s}_i) -> {}).f",
                    step(&format!("{s}.f"), &format!("{s}.r"))
                ),
            };
            // Integer part and 18 rounded places, in integers of 10⁻¹⁸, then as a decimal.
            let total = format!(
                "CAST({q} * CAST({UNIT} AS {w}) + {} AS {w})",
                idiv(&format!("{fraction} + 5"), "10")
            );
            let int = self.as_dec(&idiv(&total, &format!("CAST({UNIT} AS {w})")), 19, 0);
            let frac = self.as_dec(
                &format!(
                    "{} * CAST(0.000000000000000001 AS {})",
                    self.as_dec(&format!("({total} % CAST({UNIT} AS {w}))"), 18, 0),
                    self.dec(18, 18)
                ),
                18,
                18,
            );
            signed(self.as_dec(&format!("({int} + {frac})"), 38, 18))
        };
        // The two integers, computed once: the fields of a one-item list's item.
        let pair = self.struct_of(
            &[
                ("na".into(), self.scaled(a)),
                ("nb".into(), format!("nullif({}, 0)", self.scaled(b))),
            ],
            &DataType::Null,
        );
        let one = self.transform(&self.list_of(&pair), var, &DataType::Null, &body);
        self.at(&one, "1", &DataType::Null)
    }
}

impl Dialect {
    /// The places of a DECIMAL(38,18) value past its point, trailing zeros not counted.
    fn places(self, x: &str) -> String {
        let text = self.decimal_text(x);
        let fraction = match self {
            Bigquery => format!("SPLIT({text}, '.')[SAFE_OFFSET(1)]"),
            _ => format!("split_part({text}, '.', 2)"),
        };
        match self {
            Spark => format!("length(TRIM(TRAILING '0' FROM {fraction}))"),
            _ => format!("length(rtrim({fraction}, '0'))"),
        }
    }

    /// `a ~ b` of two DECIMAL(38,18) values (neither NULL): equal once both are rounded to the
    /// places of the less precise, trailing zeros not counted, as FHIRPath says.
    pub fn decimals_equivalent(self, a: &str, b: &str) -> String {
        let p = format!("least({}, {})", self.places(a), self.places(b));
        let arms: Vec<String> = (0..=18)
            .map(|k| format!("WHEN {k} THEN round({a}, {k}) = round({b}, {k})"))
            .collect();
        format!("(CASE {p} {} END)", arms.join(" "))
    }
}
