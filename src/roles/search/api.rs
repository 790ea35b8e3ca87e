//! The search role's wire shapes: the seed's document and sync payload, the search request and
//! answer, import results and collection info.

use serde::{Deserialize, Serialize};
use utoipa::openapi::{ArrayBuilder, Ref, RefOr, Schema};
use utoipa::ToSchema;

use crate::platform::error::{ApiError, ApiResult};

/// Longest document id (`{element_id}_{version_number}` in the seed).
pub const MAX_ID_CHARS: usize = 128;
/// Longest `element_type` and `service_name`.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest `comment`, in bytes.
pub const MAX_COMMENT_BYTES: usize = 16 * 1024;
/// Longest `q`, `query_by`, `filter_by`, `sort_by` and `facet_by`, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// `max_hits` bounds (Typesense's `per_page`).
pub const MAX_HITS: u32 = 250;
/// Highest page asked for.
pub const MAX_PAGE: u32 = 10_000;

/// A searchable screenplay element, as the seed defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "id": "42_1", "element_type": "action", "element_id": 42, "sequence_number": 7,
    "version_number": 1, "comment": "INT. KITCHEN - NIGHT. Margaret opens the half-lit door.",
    "service_name": "sequence"
}))]
pub struct Document {
    /// 1–128 characters of `A-Z a-z 0-9 _ - . :`, e.g. `{element_id}_{version_number}`.
    #[schema(max_length = 128, min_length = 1, pattern = "^[A-Za-z0-9_.:-]+$", example = "42_1")]
    pub id: String,
    /// 1–64 characters, e.g. `script`, `section`, `character`, `action`, `spokenWord`.
    #[schema(max_length = 64, min_length = 1, example = "action")]
    pub element_type: String,
    #[schema(example = 42)]
    pub element_id: i32,
    #[schema(example = 7)]
    pub sequence_number: i32,
    #[schema(example = 1)]
    pub version_number: i32,
    /// At most 16 KiB.
    #[schema(max_length = 16384)]
    pub comment: String,
    /// 1–64 characters: the service that owns the element.
    #[schema(max_length = 64, min_length = 1, example = "sequence")]
    pub service_name: String,
}

impl Document {
    /// Checks the bounds the type cannot express; the error names the field.
    pub fn validate(&self, prefix: &str) -> ApiResult<()> {
        let field = |name: &str| format!("{prefix}{name}");
        let id_ok = (1..=MAX_ID_CHARS).contains(&self.id.chars().count())
            && self.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !id_ok {
            return Err(ApiError::validation(
                &field("id"),
                "must be 1-128 characters of A-Z a-z 0-9 _ - . :",
            ));
        }
        for (name, value) in [("element_type", &self.element_type), ("service_name", &self.service_name)] {
            let length = value.chars().count();
            if length == 0 || length > MAX_NAME_CHARS || value.chars().any(char::is_control) {
                return Err(ApiError::validation(
                    &field(name),
                    "must be 1-64 characters without control characters",
                ));
            }
        }
        if self.comment.len() > MAX_COMMENT_BYTES {
            return Err(ApiError::validation(&field("comment"), "must be at most 16384 bytes"));
        }
        Ok(())
    }
}

/// The seed's sync payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "operation": "create",
    "document": {
        "id": "42_1", "element_type": "action", "element_id": 42, "sequence_number": 7,
        "version_number": 1, "comment": "INT. KITCHEN - NIGHT. Margaret opens the half-lit door.",
        "service_name": "sequence"
    }
}))]
pub struct SyncRequest {
    /// `create`, `update` (both upsert) or `delete` (by `document.id`); case is ignored.
    #[schema(example = "create")]
    pub operation: String,
    pub document: Document,
}

/// What a sync operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Upsert,
    Delete,
}

