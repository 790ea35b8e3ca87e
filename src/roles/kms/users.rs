//! Users: registration, login and administration.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::accounts;
use super::session::issue_session;
use super::state::{KmsState, RegistrationRefusal};
use super::{store, ROLE_NAME};
use crate::platform::audit::Outcome;
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::Json;
use crate::platform::guards::{Admin, MaybeAuthenticated, Origin, SteppedUpAdmin};
use crate::platform::unit::Who;

/// bcrypt reads at most 72 bytes; longer passwords would be silently truncated.
const MAX_PASSWORD_BYTES: usize = 72;
const MIN_PASSWORD_CHARS: usize = 12;
const DEFAULT_ROLE: &str = "user";
/// Most roles one user may hold.
const MAX_ROLES: usize = 16;
/// Keyed-hash context of the tag that stands for an unknown username in the audit trail.
const UNKNOWN_USER_CONTEXT: &str = "kms-audit-unknown-username";

/// The roles kms knows by name; any other role is a custom one (for gateway rules), named with
/// the same characters.
pub const BUILT_IN_ROLES: [&str; 2] = [crate::platform::auth::ADMIN_ROLE, DEFAULT_ROLE];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "alice", "password": "correct horse battery staple", "roles": "user"}))]
pub struct RegisterRequest {
    /// 3–64 characters of `A-Z a-z 0-9 . _ -`; stored lower-case.
    #[schema(min_length = 3, max_length = 64, pattern = "^[A-Za-z0-9._-]{3,64}$")]
    pub username: String,
    /// At least 12 characters, at most 72 bytes (bcrypt's limit), no control characters.
    #[schema(min_length = 12, max_length = 72, format = Password)]
    pub password: String,
    /// Roles to grant, as an array or a comma-separated string (`"admin,user"`); honoured only
    /// for an admin caller (anonymous callers get `user`).
    pub roles: Option<RoleList>,
}

/// Role names as a JSON array (`["admin", "user"]`) or, as the seed's clients send them, one
/// comma-separated string (`"admin,user"`). Names are trimmed and empty parts dropped; the
/// names themselves are checked by [`validate_roles`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleList(pub Vec<String>);

impl RoleList {
    /// Splits a comma-separated list, trimming each name and dropping empty parts.
    pub fn parse(text: &str) -> Self {
        Self::from_names(text.split(','))
    }

    fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        RoleList(names.into_iter().map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect())
    }
}

impl<'de> Deserialize<'de> for RoleList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RoleList;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of role names or a comma-separated string of them")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RoleList, E> {
                Ok(RoleList::parse(text))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RoleList, A::Error> {
                let mut names: Vec<String> = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(RoleList::from_names(names.iter().map(String::as_str)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl<'s> ToSchema<'s> for RoleList {
    fn schema() -> (&'s str, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType};
        let name = || ObjectBuilder::new().schema_type(SchemaType::String);
        let comma_separated = name()
            .description(Some("Comma-separated role names"))
            .example(Some(serde_json::json!("admin,user")));
        let array = ArrayBuilder::new().items(name()).max_items(Some(MAX_ROLES));
        let schema = OneOfBuilder::new()
            .item(comma_separated)
            .item(array)
            .description(Some("Role names, each 1-32 characters of a-z 0-9 _ - (not `service`)"));
        ("RoleList", schema.into())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    pub message: String,
    pub username: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "alice", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    #[schema(min_length = 3, max_length = 64, pattern = "^[A-Za-z0-9._-]{3,64}$")]
    pub username: String,
    #[schema(max_length = 72, format = Password)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub username: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: chrono::NaiveDateTime,
}

impl From<store::User> for UserView {
    fn from(user: store::User) -> Self {
        let roles = user.role_list();
        Self {
            username: user.username,
            roles,
            disabled: user.disabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// Opaque cursor from a previous page.
    pub after: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"roles": ["user"], "disabled": false}))]
pub struct UpdateUserRequest {
    /// The user's new roles (replacing the old ones), as an array or a comma-separated string.
    pub roles: Option<RoleList>,
    pub disabled: Option<bool>,
}

pub fn validate_username(raw: &str) -> ApiResult<String> {
    let valid_chars = raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !(3..=64).contains(&raw.len()) || !valid_chars {
        return Err(ApiError::validation("username", "must be 3-64 characters of A-Z a-z 0-9 . _ -"));
    }
    Ok(raw.to_ascii_lowercase())
}

/// A new password: 12 characters to 72 bytes (bcrypt's limit, never silently truncated) and no
/// control characters (other bcrypt implementations stop at NUL, so a migrated hash would accept
/// a shorter password).
pub fn validate_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::validation(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    validate_password_bytes(password)
}

/// What any password must be before it is hashed or checked: at most 72 bytes, no control
/// characters. A longer one could only match by bcrypt's truncation; none can contain NUL.
fn validate_password_bytes(password: &str) -> ApiResult<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::validation("password", format!("must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    if password.chars().any(char::is_control) {
        return Err(ApiError::validation("password", "must not contain control characters"));
    }
    Ok(())
}

/// Role names are short identifiers; duplicates are folded. `service` is never granted to a
/// user: it marks service tokens, and a user holding it could pass for the service of the
/// same name.
pub fn validate_roles(roles: &[String]) -> ApiResult<Vec<String>> {
    if roles.len() > MAX_ROLES {
        return Err(ApiError::validation("roles", format!("at most {MAX_ROLES} roles")));
    }
    let mut clean: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        validate_role(role).map_err(|reason| ApiError::validation("roles", reason))?;
        if !clean.contains(role) {
            clean.push(role.clone());
        }
    }
    Ok(clean)
}

/// Why `role` cannot be granted, if it cannot.
pub fn validate_role(role: &str) -> Result<(), String> {
    if role == crate::platform::auth::SERVICE_ROLE {
        return Err(format!("`{role}` is reserved for service tokens"));
    }
    let ok = (1..=32).contains(&role.len())
        && role.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "each role must be one of {} or a custom role of 1-32 characters of a-z 0-9 _ -",
            BUILT_IN_ROLES.join(", ")
        ))
    }
}

