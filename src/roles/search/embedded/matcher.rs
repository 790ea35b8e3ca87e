//! Search on the embedded index with Typesense 0.24's semantics (defaults):
//!
//! - a document matches when one of the `query_by` fields holds every word; the last word also
//!   matches as a prefix;
//! - typos are a fallback, tried only when the search finds nothing: 1 from 4 characters, 2
//!   from 7, an adjacent swap counts as one. Like Typesense, the attempts raise the total of
//!   typos over all words one at a time (0, 1, 2, …) and stop at the first that finds anything,
//!   so every hit of an answer has the same number of typos and exact matches hide typo ones;
//! - when nothing matches even with typos, words are dropped from the right, then from the left,
//!   and the words left are whole words (no longer a prefix);
//! - ranking: more words, fewer typos, whole words before prefixes, earlier fields first; then
//!   `sort_by` (default: text match, then `sequence_number`, both descending).
//!
//! Typesense considers every word within reach of a prefix or typo when asked with a large
//! `max_candidates`, which is what the Typesense backend sends; here every such word counts.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Bound;
use std::time::Instant;

use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, EnableScoring, FuzzyTermQuery, Occur, Query as TantivyQuery,
    RangeQuery, TermQuery, Weight,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocSet, Searcher, SegmentReader, Term, TERMINATED};

use super::super::api::{FacetCount, FacetValue, Highlight, Hit, SearchResponse};
use super::super::backend::Query;
use super::super::query::{Condition, FieldType, TEXT_MATCH};
use super::index::{facet_column, Fields};

/// Facet values returned per field, as Typesense's `max_facet_values`.
const MAX_FACET_VALUES: usize = 10;
/// Typesense's `snippet_threshold`: longer fields are cut to a window around the first match.
const SNIPPET_THRESHOLD: usize = 30;
/// Typesense's `highlight_affix_num_tokens`.
const SNIPPET_AFFIX: usize = 4;
/// Marks "no match" for a word in a document.
const NO_MATCH: u8 = u8::MAX;

/// Typos allowed for a word of this many characters (Typesense's `min_len_1typo` and
/// `min_len_2typo` defaults).
pub fn typos_allowed(word: &str) -> u8 {
    match word.chars().count() {
        0..=3 => 0,
        4..=6 => 1,
        _ => 2,
    }
}

/// One attempt: these words, the last one a prefix or not, each with its typo allowance, and
/// at most `budget` typos over all words.
#[derive(Debug, Clone, PartialEq)]
struct Stage {
    words: Vec<String>,
    prefix_last: bool,
    typos: Vec<u8>,
    budget: u8,
}

/// The attempts in Typesense's order: the whole query with 0, 1, 2… typos in all; then words
/// dropped from the right, then from the left, each again with a rising typo total.
fn stages(words: &[String]) -> Vec<Stage> {
    let mut subsets = vec![(words.to_vec(), true)];
    for keep in (1..words.len()).rev() {
        subsets.push((words[..keep].to_vec(), false));
    }
    for skip in 1..words.len() {
        subsets.push((words[skip..].to_vec(), false));
    }
    let mut out = Vec::new();
    for (words, prefix_last) in subsets {
        let allowed: Vec<u8> = words.iter().map(|w| typos_allowed(w)).collect();
        let most: u8 = allowed.iter().sum();
        for budget in 0..=most {
            let typos = allowed.iter().map(|a| (*a).min(budget)).collect();
            out.push(Stage { words: words.clone(), prefix_last, typos, budget });
        }
    }
    out
}

/// A matched document with its sort keys.
struct Match {
    address: DocAddress,
    score: u64,
    keys: [i64; 3],
}

