//! The search role's query parameters: `roles::search::query::{parse_filter, check_filter,
//! filter_condition, typesense_filter, parse_sort, parse_query_by, parse_facet_by, tokenize}`.
//! Byte 0 picks the parser; the rest is the parameter's text.
#![no_main]

use fountain::roles::search::query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match which % 5 {
        0 | 1 => {
            if let Ok(filter) = query::parse_filter(text) {
                let checked = query::check_filter(&filter);
                // What goes to Typesense for an accepted filter must itself parse again.
                if checked.is_ok() {
                    let forwarded = query::typesense_filter(&filter);
                    if let Err(err) = query::parse_filter(&forwarded) {
                        // Flat chains stay one level deep since finding 1 (fuzz/README.md) was
                        // fixed; a filter written near the 32-level limit can still come out a
                        // level deeper (a number's `!=` becomes a group). Anything else is new.
                        assert!(
                            format!("{err:?}").contains("nested parentheses"),
                            "typesense_filter produced {forwarded:?} that does not parse ({err:?}), from {text:?}"
                        );
                    }
                }
            }
            let _ = query::filter_condition(text);
        }
        2 => {
            if let Ok(keys) = query::parse_sort(text) {
                assert!(keys.len() <= 3, "more than three sort keys from {text:?}");
            }
        }
        3 => {
            let _ = query::parse_query_by(text);
            let _ = query::parse_facet_by(text);
        }
        _ => {
            let _ = query::tokenize(text);
        }
    }
});
