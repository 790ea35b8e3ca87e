//! The tantivy schema of the collection and document conversion.
//!
//! Per string field three tantivy fields: the words (Typesense's tokens, for `q` and `f:v`),
//! the words joined by single spaces (`f:=v`, case and punctuation ignored as Typesense does) and,
//! for facet fields, the original value as a fast column (facet counts). Number fields are
//! indexed and fast (filters, sorting). The document itself is stored once, as JSON.

use std::collections::HashMap;
use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::TermQuery;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::{TextAnalyzer, WhitespaceTokenizer};
use tantivy::{Index, Searcher, TantivyDocument, Term};

use super::super::api::Document;
use super::super::query::{tokenize, FieldType, FIELDS};

/// The tokenizer of word fields: the text is already Typesense's tokens joined by spaces.
const WORDS_TOKENIZER: &str = "typesense_words";

/// The tantivy fields of one collection field.
#[derive(Debug, Clone, Copy)]
pub struct FieldSet {
    pub kind: FieldType,
    /// Words (strings) or the number (int32).
    pub main: Field,
    /// Strings: the normalised whole value.
    pub exact: Option<Field>,
    /// Facet strings: the original value, as a fast column named [`facet_column`].
    pub facet: Option<Field>,
}

pub struct Fields {
    pub id: Field,
    pub stored: Field,
    pub by_name: HashMap<&'static str, FieldSet>,
}

pub fn exact_name(field: &str) -> String {
    format!("{field}__exact")
}

pub fn facet_column(field: &str) -> String {
    format!("{field}__facet")
}

fn schema() -> Schema {
    let mut builder = Schema::builder();
    builder.add_text_field("id", STRING);
    builder.add_text_field("document", STORED);
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS_TOKENIZER)
            .set_index_option(IndexRecordOption::Basic),
    );
    for def in FIELDS {
        match def.kind {
            FieldType::Str => {
                builder.add_text_field(def.name, words.clone());
                builder.add_text_field(&exact_name(def.name), STRING);
                if def.facet {
                    builder.add_text_field(&facet_column(def.name), TextOptions::default().set_fast(None));
                }
            }
            FieldType::Int32 => {
                builder.add_i64_field(def.name, NumericOptions::default().set_indexed().set_fast());
            }
        }
    }
    builder.build()
}

fn fields_of(schema: &Schema) -> Result<Fields, String> {
    let get = |name: &str| schema.get_field(name).map_err(|e| format!("search index schema: {e}"));
    let mut by_name = HashMap::new();
    for def in FIELDS {
        let set = FieldSet {
            kind: def.kind,
            main: get(def.name)?,
            exact: if def.kind == FieldType::Str { Some(get(&exact_name(def.name))?) } else { None },
            facet: if def.facet { Some(get(&facet_column(def.name))?) } else { None },
        };
        by_name.insert(def.name, set);
    }
    Ok(Fields { id: get("id")?, stored: get("document")?, by_name })
}

/// Opens the index in `dir`, creating the directory and the index on first use.
pub fn open(dir: &Path) -> Result<(Index, Fields), String> {
    crate::platform::fs::create_private_dir(dir)
        .map_err(|e| format!("cannot create the search index directory {}: {e}", dir.display()))?;
    let directory = MmapDirectory::open(dir).map_err(|e| format!("search index {}: {e}", dir.display()))?;
    let index = Index::open_or_create(directory, schema())
        .map_err(|e| format!("search index {} cannot be opened: {e}", dir.display()))?;
    index
        .tokenizers()
        .register(WORDS_TOKENIZER, TextAnalyzer::builder(WhitespaceTokenizer::default()).build());
    let fields = fields_of(&index.schema())?;
    Ok((index, fields))
}

impl Fields {
    pub fn id_term(&self, id: &str) -> Term {
        Term::from_field_text(self.id, id)
    }

    pub fn set(&self, name: &str) -> &FieldSet {
        &self.by_name[name]
    }

    /// The tantivy document of a collection document.
    pub fn to_tantivy(&self, document: &Document) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.id, &document.id);
        let json = serde_json::to_string(document).unwrap_or_default();
        doc.add_text(self.stored, &json);
        let strings = [
            ("element_type", &document.element_type),
            ("comment", &document.comment),
            ("service_name", &document.service_name),
        ];
        for (name, value) in strings {
            let set = self.set(name);
            let words = tokenize(value).join(" ");
            doc.add_text(set.main, &words);
            if let Some(exact) = set.exact {
                doc.add_text(exact, &words);
            }
            if let Some(facet) = set.facet {
                doc.add_text(facet, value);
            }
        }
        let numbers = [
            ("element_id", document.element_id),
            ("sequence_number", document.sequence_number),
            ("version_number", document.version_number),
        ];
        for (name, value) in numbers {
            doc.add_i64(self.set(name).main, i64::from(value));
        }
        doc
    }

    /// The collection document stored in a tantivy document.
    pub fn document_of(&self, doc: &TantivyDocument) -> tantivy::Result<Document> {
        let json = doc.get_first(self.stored).and_then(|v| v.as_str()).unwrap_or_default();
        serde_json::from_str(json).map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))
    }
}

/// The document with this id, if the searcher's view holds it.
pub fn find(searcher: &Searcher, fields: &Fields, id: &str) -> tantivy::Result<Option<Document>> {
    let query = TermQuery::new(fields.id_term(id), IndexRecordOption::Basic);
    let top = searcher.search(&query, &TopDocs::with_limit(1))?;
    match top.first() {
        Some((_, address)) => Ok(Some(fields.document_of(&searcher.doc(*address)?)?)),
        None => Ok(None),
    }
}