pub fn search(searcher: &Searcher, fields: &Fields, query: &Query) -> tantivy::Result<SearchResponse> {
    let started = Instant::now();
    let scoring = EnableScoring::disabled_from_searcher(searcher);
    let filter = match &query.filter {
        Some(condition) => Some(filter_query(fields, condition).weight(scoring)?),
        None => None,
    };
    let (mut matches, stage) = if query.words.is_empty() {
        (match_all(searcher, filter.as_deref())?, None)
    } else {
        let mut found = (Vec::new(), None);
        for stage in stages(&query.words) {
            let matches = match_stage(searcher, fields, query, &stage, filter.as_deref())?;
            if !matches.is_empty() {
                found = (matches, Some(stage));
                break;
            }
        }
        found
    };
    fill_sort_keys(searcher, query, &mut matches)?;
    let facet_counts =
        if query.facet_by.is_empty() { None } else { Some(facets(searcher, query, &matches)?) };
    let found = matches.len() as u64;
    let page = page_of(query, &mut matches);
    let mut hits = Vec::with_capacity(page.len());
    for m in page {
        let document = fields.document_of(&searcher.doc(m.address)?)?;
        let highlights = stage.as_ref().map(|s| highlights(&document, query, s)).unwrap_or_default();
        hits.push(Hit { document, highlights });
    }
    Ok(SearchResponse {
        hits,
        found,
        page: query.page,
        search_time_ms: started.elapsed().as_millis() as u64,
        facet_counts,
    })
}

/// Whether a document of a segment is alive and passes the filter.
fn admitted(reader: &SegmentReader, filter: Option<&dyn Weight>) -> tantivy::Result<Vec<bool>> {
    let max_doc = reader.max_doc() as usize;
    let mut admitted = match filter {
        None => vec![true; max_doc],
        Some(weight) => {
            let mut bits = vec![false; max_doc];
            let mut scorer = weight.scorer(reader, 1.0)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                bits[doc as usize] = true;
                doc = scorer.advance();
            }
            bits
        }
    };
    if let Some(alive) = reader.alive_bitset() {
        for (doc, slot) in admitted.iter_mut().enumerate() {
            *slot = *slot && alive.is_alive(doc as u32);
        }
    }
    Ok(admitted)
}

fn match_all(searcher: &Searcher, filter: Option<&dyn Weight>) -> tantivy::Result<Vec<Match>> {
    let mut out = Vec::new();
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        for (doc, ok) in admitted(reader, filter)?.into_iter().enumerate() {
            if ok {
                out.push(Match { address: DocAddress::new(ord as u32, doc as u32), score: 0, keys: [0; 3] });
            }
        }
    }
    Ok(out)
}

/// The queries that find one word, each with its match code: typos × 2, plus 1 when the word
/// is only a prefix of the document's word. Lower is better.
fn word_queries(
    field: tantivy::schema::Field,
    word: &str,
    prefix: bool,
    typos: u8,
) -> Vec<(u8, Box<dyn TantivyQuery>)> {
    let term = Term::from_field_text(field, word);
    let mut out: Vec<(u8, Box<dyn TantivyQuery>)> =
        vec![(0, Box::new(TermQuery::new(term.clone(), IndexRecordOption::Basic)))];
    if prefix {
        out.push((1, Box::new(FuzzyTermQuery::new_prefix(term.clone(), 0, true))));
    }
    for distance in 1..=typos {
        out.push((distance * 2, Box::new(FuzzyTermQuery::new(term.clone(), distance, true))));
        if prefix {
            out.push((distance * 2 + 1, Box::new(FuzzyTermQuery::new_prefix(term.clone(), distance, true))));
        }
    }
    out
}

/// The text-match score: more words, then fewer typos, then whole words, then earlier fields.
fn score(words: usize, codes: &[u8], field_index: usize) -> u64 {
    let typos: u64 = codes.iter().map(|c| u64::from(c / 2)).sum();
    let partial: u64 = codes.iter().map(|c| u64::from(c % 2)).sum();
    ((words as u64) << 48)
        | ((63 - typos.min(63)) << 40)
        | ((63 - partial.min(63)) << 32)
        | ((255 - field_index.min(255) as u64) << 24)
        | 1
}