/// Hashes a new password with the configured bcrypt cost on the blocking pool, holding a
/// registration permit (registrations never take every core from logins).
async fn hash_password(state: &KmsState, password: String) -> ApiResult<String> {
    let cost = state.config.bcrypt_cost;
    let _permit = state.hashing.for_registration().await?;
    state.metrics.password_hashing.with_label_values(&["registration"]).inc();
    web::block(move || bcrypt::hash(password, cost))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Checks a password against a bcrypt hash on the blocking pool, holding a login permit.
async fn verify_password(state: &KmsState, password: String, hash: String) -> ApiResult<bool> {
    let _permit = state.hashing.for_login().await?;
    state.metrics.password_hashing.with_label_values(&["login"]).inc();
    web::block(move || bcrypt::verify(password, &hash).unwrap_or(false)).await.map_err(ApiError::internal)
}

/// How the audit trail names a username that has no account: a keyed-hash tag, never the text
/// (people type passwords into the username field). The same name gets the same tag, so
/// repeated attempts still correlate.
fn unknown_user_tag(state: &KmsState, username: &str) -> String {
    let hash = state.master_key.lookup_hash(UNKNOWN_USER_CONTEXT, username.as_bytes());
    format!("unknown:{}", &hash[..12])
}

/// Register a user
///
/// Creates a user. Anonymous callers always get the role `user`; only an admin token may grant roles.
#[utoipa::path(
    post, path = "/register", operation_id = "registerUser", tag = "Users",
    request_body = RegisterRequest,
    // Anonymous, or an admin's token to grant roles: a token that is sent must be valid.
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "User created", body = RegisterResponse),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 422, description = "Invalid username, password or roles", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address or in total", body = ErrorBody)
    )
)]
pub async fn register(
    state: web::Data<KmsState>,
    origin: Origin,
    caller: MaybeAuthenticated,
    body: Json<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let username = validate_username(&body.username)?;
    validate_password(&body.password)?;
    let admin = caller.admin();
    let roles = match (admin, &body.roles) {
        (Some(_), Some(requested)) => validate_roles(&requested.0)?,
        _ => vec![DEFAULT_ROLE.to_string()],
    };
    // Granting more than the default role is a privileged change like PATCH /users: the admin
    // must have stepped up (the gateway cannot tell, since /register is public there).
    let grants_more = roles.iter().any(|role| role != DEFAULT_ROLE);
    if grants_more && admin.is_some_and(|claims| claims.mfa != Some(true)) {
        return Err(crate::platform::auth::mfa_required(
            "granting roles needs a step-up token: verify a second factor with twofa first",
        ));
    }
    // Anonymous registration costs a bcrypt hash: limited per address and for the instance
    // before any hashing. An admin's registrations are not counted.
    if admin.is_none() {
        if let Err(refusal) = state.registrations.take(&origin.addr) {
            let (limit, retry_after) = match refusal {
                RegistrationRefusal::Address(wait) => ("registration_address", wait),
                RegistrationRefusal::Global(wait) => ("registration_global", wait),
            };
            state.metrics.limited.with_label_values(&[limit]).inc();
            state.observe_limiters();
            return Err(ApiError::from_code(ErrorCode::RateLimited).with_retry_after(retry_after));
        }
        state.observe_limiters();
    }
    let hash = hash_password(&state, body.password).await?;
    let actor = admin.map_or_else(|| username.clone(), |c| c.sub.clone());
    let (name, granted) = (username.clone(), roles.clone());
    state
        .db
        .change(Who::new(ROLE_NAME, actor, origin), move |tx| {
            accounts::create(tx, &name, &hash, &granted).map_err(ApiError::from)
        })
        .await?;
    Ok(HttpResponse::Created().json(RegisterResponse { message: "user created".into(), username, roles }))
}

