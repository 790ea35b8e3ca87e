//! The query language both backends share, as pure functions: Typesense's tokenising, the
//! `filter_by` grammar, `sort_by` and `query_by` lists. Everything here is checked against the
//! collection's fields before a backend sees it, so a malformed or ill-typed expression gets the
//! same 400 (naming the problem and its position) whichever backend serves the collection.
//!
//! `filter_by` grammar (Typesense 0.24):
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := primary ( "&&" primary )*
//! primary := "(" expr ")" | clause
//! clause  := field ":" [ "=" | "!=" | ">" | ">=" | "<" | "<=" ] value
//! value   := "[" item ( "," item )* "]" | scalar
//! item    := scalar | integer ".." integer
//! scalar  := "`" any text but "`" "`" | text up to "&&", "||", ")" (or "," / "]" in a list)
//! ```

use std::fmt;

/// The type of a collection field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Str,
    Int32,
}

/// A field of the collection: its name, its type and whether `facet_by` may name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: FieldType,
    pub facet: bool,
}

/// The seed's `elements` collection (the implicit `id` aside).
pub const FIELDS: &[FieldDef] = &[
    FieldDef { name: "element_type", kind: FieldType::Str, facet: true },
    FieldDef { name: "element_id", kind: FieldType::Int32, facet: false },
    FieldDef { name: "sequence_number", kind: FieldType::Int32, facet: false },
    FieldDef { name: "version_number", kind: FieldType::Int32, facet: false },
    FieldDef { name: "comment", kind: FieldType::Str, facet: false },
    FieldDef { name: "service_name", kind: FieldType::Str, facet: true },
];

/// The field results are ordered by after text match, as the seed's schema declares.
pub const DEFAULT_SORTING_FIELD: &str = "sequence_number";

/// The pseudo-field of `sort_by` that orders by text relevance.
pub const TEXT_MATCH: &str = "_text_match";

/// At most this many `sort_by` fields, as Typesense.
pub const MAX_SORT_FIELDS: usize = 3;

pub fn field(name: &str) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Typesense's tokenising: words are separated by whitespace, characters that are neither
/// letters nor digits are removed from inside a word (`half-lit` → `halflit`, `INT./EXT.` →
/// `intext`), and everything is lower case.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|word| {
            word.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect()
}

/// A problem in one of the expressions, with the character position (0-based) it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// Which parameter: `filter_by`, `sort_by`, `query_by` or `facet_by`.
    pub parameter: &'static str,
    pub position: usize,
    pub reason: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} at position {}", self.parameter, self.reason, self.position)
    }
}

impl std::error::Error for QueryError {}

// ---- filter_by ----

/// A comparison of one clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `f:v`: a string field contains the value's words; a number equals it.
    Matches,
    /// `f:=v`: a string field equals the value (ignoring case); a number equals it.
    Equals,
    NotEquals,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// One value of a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// Text as written (backticks removed), with its position.
    Text { text: String, position: usize },
    /// `a..b`, both ends included.
    Range { low: String, high: String, position: usize },
}

/// A parsed `filter_by` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Clause { field: String, field_position: usize, comparison: Comparison, values: Vec<Operand> },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// A filter clause checked against the collection: what a backend evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A string field: `words` contains every word of one of the values (`f:v`), or equals one of
    /// the values word for word (`f:=v`); `negated` for `!=`.
    Str {
        field: &'static str,
        exact: bool,
        negated: bool,
        values: Vec<Vec<String>>,
    },
    /// A number field: inside one of the inclusive ranges; `negated` for `!=`.
    Int {
        field: &'static str,
        negated: bool,
        ranges: Vec<(i64, i64)>,
    },
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

