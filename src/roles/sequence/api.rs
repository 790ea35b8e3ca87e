//! The wire shapes of Service A (the seed's field names) and of its sync calls to search.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Largest element id: search stores ids as `int32` (the seed's collection schema).
pub const MAX_ELEMENT_ID: i64 = i32::MAX as i64;
/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 1000;
/// Largest `newVersionData`, as compact JSON.
pub const MAX_VERSION_DATA_BYTES: usize = 64 * 1024;
/// Most elements one reorder may list.
pub const MAX_REORDER: usize = 1000;

/// The kinds of screenplay element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ElementType {
    Script,
    Section,
    Character,
    Action,
    SpokenWord,
}

impl ElementType {
    pub const ALL: [ElementType; 5] = [
        ElementType::Script,
        ElementType::Section,
        ElementType::Character,
        ElementType::Action,
        ElementType::SpokenWord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ElementType::Script => "script",
            ElementType::Section => "section",
            ElementType::Character => "character",
            ElementType::Action => "action",
            ElementType::SpokenWord => "spokenWord",
        }
    }

    pub fn parse(text: &str) -> Option<ElementType> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// Read from a string (serde's derived enum reading turns a number into a syntax error, and
/// a wrong type must be a 422 like every other field).
impl<'de> Deserialize<'de> for ElementType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &["script", "section", "character", "action", "spokenWord"];
        let text = String::deserialize(deserializer)?;
        ElementType::parse(&text).ok_or_else(|| serde::de::Error::unknown_variant(&text, NAMES))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
#[schema(example = json!({"elementType": "script", "elementId": 1, "comment": "Test sequence generation."}))]
pub struct SequenceRequest {
    pub elementType: ElementType,
    /// 1 … 2147483647; unique within its element type.
    #[schema(minimum = 1, maximum = 2147483647)]
    pub elementId: i64,
    /// Why the element is numbered (at most 1000 characters).
    #[schema(max_length = 1000)]
    pub comment: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct SequenceResponse {
    /// The element's number, unique within its element type.
    pub sequenceNumber: i64,
    pub comment: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
#[schema(example = json!({"elementIds": [1], "newOrder": [1], "elementType": "script"}))]
pub struct ReorderRequest {
    /// The elements whose sequence numbers are exchanged (1 … 1000 distinct ids).
    #[schema(min_items = 1, max_items = 1000)]
    pub elementIds: Vec<i64>,
    /// The same ids in their new order: the first gets the smallest of the numbers they hold.
    #[schema(min_items = 1, max_items = 1000)]
    pub newOrder: Vec<i64>,
    /// Required when an id names elements of several types.
    pub elementType: Option<ElementType>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct ReorderedElement {
    pub elementId: i64,
    pub oldSequenceNumber: i64,
    pub newSequenceNumber: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct ReorderResponse {
    /// The elements whose number changed, in the new order.
    pub reorderedElements: Vec<ReorderedElement>,
    pub comment: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
#[schema(example = json!({"elementType": "script", "elementId": 1, "newVersionData": {"text": "INT. HOUSE - NIGHT"}, "comment": "Second draft."}))]
pub struct VersionRequest {
    pub elementType: ElementType,
    #[schema(minimum = 1, maximum = 2147483647)]
    pub elementId: i64,
    /// A JSON object of at most 64 KiB (compact), stored and returned as given.
    #[schema(value_type = Object)]
    pub newVersionData: serde_json::Value,
    #[schema(max_length = 1000)]
    pub comment: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct VersionResponse {
    pub versionNumber: i32,
    pub comment: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[allow(non_snake_case)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only elements of this type.
    pub elementType: Option<ElementType>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 … 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct ElementView {
    pub elementType: ElementType,
    pub elementId: i64,
    pub sequenceNumber: i64,
    /// The newest version.
    pub versionNumber: i32,
    /// The comment the element was created with.
    pub comment: String,
    #[schema(example = "2026-12-01T10:00:00.000Z")]
    pub createdAt: String,
    #[schema(example = "2026-12-01T10:00:00.000Z")]
    pub updatedAt: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct ElementPage {
    /// By element type, then sequence number.
    pub elements: Vec<ElementView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub nextCursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct VersionView {
    pub versionNumber: i32,
    pub comment: String,
    /// The data of the version; null for version 1 (the creation).
    #[schema(value_type = Object, nullable)]
    pub newVersionData: Option<serde_json::Value>,
    #[schema(example = "2026-12-01T10:00:00.000Z")]
    pub createdAt: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct ElementDetail {
    #[serde(flatten)]
    pub element: ElementView,
    /// Oldest first.
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct SyncError {
    pub message: String,
    #[schema(example = "2026-12-01T10:00:00.000Z")]
    pub at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct SyncStatus {
    /// Changes not yet delivered to search.
    pub outboxDepth: i64,
    /// Age of the oldest undelivered change (0 when none).
    pub oldestPendingAgeSeconds: f64,
    /// Changes search refused for good (a 4xx answer).
    pub failedCount: i64,
    /// The last delivery failure this process saw, if any.
    pub lastError: Option<SyncError>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(non_snake_case)]
pub struct ResyncResponse {
    /// Documents queued: one per version of every element.
    pub queued: i64,
}

/// What search's `POST /documents/sync` receives (the seed's document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchDocument {
    /// `{element_type}_{element_id}_{version_number}`.
    pub id: String,
    pub element_type: String,
    pub element_id: i64,
    pub sequence_number: i64,
    pub version_number: i32,
    pub comment: String,
    pub service_name: String,
}

impl SearchDocument {
    /// Element ids repeat across element types, so the type is part of the document id:
    /// `{element_id}_{version_number}` alone would make a script and a character overwrite
    /// each other in search.
    pub fn id_of(element_type: &str, element_id: i64, version: i32) -> String {
        format!("{element_type}_{element_id}_{version}")
    }
}

/// The body of `POST /documents/sync`.
#[derive(Debug, Serialize)]
pub struct SyncRequest<'a> {
    pub operation: &'a str,
    pub document: &'a serde_json::Value,
}