fn match_stage(
    searcher: &Searcher,
    fields: &Fields,
    query: &Query,
    stage: &Stage,
    filter: Option<&dyn Weight>,
) -> tantivy::Result<Vec<Match>> {
    let scoring = EnableScoring::disabled_from_searcher(searcher);
    let last = stage.words.len() - 1;
    // weights[field][word] = [(code, weight)], codes ascending.
    let mut weights = Vec::with_capacity(query.query_by.len());
    for name in &query.query_by {
        let field = fields.set(name).main;
        let mut per_word = Vec::with_capacity(stage.words.len());
        for (i, word) in stage.words.iter().enumerate() {
            let queries = word_queries(field, word, stage.prefix_last && i == last, stage.typos[i]);
            let mut list = Vec::with_capacity(queries.len());
            for (code, q) in queries {
                list.push((code, q.weight(scoring)?));
            }
            per_word.push(list);
        }
        weights.push(per_word);
    }
    let mut out = Vec::new();
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        let admitted = admitted(reader, filter)?;
        let max_doc = reader.max_doc() as usize;
        let mut best = vec![0u64; max_doc];
        let mut touched: Vec<u32> = Vec::new();
        for (field_index, per_word) in weights.iter().enumerate() {
            let mut codes = vec![vec![NO_MATCH; max_doc]; per_word.len()];
            for (word, list) in per_word.iter().enumerate() {
                for (code, weight) in list {
                    let mut scorer = weight.scorer(reader, 1.0)?;
                    let mut doc = scorer.doc();
                    while doc != TERMINATED {
                        let slot = &mut codes[word][doc as usize];
                        if *slot == NO_MATCH && admitted[doc as usize] {
                            *slot = *code;
                        }
                        doc = scorer.advance();
                    }
                }
            }
            let mut doc_codes = vec![0u8; per_word.len()];
            for doc in 0..max_doc {
                if codes[0][doc] == NO_MATCH {
                    continue;
                }
                let mut all = true;
                let mut typos = 0u8;
                for (word, column) in codes.iter().enumerate() {
                    doc_codes[word] = column[doc];
                    all &= column[doc] != NO_MATCH;
                    typos = typos.saturating_add(column[doc] / 2);
                }
                if all && typos <= stage.budget {
                    let s = score(stage.words.len(), &doc_codes, field_index);
                    if best[doc] == 0 {
                        touched.push(doc as u32);
                    }
                    best[doc] = best[doc].max(s);
                }
            }
        }
        for doc in touched {
            out.push(Match {
                address: DocAddress::new(ord as u32, doc),
                score: best[doc as usize],
                keys: [0; 3],
            });
        }
    }
    Ok(out)
}

fn fill_sort_keys(searcher: &Searcher, query: &Query, matches: &mut [Match]) -> tantivy::Result<()> {
    let readers = searcher.segment_readers();
    for (k, key) in query.sort.iter().enumerate() {
        if key.field == TEXT_MATCH {
            for m in matches.iter_mut() {
                m.keys[k] = m.score as i64;
            }
            continue;
        }
        let columns =
            readers.iter().map(|r| r.fast_fields().i64(key.field)).collect::<tantivy::Result<Vec<_>>>()?;
        for m in matches.iter_mut() {
            m.keys[k] = columns[m.address.segment_ord as usize].first(m.address.doc_id).unwrap_or(0);
        }
    }
    Ok(())
}

/// The matches of the requested page, in order. Sorts only as far as the page needs.
fn page_of<'a>(query: &Query, matches: &'a mut [Match]) -> &'a [Match] {
    let sort = &query.sort;
    let order = |a: &Match, b: &Match| -> Ordering {
        for (k, key) in sort.iter().enumerate() {
            let ordering = a.keys[k].cmp(&b.keys[k]);
            let ordering = if key.descending { ordering.reverse() } else { ordering };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        // Ties: the most recently written first.
        (b.address.segment_ord, b.address.doc_id).cmp(&(a.address.segment_ord, a.address.doc_id))
    };
    let start = ((query.page - 1) as usize).saturating_mul(query.per_page as usize);
    if start >= matches.len() {
        return &[];
    }
    let end = (start + query.per_page as usize).min(matches.len());
    if end < matches.len() {
        matches.select_nth_unstable_by(end - 1, order);
    }
    matches[..end].sort_unstable_by(order);
    &matches[start..end]
}