impl Operation {
    /// The seed's operation names, case ignored; anything else is a 400.
    pub fn parse(name: &str) -> ApiResult<Self> {
        match name.to_ascii_lowercase().as_str() {
            "create" | "update" => Ok(Self::Upsert),
            "delete" => Ok(Self::Delete),
            _ => Err(ApiError::new(
                crate::platform::error::ErrorCode::BadRequest,
                "operation: must be one of create, update, delete",
            )
            .with_details(
                serde_json::json!({"field": "operation", "reason": "must be one of create, update, delete"}),
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Message {
    #[schema(example = "Document synchronized successfully.")]
    pub message: String,
}

fn default_max_hits() -> u32 {
    10
}

/// A search, with Typesense's parameters.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "q": "margaret door", "query_by": "comment,element_type",
    "filter_by": "element_type:=action && sequence_number:>=1", "sort_by": "_text_match:desc,sequence_number:asc",
    "max_hits": 10, "page": 1, "facet_by": "element_type"
}))]
pub struct SearchRequest {
    /// Words to find; `*` or empty: every document. The last word also matches as a prefix.
    #[schema(max_length = 4096, example = "margaret door")]
    pub q: String,
    /// String fields to search, comma-separated, the first weighing most.
    #[schema(max_length = 4096, example = "comment")]
    pub query_by: String,
    /// e.g. `element_type:=action && sequence_number:[1..50]`.
    #[schema(max_length = 4096)]
    pub filter_by: Option<String>,
    /// Up to 3 of `field:asc|desc` (number fields or `_text_match`).
    #[schema(max_length = 4096)]
    pub sort_by: Option<String>,
    /// Hits per page, 1–250 (default 10).
    #[serde(default = "default_max_hits")]
    #[schema(minimum = 1, maximum = 250, default = 10)]
    pub max_hits: u32,
    /// 1-based page (default 1), at most 10000.
    #[schema(minimum = 1, maximum = 10000, default = 1)]
    pub page: Option<u32>,
    /// Facet fields, comma-separated (`element_type`, `service_name`).
    #[schema(max_length = 4096)]
    pub facet_by: Option<String>,
}

/// Where a hit matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Highlight {
    pub field: String,
    /// The field's text with the matched words in `<mark>…</mark>`.
    pub snippet: String,
    pub matched_tokens: Vec<String>,
}

/// A found document with its highlights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    #[serde(flatten)]
    pub document: Document,
    pub highlights: Vec<Highlight>,
}

/// One object: the document's fields and `highlights`. (Derived, the schema would be
/// `allOf: [Document, {highlights}]`, and `Document` refuses properties it does not name, as a
/// sync request must: no hit could match it.)
impl<'s> ToSchema<'s> for Hit {
    fn schema() -> (&'s str, RefOr<Schema>) {
        let mut object = match Document::schema().1 {
            RefOr::T(Schema::Object(object)) => object,
            _ => unreachable!("Document derives an object schema"),
        };
        object.description = Some("A found document with its highlights.".into());
        object.example = None;
        let highlights = ArrayBuilder::new().items(Ref::from_schema_name("Highlight")).build();
        object.properties.insert("highlights".into(), highlights.into());
        object.required.push("highlights".into());
        ("Hit", RefOr::T(Schema::Object(object)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

/// The most frequent values (up to 10) of a facet field among all matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FacetCount {
    pub field_name: String,
    pub counts: Vec<FacetValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    /// Every document that matched, over all pages.
    pub found: u64,
    pub page: u32,
    pub search_time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facet_counts: Option<Vec<FacetCount>>,
}

/// One field of the collection schema.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FieldInfo {
    pub name: String,
    /// `string` or `int32`.
    #[serde(rename = "type")]
    pub kind: String,
    pub facet: bool,
}

/// The collection: its schema and how many documents it holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CollectionInfo {
    #[schema(example = "elements")]
    pub name: String,
    pub num_documents: u64,
    pub fields: Vec<FieldInfo>,
    #[schema(example = "sequence_number")]
    pub default_sorting_field: String,
    /// `embedded` or `typesense`.
    pub backend: String,
}

/// One line of an import answer, as Typesense writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportResult {
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The input line that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

impl ImportResult {
    pub fn ok() -> Self {
        Self { success: true, error: None, document: None }
    }

    pub fn failed(error: impl Into<String>, line: &str) -> Self {
        Self { success: false, error: Some(error.into()), document: Some(line.to_string()) }
    }
}