/// Parses a `filter_by` expression (syntax only; see [`check_filter`] for fields and types).
pub fn parse_filter(input: &str) -> Result<Filter, QueryError> {
    let mut parser = FilterParser { chars: input.chars().collect(), at: 0 };
    parser.skip_space();
    if parser.at == parser.chars.len() {
        return Err(parser.error("the expression is empty"));
    }
    let filter = parser.or_expression(0)?;
    parser.skip_space();
    if parser.at < parser.chars.len() {
        return Err(parser.error(format!("unexpected {:?}", parser.chars[parser.at])));
    }
    Ok(filter)
}

/// Parses and checks a `filter_by` expression against the collection's fields.
pub fn filter_condition(input: &str) -> Result<Condition, QueryError> {
    check_filter(&parse_filter(input)?)
}

/// Deeper nesting than this is refused (bounded recursion for any input).
const MAX_FILTER_DEPTH: usize = 32;

struct FilterParser {
    chars: Vec<char>,
    at: usize,
}

impl FilterParser {
    fn error(&self, reason: impl Into<String>) -> QueryError {
        QueryError { parameter: "filter_by", position: self.at, reason: reason.into() }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn peek_str(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(i, expected)| self.chars.get(self.at + i) == Some(&expected))
    }

    fn or_expression(&mut self, depth: usize) -> Result<Filter, QueryError> {
        let mut left = self.and_expression(depth)?;
        loop {
            self.skip_space();
            if !self.peek_str("||") {
                return Ok(left);
            }
            self.at += 2;
            let right = self.and_expression(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
    }

    fn and_expression(&mut self, depth: usize) -> Result<Filter, QueryError> {
        let mut left = self.primary(depth)?;
        loop {
            self.skip_space();
            if !self.peek_str("&&") {
                return Ok(left);
            }
            self.at += 2;
            let right = self.primary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Filter, QueryError> {
        self.skip_space();
        if self.chars.get(self.at) == Some(&'(') {
            if depth >= MAX_FILTER_DEPTH {
                return Err(self.error(format!("more than {MAX_FILTER_DEPTH} nested parentheses")));
            }
            self.at += 1;
            let inner = self.or_expression(depth + 1)?;
            self.skip_space();
            if self.chars.get(self.at) != Some(&')') {
                return Err(self.error("expected ')'"));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.clause()
    }

    fn clause(&mut self) -> Result<Filter, QueryError> {
        let field_position = self.at;
        let mut field = String::new();
        while let Some(&c) = self.chars.get(self.at) {
            if c.is_alphanumeric() || c == '_' || c == '.' {
                field.push(c);
                self.at += 1;
            } else {
                break;
            }
        }
        if field.is_empty() {
            return Err(self.error("expected a field name"));
        }
        self.skip_space();
        if self.chars.get(self.at) != Some(&':') {
            return Err(self.error(format!("expected ':' after the field name {field:?}")));
        }
        self.at += 1;
        self.skip_space();
        let comparison = self.comparison();
        self.skip_space();
        let values = self.value()?;
        Ok(Filter::Clause { field, field_position, comparison, values })
    }

    fn comparison(&mut self) -> Comparison {
        let table = [
            ("!=", Comparison::NotEquals),
            (">=", Comparison::GreaterOrEqual),
            ("<=", Comparison::LessOrEqual),
            ("=", Comparison::Equals),
            (">", Comparison::Greater),
            ("<", Comparison::Less),
        ];
        for (token, comparison) in table {
            if self.peek_str(token) {
                self.at += token.chars().count();
                return comparison;
            }
        }
        Comparison::Matches
    }

    fn value(&mut self) -> Result<Vec<Operand>, QueryError> {
        if self.chars.get(self.at) != Some(&'[') {
            let (text, position) = self.scalar(false)?;
            return Ok(vec![Operand::Text { text, position }]);
        }
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            let (text, position) = self.scalar(true)?;
            items.push(match text.split_once("..") {
                Some((low, high)) => {
                    Operand::Range { low: low.trim().to_string(), high: high.trim().to_string(), position }
                }
                None => Operand::Text { text, position },
            });
            self.skip_space();
            match self.chars.get(self.at) {
                Some(',') => self.at += 1,
                Some(']') => {
                    self.at += 1;
                    return Ok(items);
                }
                _ => return Err(self.error("expected ',' or ']' in the list")),
            }
        }
    }

    /// A value: backtick-quoted text, or bare text up to the next operator or delimiter.
    fn scalar(&mut self, in_list: bool) -> Result<(String, usize), QueryError> {
        let position = self.at;
        if self.chars.get(self.at) == Some(&'`') {
            self.at += 1;
            let start = self.at;
            while self.chars.get(self.at).is_some_and(|c| *c != '`') {
                self.at += 1;
            }
            if self.at == self.chars.len() {
                return Err(QueryError {
                    parameter: "filter_by",
                    position,
                    reason: "unterminated backtick".into(),
                });
            }
            let text: String = self.chars[start..self.at].iter().collect();
            self.at += 1;
            return Ok((text, position));
        }
        let start = self.at;
        while let Some(&c) = self.chars.get(self.at) {
            let ends = self.peek_str("&&")
                || self.peek_str("||")
                || c == ')'
                || c == '('
                || c == '['
                || (in_list && (c == ',' || c == ']'));
            if ends {
                break;
            }
            self.at += 1;
        }
        let text: String = self.chars[start..self.at].iter().collect::<String>().trim().to_string();
        if text.is_empty() {
            return Err(QueryError { parameter: "filter_by", position, reason: "expected a value".into() });
        }
        Ok((text, position))
    }
}

fn filter_error(position: usize, reason: impl Into<String>) -> QueryError {
    QueryError { parameter: "filter_by", position, reason: reason.into() }
}

/// Checks a parsed filter against the collection: known fields, values of the field's type,
/// comparisons the type supports.
pub fn check_filter(filter: &Filter) -> Result<Condition, QueryError> {
    match filter {
        Filter::And(a, b) => Ok(Condition::And(Box::new(check_filter(a)?), Box::new(check_filter(b)?))),
        Filter::Or(a, b) => Ok(Condition::Or(Box::new(check_filter(a)?), Box::new(check_filter(b)?))),
        Filter::Clause { field: name, field_position, comparison, values } => {
            let def = field(name)
                .ok_or_else(|| filter_error(*field_position, format!("unknown field {name:?}")))?;
            match def.kind {
                FieldType::Str => string_condition(def, *field_position, *comparison, values),
                FieldType::Int32 => int_condition(def, *comparison, values),
            }
        }
    }
}

fn string_condition(
    def: &'static FieldDef,
    field_position: usize,
    comparison: Comparison,
    values: &[Operand],
) -> Result<Condition, QueryError> {
    let (exact, negated) = match comparison {
        Comparison::Matches => (false, false),
        Comparison::Equals => (true, false),
        Comparison::NotEquals => (true, true),
        _ => {
            return Err(filter_error(
                field_position,
                format!("{:?} is a string field: only ':', ':=' and ':!=' apply", def.name),
            ))
        }
    };
    let mut words = Vec::with_capacity(values.len());
    for value in values {
        match value {
            Operand::Text { text, .. } => words.push(tokenize(text)),
            Operand::Range { position, .. } => {
                return Err(filter_error(
                    *position,
                    format!("{:?} is a string field: ranges do not apply", def.name),
                ))
            }
        }
    }
    Ok(Condition::Str { field: def.name, exact, negated, values: words })
}

fn parse_int(text: &str, position: usize, field: &str) -> Result<i64, QueryError> {
    text.trim()
        .parse::<i32>()
        .map(i64::from)
        .map_err(|_| filter_error(position, format!("{field:?} is an int32 field: expected a whole number")))
}

fn int_condition(
    def: &'static FieldDef,
    comparison: Comparison,
    values: &[Operand],
) -> Result<Condition, QueryError> {
    let mut ranges = Vec::with_capacity(values.len());
    for value in values {
        match value {
            Operand::Text { text, position } => {
                let n = parse_int(text, *position, def.name)?;
                let range = match comparison {
                    Comparison::Matches | Comparison::Equals | Comparison::NotEquals => (n, n),
                    Comparison::Greater => (n + 1, i64::MAX),
                    Comparison::GreaterOrEqual => (n, i64::MAX),
                    Comparison::Less => (i64::MIN, n - 1),
                    Comparison::LessOrEqual => (i64::MIN, n),
                };
                ranges.push(range);
            }
            Operand::Range { low, high, position } => {
                if !matches!(comparison, Comparison::Matches | Comparison::Equals | Comparison::NotEquals) {
                    return Err(filter_error(*position, "a range cannot be combined with a comparison"));
                }
                ranges.push((parse_int(low, *position, def.name)?, parse_int(high, *position, def.name)?));
            }
        }
    }
    Ok(Condition::Int { field: def.name, negated: comparison == Comparison::NotEquals, ranges })
}

/// Writes a checked filter in the dialect Typesense 0.24 accepts: every value in backticks,
/// every group in parentheses, and a number's `!=` (which 0.24 refuses) as `<n || >n`.
/// The operands of a run of `&&` (`and`) or `||` joined filters, in order.
fn chain(filter: &Filter, and: bool) -> Vec<&Filter> {
    match (filter, and) {
        (Filter::And(a, b), true) | (Filter::Or(a, b), false) => {
            let mut operands = chain(a, and);
            operands.extend(chain(b, and));
            operands
        }
        _ => vec![filter],
    }
}

pub fn typesense_filter(filter: &Filter) -> String {
    match filter {
        // A chain of one operator is one group: `a || b || c` stays one level deep, so a flat
        // filter never nests deeper in Typesense's dialect than it was written.
        Filter::And(..) => format!(
            "({})",
            chain(filter, true).into_iter().map(typesense_filter).collect::<Vec<_>>().join(" && ")
        ),
        Filter::Or(..) => format!(
            "({})",
            chain(filter, false).into_iter().map(typesense_filter).collect::<Vec<_>>().join(" || ")
        ),
        Filter::Clause { field: name, comparison, values, .. } => {
            let is_number = field(name).is_some_and(|f| f.kind == FieldType::Int32);
            let text = |operand: &Operand| match operand {
                Operand::Text { text, .. } if is_number => text.trim().to_string(),
                Operand::Text { text, .. } => format!("`{}`", text.replace('`', "")),
                Operand::Range { low, high, .. } => format!("{}..{}", low.trim(), high.trim()),
            };
            if is_number && *comparison == Comparison::NotEquals {
                let excluded: Vec<String> = values
                    .iter()
                    .map(|v| match v {
                        Operand::Range { low, high, .. } => {
                            format!("({name}:<{} || {name}:>{})", low.trim(), high.trim())
                        }
                        Operand::Text { text, .. } => {
                            format!("({name}:<{t} || {name}:>{t})", t = text.trim())
                        }
                    })
                    .collect();
                return format!("({})", excluded.join(" && "));
            }
            let operator = match comparison {
                Comparison::Matches => "",
                Comparison::Equals => "=",
                Comparison::NotEquals => "!=",
                Comparison::Greater => ">",
                Comparison::GreaterOrEqual => ">=",
                Comparison::Less => "<",
                Comparison::LessOrEqual => "<=",
            };
            let list: Vec<String> = values.iter().map(text).collect();
            if operator.starts_with(['<', '>']) {
                let each: Vec<String> = list.iter().map(|v| format!("{name}:{operator}{v}")).collect();
                return if each.len() == 1 { each[0].clone() } else { format!("({})", each.join(" || ")) };
            }
            format!("{name}:{operator}[{}]", list.join(","))
        }
    }
}

// ---- sort_by, query_by, facet_by ----

/// One `sort_by` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// A number field, or [`TEXT_MATCH`].
    pub field: &'static str,
    pub descending: bool,
}

/// A comma-separated list with the character position of each trimmed item.
fn items(input: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for part in input.split(',') {
        let leading = part.len() - part.trim_start().len();
        let position = input[..offset + leading].chars().count();
        out.push((position, part.trim()));
        offset += part.len() + 1;
    }
    out
}

/// Parses `sort_by`: up to three `field:asc|desc`, number fields or `_text_match`. Empty: the
/// default order (text match, then `sequence_number`, both descending).
pub fn parse_sort(input: &str) -> Result<Vec<SortKey>, QueryError> {
    let error = |position, reason: String| QueryError { parameter: "sort_by", position, reason };
    if input.trim().is_empty() {
        return Ok(default_sort());
    }
    let list = items(input);
    if list.len() > MAX_SORT_FIELDS {
        return Err(error(list[MAX_SORT_FIELDS].0, format!("at most {MAX_SORT_FIELDS} sort fields")));
    }
    let mut keys: Vec<SortKey> = Vec::with_capacity(list.len());
    for (position, item) in list {
        let (name, direction) =
            item.split_once(':').ok_or_else(|| error(position, "expected field:asc or field:desc".into()))?;
        let (name, direction) = (name.trim(), direction.trim());
        let field = if name == TEXT_MATCH {
            TEXT_MATCH
        } else {
            match field(name) {
                Some(def) if def.kind == FieldType::Int32 => def.name,
                Some(def) => return Err(error(position, format!("{:?} is not sortable", def.name))),
                None => return Err(error(position, format!("unknown field {name:?}"))),
            }
        };
        let descending = match direction.to_ascii_lowercase().as_str() {
            "asc" => false,
            "desc" => true,
            _ => return Err(error(position, "the order must be asc or desc".into())),
        };
        if keys.iter().any(|k| k.field == field) {
            return Err(error(position, format!("{field:?} is listed twice")));
        }
        keys.push(SortKey { field, descending });
    }
    Ok(keys)
}

/// Text match, then `sequence_number`, both descending.
pub fn default_sort() -> Vec<SortKey> {
    vec![
        SortKey { field: TEXT_MATCH, descending: true },
        SortKey { field: DEFAULT_SORTING_FIELD, descending: true },
    ]
}

/// Parses a list of string fields (`query_by`, or `facet_by` with `facet` fields only).
fn string_fields(
    parameter: &'static str,
    input: &str,
    facets: bool,
) -> Result<Vec<&'static str>, QueryError> {
    let error = |position, reason: String| QueryError { parameter, position, reason };
    let mut out: Vec<&'static str> = Vec::new();
    for (position, name) in items(input) {
        if name.is_empty() {
            return Err(error(position, "expected a field name".into()));
        }
        let def = field(name).ok_or_else(|| error(position, format!("unknown field {name:?}")))?;
        if def.kind != FieldType::Str {
            return Err(error(position, format!("{:?} is not a string field", def.name)));
        }
        if facets && !def.facet {
            return Err(error(position, format!("{:?} is not a facet field", def.name)));
        }
        if out.contains(&def.name) {
            return Err(error(position, format!("{:?} is listed twice", def.name)));
        }
        out.push(def.name);
    }
    Ok(out)
}

/// Parses `query_by`: one or more string fields, the first weighing most.
pub fn parse_query_by(input: &str) -> Result<Vec<&'static str>, QueryError> {
    string_fields("query_by", input, false)
}

/// Parses `facet_by`: string fields declared as facets.
pub fn parse_facet_by(input: &str) -> Result<Vec<&'static str>, QueryError> {
    string_fields("facet_by", input, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &str) -> QueryError {
        filter_condition(input).unwrap_err()
    }

    #[test]
    fn tokenising_removes_punctuation_inside_words_and_lowercases() {
        assert_eq!(
            tokenize("INT./EXT. half-lit Margaret's  KITCHEN"),
            ["intext", "halflit", "margarets", "kitchen"]
        );
        assert_eq!(tokenize(" -- ... "), Vec::<String>::new());
        assert_eq!(tokenize("Zoë ÉCLAIR"), ["zoë", "éclair"]);
    }

    #[test]
    fn every_comparison_parses() {
        let c = filter_condition("element_type:=Script").unwrap();
        assert_eq!(
            c,
            Condition::Str {
                field: "element_type",
                exact: true,
                negated: false,
                values: vec![vec!["script".into()]]
            }
        );
        let c = filter_condition("comment: the door").unwrap();
        assert_eq!(
            c,
            Condition::Str {
                field: "comment",
                exact: false,
                negated: false,
                values: vec![vec!["the".into(), "door".into()]]
            }
        );
        let int = |s: &str| match filter_condition(s).unwrap() {
            Condition::Int { ranges, negated, .. } => (ranges, negated),
            other => panic!("{other:?}"),
        };
        assert_eq!(int("element_id:5"), (vec![(5, 5)], false));
        assert_eq!(int("element_id:=5"), (vec![(5, 5)], false));
        assert_eq!(int("element_id:!=5"), (vec![(5, 5)], true));
        assert_eq!(int("element_id:>5"), (vec![(6, i64::MAX)], false));
        assert_eq!(int("element_id:>=5"), (vec![(5, i64::MAX)], false));
        assert_eq!(int("element_id:<5"), (vec![(i64::MIN, 4)], false));
        assert_eq!(int("element_id:<=5"), (vec![(i64::MIN, 5)], false));
        assert_eq!(int("element_id:[1..5, 9]"), (vec![(1, 5), (9, 9)], false));
        assert_eq!(int("element_id: [ -3 , 4 ]"), (vec![(-3, -3), (4, 4)], false));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let f = parse_filter("element_id:1 || element_id:2 && element_id:3").unwrap();
        assert!(matches!(f, Filter::Or(_, ref b) if matches!(**b, Filter::And(..))));
        let f = parse_filter("(element_id:1 || element_id:2) && element_id:3").unwrap();
        assert!(matches!(f, Filter::And(ref a, _) if matches!(**a, Filter::Or(..))));
    }

    #[test]
    fn backticks_quote_values_with_delimiters() {
        let c = filter_condition("comment:=`a, b && (c)` && element_type:[`x,y`, z]").unwrap();
        let Condition::And(a, b) = c else { panic!() };
        assert_eq!(
            *a,
            Condition::Str {
                field: "comment",
                exact: true,
                negated: false,
                values: vec![tokenize("a, b && (c)")]
            }
        );
        assert_eq!(
            *b,
            Condition::Str {
                field: "element_type",
                exact: false,
                negated: false,
                values: vec![vec!["xy".into()], vec!["z".into()]]
            }
        );
    }

    #[test]
    fn malformed_filters_name_the_problem_and_its_position() {
        assert_eq!(err("").position, 0);
        let e = err("element_id:>abc");
        assert_eq!((e.position, e.reason.contains("whole number")), (12, true), "{e:?}");
        let e = err("nope:=1");
        assert_eq!(e.position, 0);
        assert!(e.reason.contains("unknown field \"nope\""));
        let e = err("element_id:1 && bogus:2");
        assert_eq!(e.position, 16);
        assert_eq!(err("element_id 1").position, 11);
        assert_eq!(err("(element_id:1").position, 13);
        assert_eq!(err("element_id:1)").position, 12);
        assert_eq!(err("element_id:[1,2").position, 15);
        assert_eq!(err("element_id:").position, 11);
        assert_eq!(err("comment:`open").position, 8);
        assert!(err("comment:>a").reason.contains("string field"));
        assert!(err("comment:[a..b]").reason.contains("ranges"));
        assert!(err("element_id:>[1..2]").reason.contains("range"));
        assert!(err("element_id:99999999999").reason.contains("whole number"));
        assert!(err("element_id:1 &&").reason.contains("field name"));
        assert!(err(&"(".repeat(100)).reason.contains("nested"));
    }

    #[test]
    fn filters_are_rewritten_for_typesense() {
        let render = |s: &str| typesense_filter(&parse_filter(s).unwrap());
        assert_eq!(render("element_id:!=1"), "((element_id:<1 || element_id:>1))");
        assert_eq!(
            render("element_type:=Action || comment:a b && element_id:[1..3, 7]"),
            "(element_type:=[`Action`] || (comment:[`a b`] && element_id:[1..3,7]))"
        );
        assert_eq!(render("sequence_number:>=5"), "sequence_number:>=5");
        assert_eq!(render("sequence_number:<[5, 7]"), "(sequence_number:<5 || sequence_number:<7)");
    }

    #[test]
    fn a_flat_chain_of_34_clauses_stays_one_level_deep_for_typesense() {
        // Found by fuzzing: each `||` used to add a level, past the 32 that parse_filter allows.
        let flat = vec!["comment:a"; 34].join(" || ");
        let rewritten = typesense_filter(&parse_filter(&flat).unwrap());
        assert_eq!(rewritten, format!("({})", vec!["comment:[`a`]"; 34].join(" || ")));
        assert!(parse_filter(&rewritten).is_ok(), "the rewrite parses again");
        let mixed = "comment:a && comment:b && (comment:c || comment:d || comment:e)";
        assert_eq!(
            typesense_filter(&parse_filter(mixed).unwrap()),
            "(comment:[`a`] && comment:[`b`] && (comment:[`c`] || comment:[`d`] || comment:[`e`]))"
        );
    }

    #[test]
    fn sort_by_accepts_up_to_three_number_fields_and_text_match() {
        assert_eq!(parse_sort("").unwrap(), default_sort());
        let keys = parse_sort("_text_match:desc, sequence_number:ASC,element_id:desc").unwrap();
        assert_eq!(keys.len(), 3);
        assert!(!keys[1].descending);
        let e =
            parse_sort("element_id:asc,sequence_number:asc,version_number:asc,_text_match:desc").unwrap_err();
        assert_eq!(e.position, 54);
        assert_eq!(parse_sort("comment:asc").unwrap_err().reason, "\"comment\" is not sortable");
        assert_eq!(parse_sort("x:asc").unwrap_err().reason, "unknown field \"x\"");
        assert_eq!(parse_sort("element_id").unwrap_err().position, 0);
        assert_eq!(parse_sort("element_id:up").unwrap_err().reason, "the order must be asc or desc");
        assert_eq!(parse_sort("element_id:asc, element_id:desc").unwrap_err().position, 16);
    }

    #[test]
    fn query_by_and_facet_by_take_string_fields() {
        assert_eq!(parse_query_by("comment, element_type").unwrap(), ["comment", "element_type"]);
        let e = parse_query_by("comment,element_id").unwrap_err();
        assert_eq!((e.position, e.reason.as_str()), (8, "\"element_id\" is not a string field"));
        assert_eq!(parse_query_by("").unwrap_err().reason, "expected a field name");
        assert_eq!(parse_query_by("comment,nope").unwrap_err().reason, "unknown field \"nope\"");
        assert_eq!(parse_facet_by("element_type,service_name").unwrap().len(), 2);
        assert_eq!(parse_facet_by("comment").unwrap_err().reason, "\"comment\" is not a facet field");
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let alphabet =
            ["a", ":", "=", "!", ">", "<", "[", "]", "(", ")", ",", ".", "`", "&", "|", " ", "1", "é"];
        // Every string of up to 4 symbols from the alphabet: an exhaustive small fuzz.
        let mut inputs = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            frontier =
                frontier.iter().flat_map(|s| alphabet.iter().map(move |a| format!("{s}{a}"))).collect();
            inputs.extend(frontier.iter().cloned());
        }
        for input in inputs {
            let _ = filter_condition(&format!("element_id:{input}"));
            let _ = filter_condition(&input);
            let _ = parse_sort(&input);
        }
    }
}