fn facets(searcher: &Searcher, query: &Query, matches: &[Match]) -> tantivy::Result<Vec<FacetCount>> {
    let readers = searcher.segment_readers();
    let mut out = Vec::with_capacity(query.facet_by.len());
    for name in &query.facet_by {
        let column_name = facet_column(name);
        let columns =
            readers.iter().map(|r| r.fast_fields().str(&column_name)).collect::<tantivy::Result<Vec<_>>>()?;
        let mut per_segment: Vec<HashMap<u64, u64>> = vec![HashMap::new(); readers.len()];
        for m in matches {
            if let Some(column) = &columns[m.address.segment_ord as usize] {
                for ord in column.term_ords(m.address.doc_id) {
                    *per_segment[m.address.segment_ord as usize].entry(ord).or_default() += 1;
                }
            }
        }
        let mut counts: HashMap<String, u64> = HashMap::new();
        for (segment, ords) in per_segment.into_iter().enumerate() {
            let Some(column) = &columns[segment] else { continue };
            for (ord, count) in ords {
                let mut value = String::new();
                column.ord_to_str(ord, &mut value)?;
                *counts.entry(value).or_default() += count;
            }
        }
        let mut counts: Vec<FacetValue> =
            counts.into_iter().map(|(value, count)| FacetValue { value, count }).collect();
        counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        counts.truncate(MAX_FACET_VALUES);
        out.push(FacetCount { field_name: name.to_string(), counts });
    }
    Ok(out)
}

/// The filter as a tantivy query.
fn filter_query(fields: &Fields, condition: &Condition) -> Box<dyn TantivyQuery> {
    match condition {
        Condition::And(a, b) => {
            Box::new(BooleanQuery::intersection(vec![filter_query(fields, a), filter_query(fields, b)]))
        }
        Condition::Or(a, b) => {
            Box::new(BooleanQuery::union(vec![filter_query(fields, a), filter_query(fields, b)]))
        }
        Condition::Str { field, exact, negated, values } => {
            let set = fields.set(field);
            let alternatives: Vec<Box<dyn TantivyQuery>> = values
                .iter()
                .map(|words| -> Box<dyn TantivyQuery> {
                    if words.is_empty() {
                        Box::new(EmptyQuery)
                    } else if *exact {
                        let field = set.exact.unwrap_or(set.main);
                        Box::new(TermQuery::new(
                            Term::from_field_text(field, &words.join(" ")),
                            IndexRecordOption::Basic,
                        ))
                    } else {
                        Box::new(BooleanQuery::intersection(
                            words
                                .iter()
                                .map(|w| -> Box<dyn TantivyQuery> {
                                    Box::new(TermQuery::new(
                                        Term::from_field_text(set.main, w),
                                        IndexRecordOption::Basic,
                                    ))
                                })
                                .collect(),
                        ))
                    }
                })
                .collect();
            negate_if(*negated, Box::new(BooleanQuery::union(alternatives)))
        }
        Condition::Int { field, negated, ranges } => {
            let set = fields.set(field);
            debug_assert_eq!(set.kind, FieldType::Int32);
            let alternatives: Vec<Box<dyn TantivyQuery>> = ranges
                .iter()
                .map(|(low, high)| -> Box<dyn TantivyQuery> {
                    Box::new(RangeQuery::new(
                        Bound::Included(Term::from_field_i64(set.main, *low)),
                        Bound::Included(Term::from_field_i64(set.main, *high)),
                    ))
                })
                .collect();
            negate_if(*negated, Box::new(BooleanQuery::union(alternatives)))
        }
    }
}

fn negate_if(negated: bool, query: Box<dyn TantivyQuery>) -> Box<dyn TantivyQuery> {
    if !negated {
        return query;
    }
    Box::new(BooleanQuery::new(vec![(Occur::Must, Box::new(AllQuery)), (Occur::MustNot, query)]))
}

// ---- highlights ----

/// Optimal-string-alignment distance (an adjacent swap is one edit), as Typesense counts typos.
fn typo_distance(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[n][m]
}

