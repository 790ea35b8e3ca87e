//! The error responses every operation shares, documented once.
//!
//! Some answers do not depend on what an operation does but on how it is called: a bearer
//! operation answers 401 without a valid token and 403 to a token whose roles do not allow it;
//! an operation with a JSON body answers 400, 408, 413, 415 and 422 through the one JSON
//! extractor; a malformed query parameter is a 400, a malformed name in the path (a service,
//! a username) a 422 naming it; and any operation that reads the database
//! or a peer answers 503 while that dependency is down (and an audited one when its audit record
//! cannot be written). Each of those is one entry under
//! `components.responses`, and every operation refers to the ones that apply to it, unless its
//! own annotation already describes that status more precisely.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi as OpenApiDoc, Ref, RefOr, ResponseBuilder,
    SchemaType,
};

/// A response shared by many operations: its status, its name under `components.responses`
/// and what it means.
struct Shared {
    status: &'static str,
    name: &'static str,
    description: &'static str,
}

const UNAUTHORIZED: Shared = Shared {
    status: "401",
    name: "Unauthorized",
    description: "No valid token: missing, malformed, expired, revoked, or not signed by kms",
};
const FORBIDDEN: Shared = Shared {
    status: "403",
    name: "Forbidden",
    description: "The token is valid but its roles, or a missing second factor, do not allow this operation",
};
const BAD_REQUEST: Shared = Shared {
    status: "400",
    name: "BadRequest",
    description: "The body is not valid JSON, or a query parameter is malformed",
};
const REQUEST_TIMEOUT: Shared =
    Shared { status: "408", name: "RequestTimeout", description: "The request body did not arrive in time" };
const PAYLOAD_TOO_LARGE: Shared = Shared {
    status: "413",
    name: "PayloadTooLarge",
    description: "The request body is larger than the configured limit",
};
const UNSUPPORTED_MEDIA_TYPE: Shared = Shared {
    status: "415",
    name: "UnsupportedMediaType",
    description: "The request body is not of the documented media type (application/json)",
};
const VALIDATION_FAILED: Shared = Shared {
    status: "422",
    name: "ValidationFailed",
    description:
        "The body, or a name in the path, does not match its documented schema; `details` names the field",
};
const UNAVAILABLE: Shared = Shared {
    status: "503",
    name: "Unavailable",
    description:
        "A dependency (the database, kms's keys, a peer) is unavailable, or the request's audit record could \
         not be written (`audit_unavailable`: nothing was changed); retry after `Retry-After` seconds",
};

const ALL: [&Shared; 8] = [
    &UNAUTHORIZED,
    &FORBIDDEN,
    &BAD_REQUEST,
    &REQUEST_TIMEOUT,
    &PAYLOAD_TOO_LARGE,
    &UNSUPPORTED_MEDIA_TYPE,
    &VALIDATION_FAILED,
    &UNAVAILABLE,
];

/// The standard endpoints that answer from memory: they depend on nothing that can be down.
const SELF_CONTAINED: [&str; 4] = ["getLandingPage", "getHealthStatus", "getMetrics", "getOpenApiDocument"];

/// Adds the shared responses to `components.responses` and refers every operation to the ones
/// that apply to it.
pub fn document(doc: &mut OpenApiDoc) {
    let components = doc.components.get_or_insert_with(Default::default);
    for shared in ALL {
        components.responses.insert(shared.name.to_string(), RefOr::T(response(shared)));
    }
    for item in doc.paths.paths.values_mut() {
        for operation in item.operations.values_mut() {
            for shared in applicable(operation) {
                operation.responses.responses.entry(shared.status.to_string()).or_insert_with(|| {
                    RefOr::Ref(Ref::new(format!("#/components/responses/{}", shared.name)))
                });
            }
        }
    }
}