/// Log in
///
/// Exchanges a username and password for an access token and a rotating refresh token.
#[utoipa::path(
    post, path = "/login", operation_id = "loginUser", tag = "Sessions",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong username or password (one answer for both)", body = ErrorBody),
        (status = 422, description = "A username or password no account can have", body = ErrorBody),
        (status = 429, description = "Too many failures for this user or address", body = ErrorBody)
    )
)]
pub async fn login(
    state: web::Data<KmsState>,
    origin: Origin,
    body: Json<LoginRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    // Before anything else: a name or password no account can have costs no lookup, no bcrypt,
    // no limiter entry and no audit row.
    let username = validate_username(&body.username)?;
    validate_password_bytes(&body.password)?;
    if let Err(retry_after) = state.limiter.check(&username, &origin.addr) {
        state.metrics.logins.with_label_values(&["limited"]).inc();
        return Err(ApiError::from_code(ErrorCode::RateLimited).with_retry_after(retry_after));
    }
    let user = {
        let name = username.clone();
        state.db.run(move |conn| store::find_user(conn, &name)).await?
    };
    // Unknown users are checked against a decoy hash so that both failures take as long.
    let hash = user.as_ref().map_or_else(|| state.decoy_hash.clone(), |u| u.password_hash.clone());
    let matches = verify_password(&state, body.password, hash).await?;
    let known = user.is_some();
    let user = user.filter(|u| matches && !u.disabled);
    let Some(user) = user else {
        state.limiter.record_failure(&username, &origin.addr);
        state.observe_limiters();
        state.metrics.logins.with_label_values(&["failure"]).inc();
        let audited = if known { username } else { unknown_user_tag(&state, &username) };
        let entry_name = audited.clone();
        state
            .db
            .change(Who::new(ROLE_NAME, audited, origin), move |tx| {
                tx.audit_outcome("login", &entry_name, Outcome::Denied, None)
            })
            .await?;
        return Err(ApiError::new(ErrorCode::Unauthorized, "invalid username or password"));
    };
    state.metrics.logins.with_label_values(&["success"]).inc();
    let tokens = issue_session(&state, &user, origin).await?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(tokens))
}

/// List users
///
/// Admin only. Users in creation order, one page at a time.
#[utoipa::path(
    get, path = "/users", operation_id = "listUsers", tag = "Users", params(ListParams),
    responses((status = 200, description = "A page of users", body = UserList), (status = 403, description = "Not an admin", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_users(
    state: web::Data<KmsState>,
    _admin: Admin,
    params: web::Query<ListParams>,
) -> ApiResult<web::Json<UserList>> {
    let after = match &params.after {
        Some(cursor) => cursor
            .parse::<i64>()
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "after: not a cursor from this API"))?,
        None => 0,
    };
    let limit = crate::platform::extract::page_limit(params.limit, 50, 200)?;
    let users = state.db.run(move |conn| store::list_users(conn, after, limit)).await?;
    let next = (users.len() as i64 == limit).then(|| users.last().map(|u| u.id.to_string())).flatten();
    Ok(web::Json(UserList { users: users.into_iter().map(UserView::from).collect(), next }))
}

/// Get a user
///
/// Admin only. One user's roles and state.
#[utoipa::path(
    get, path = "/users/{username}", operation_id = "getUser", tag = "Users",
    params(("username" = String, Path, description = "The username", example = "alice")),
    responses((status = 200, description = "The user", body = UserView), (status = 404, description = "No such user", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_user(
    state: web::Data<KmsState>,
    _admin: Admin,
    path: web::Path<String>,
) -> ApiResult<web::Json<UserView>> {
    let username = path.into_inner().to_ascii_lowercase();
    let user = state.db.run(move |conn| store::find_user(conn, &username)).await?;
    user.map(|u| web::Json(UserView::from(u)))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such user"))
}

/// Update a user
///
/// Admin only. Sets roles and/or disables the user; disabling ends the user's sessions.
#[utoipa::path(
    patch, path = "/users/{username}", operation_id = "updateUser", tag = "Users",
    params(("username" = String, Path, description = "The username", example = "alice")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The updated user", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Would leave no enabled admin", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn update_user(
    state: web::Data<KmsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    path: web::Path<String>,
    body: Json<UpdateUserRequest>,
) -> ApiResult<web::Json<UserView>> {
    let username = path.into_inner().to_ascii_lowercase();
    let body = body.into_inner();
    let roles = body.roles.map(|r| validate_roles(&r.0)).transpose()?;
    let disabled = body.disabled;
    let user = state
        .db
        .change(Who::new(ROLE_NAME, admin.0.sub, origin), move |tx| {
            accounts::update(tx, &username, roles.as_deref(), disabled).map_err(ApiError::from)
        })
        .await?;
    Ok(web::Json(UserView::from(user)))
}

/// Delete a user
///
/// Admin only. Removes the user and ends their sessions; the last enabled admin cannot be deleted.
#[utoipa::path(
    delete, path = "/users/{username}", operation_id = "deleteUser", tag = "Users",
    params(("username" = String, Path, description = "The username", example = "alice")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Would leave no enabled admin", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn delete_user(
    state: web::Data<KmsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let username = path.into_inner().to_ascii_lowercase();
    state
        .db
        .change(Who::new(ROLE_NAME, admin.0.sub, origin), move |tx| {
            accounts::delete(tx, &username).map_err(ApiError::from)
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