/// Whether a document word matches a query word of the stage.
fn word_matches(document_word: &str, query_word: &str, prefix: bool, typos: u8) -> bool {
    if document_word == query_word || (prefix && document_word.starts_with(query_word)) {
        return true;
    }
    if typos == 0 {
        return false;
    }
    let d: Vec<char> = document_word.chars().collect();
    let q: Vec<char> = query_word.chars().collect();
    if typo_distance(&d, &q) <= typos as usize {
        return true;
    }
    prefix
        && (q.len().saturating_sub(typos as usize)..=q.len() + typos as usize)
            .any(|len| len <= d.len() && typo_distance(&d[..len], &q) <= typos as usize)
}

fn highlights(document: &super::super::api::Document, query: &Query, stage: &Stage) -> Vec<Highlight> {
    let last = stage.words.len() - 1;
    let mut out = Vec::new();
    for name in &query.query_by {
        let text = match *name {
            "element_type" => &document.element_type,
            "service_name" => &document.service_name,
            _ => &document.comment,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let marked: Vec<bool> = words
            .iter()
            .map(|w| {
                let normal: String =
                    w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
                !normal.is_empty()
                    && stage.words.iter().enumerate().any(|(i, q)| {
                        word_matches(&normal, q, stage.prefix_last && i == last, stage.typos[i])
                    })
            })
            .collect();
        let Some(first) = marked.iter().position(|m| *m) else { continue };
        let (from, to) = if words.len() <= SNIPPET_THRESHOLD {
            (0, words.len())
        } else {
            (first.saturating_sub(SNIPPET_AFFIX), (first + SNIPPET_AFFIX + 1).min(words.len()))
        };
        let snippet = (from..to)
            .map(|i| if marked[i] { format!("<mark>{}</mark>", words[i]) } else { words[i].to_string() })
            .collect::<Vec<_>>()
            .join(" ");
        let matched_tokens = (0..words.len()).filter(|i| marked[*i]).map(|i| words[i].to_string()).collect();
        out.push(Highlight { field: name.to_string(), snippet, matched_tokens });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_allowance_follows_typesense_defaults() {
        assert_eq!([typos_allowed("dog"), typos_allowed("door"), typos_allowed("doorway")], [0, 1, 2]);
    }

    #[test]
    fn stages_try_typos_late_and_drop_words_right_then_left() {
        let words: Vec<String> = ["old", "kitchen", "door"].iter().map(|s| s.to_string()).collect();
        let stages = stages(&words);
        let summary: Vec<(String, bool, Vec<u8>, u8)> =
            stages.iter().map(|s| (s.words.join(" "), s.prefix_last, s.typos.clone(), s.budget)).collect();
        assert_eq!(summary[0], ("old kitchen door".into(), true, vec![0, 0, 0], 0));
        assert_eq!(summary[1], ("old kitchen door".into(), true, vec![0, 1, 1], 1));
        assert_eq!(summary[2], ("old kitchen door".into(), true, vec![0, 2, 1], 2));
        assert_eq!(summary[3], ("old kitchen door".into(), true, vec![0, 2, 1], 3));
        assert_eq!(summary[4], ("old kitchen".into(), false, vec![0, 0], 0));
        let subsets: Vec<&str> = summary.iter().filter(|s| s.3 == 0).map(|s| s.0.as_str()).collect();
        assert_eq!(subsets, ["old kitchen door", "old kitchen", "old", "kitchen door", "door"]);
    }

    #[test]
    fn an_adjacent_swap_is_one_typo() {
        assert!(word_matches("house", "huose", false, 1));
        assert!(!word_matches("house", "hosue", false, 0));
        assert!(word_matches("doorway", "dorw", true, 1));
        assert!(!word_matches("kitchen", "chicken", false, 2));
    }

    #[test]
    fn scores_rank_words_then_typos_then_whole_words_then_fields() {
        assert!(score(2, &[0, 0], 1) > score(2, &[0, 2], 0));
        assert!(score(2, &[0, 0], 0) > score(2, &[0, 1], 0));
        assert!(score(2, &[0, 1], 0) > score(2, &[0, 1], 1));
        assert!(score(3, &[4, 4, 4], 2) > score(2, &[0, 0], 0));
    }
}