/// The shared responses an operation can give, from how it is called.
fn applicable(operation: &Operation) -> Vec<&'static Shared> {
    let mut shared = Vec::new();
    if accepts_bearer(operation) {
        shared.extend([&UNAUTHORIZED, &FORBIDDEN]);
    }
    if operation.request_body.is_some() {
        shared.extend([&BAD_REQUEST, &REQUEST_TIMEOUT, &PAYLOAD_TOO_LARGE, &UNSUPPORTED_MEDIA_TYPE]);
        shared.push(&VALIDATION_FAILED);
    }
    if has_query_parameters(operation) && !shared.iter().any(|s| s.status == BAD_REQUEST.status) {
        shared.push(&BAD_REQUEST);
    }
    if has_text_path_parameters(operation) && !shared.iter().any(|s| s.status == VALIDATION_FAILED.status) {
        shared.push(&VALIDATION_FAILED);
    }
    let self_contained = operation.operation_id.as_deref().is_some_and(|id| SELF_CONTAINED.contains(&id));
    if !self_contained {
        shared.push(&UNAVAILABLE);
    }
    shared
}

/// Whether any security requirement of the operation names a scheme (an empty requirement,
/// `{}`, only says that calling without a token is allowed too).
fn accepts_bearer(operation: &Operation) -> bool {
    operation.security.iter().flatten().any(|requirement| {
        serde_json::to_value(requirement).is_ok_and(|value| value.as_object().is_some_and(|o| !o.is_empty()))
    })
}

fn has_query_parameters(operation: &Operation) -> bool {
    operation.parameters.iter().flatten().any(|parameter| parameter.parameter_in == ParameterIn::Query)
}

/// Whether a path segment is a name the handler validates (422), not a number (a malformed
/// number is a 404: no such resource can exist).
fn has_text_path_parameters(operation: &Operation) -> bool {
    operation.parameters.iter().flatten().any(|parameter| {
        parameter.parameter_in == ParameterIn::Path
            && serde_json::to_value(&parameter.schema).is_ok_and(|schema| schema["type"] == "string")
    })
}

/// One shared response: the product's JSON error body, and `Retry-After` where it is sent.
fn response(shared: &Shared) -> utoipa::openapi::Response {
    let body = ContentBuilder::new().schema(Ref::from_schema_name("ErrorBody")).build();
    let mut builder =
        ResponseBuilder::new().description(shared.description).content("application/json", body);
    if shared.status == UNAVAILABLE.status {
        let seconds = ObjectBuilder::new().schema_type(SchemaType::Integer).minimum(Some(0.0)).build();
        let header =
            HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait before retrying")).build();
        builder = builder.header("Retry-After", header);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{OperationBuilder, ParameterBuilder};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::security::SecurityRequirement;

    fn statuses(operation: &Operation) -> Vec<&'static str> {
        let mut statuses: Vec<_> = applicable(operation).iter().map(|s| s.status).collect();
        statuses.sort_unstable();
        statuses
    }

    #[test]
    fn a_bearer_operation_with_a_body_documents_auth_body_and_dependency_errors() {
        let operation = OperationBuilder::new()
            .operation_id(Some("createApiKey"))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .request_body(Some(RequestBodyBuilder::new().build()))
            .build();
        assert_eq!(statuses(&operation), ["400", "401", "403", "408", "413", "415", "422", "503"]);
    }

    #[test]
    fn an_optional_token_still_documents_401_and_a_query_documents_400() {
        let operation = OperationBuilder::new()
            .operation_id(Some("listThings"))
            .security(SecurityRequirement::default())
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .parameter(ParameterBuilder::new().name("limit").parameter_in(ParameterIn::Query))
            .build();
        assert_eq!(statuses(&operation), ["400", "401", "403", "503"]);
    }

    #[test]
    fn a_name_in_the_path_documents_422_and_a_number_does_not() {
        let with_path = |kind: SchemaType| {
            let schema = ObjectBuilder::new().schema_type(kind).build();
            let parameter =
                ParameterBuilder::new().name("name").parameter_in(ParameterIn::Path).schema(Some(schema));
            OperationBuilder::new().operation_id(Some("getThing")).parameter(parameter).build()
        };
        assert_eq!(statuses(&with_path(SchemaType::String)), ["422", "503"]);
        assert_eq!(statuses(&with_path(SchemaType::Integer)), ["503"]);
    }

    #[test]
    fn anonymous_in_memory_endpoints_document_nothing_more() {
        let operation = OperationBuilder::new().operation_id(Some("getHealthStatus")).build();
        assert!(statuses(&operation).is_empty());
    }
}
