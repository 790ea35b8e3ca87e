//! The Key Management Service role: users, login, EdDSA JWTs with JWKS, and per-service API keys.

pub mod accounts;
pub mod admin;
mod config;
pub mod keys;
mod schema;
pub mod session;
pub mod signing;
mod state;
mod store;
pub mod users;

use std::sync::Arc;

use actix_web::web;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use self::state::KmsState;
use crate::platform::audit::{self, Entry};
use crate::platform::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::platform::guards::Admin;
use crate::platform::role::{About, Mount, Provisioning, Role, RoleContext};
use crate::platform::server::Platform;
use crate::platform::standard::BearerAuth;

const ROLE_NAME: &str = "kms";

const ABOUT: About = About {
    name: ROLE_NAME,
    title: "Key Management Service",
    description: "FountainAI's source of identity: users and login, EdDSA-signed JWTs published as a JWKS, refresh and revocation, and per-service API keys with rotation, grace periods and constant-time verification.",
    default_port: 8003,
};

pub struct Kms;

impl Role for Kms {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        KmsApi::openapi()
    }

    fn check_config(&self, config: &crate::config::Config) -> Result<(), String> {
        config.role_settings::<config::KmsConfig>(ROLE_NAME)?.validate()
    }

    fn provisions_for_others(&self) -> bool {
        true
    }

    /// Every role of an all-in-one process gets its own API key (its service credential).
    fn provision(&self, provisioning: &Provisioning<'_>) -> Result<(), String> {
        for role in provisioning.roles {
            let key = keys::ensure_service_key(provisioning.platform, role)?;
            provisioning.store_credential(role, &key)?;
        }
        Ok(())
    }

    /// A fresh installation has no admin: say how to create the first one.
    fn next_step(&self, platform: &Platform) -> Option<String> {
        let mut conn = platform.db.conn().ok()?;
        let admins = store::count_admins(&mut conn).ok()?;
        (admins == 0).then(|| {
            "create the first admin: fountain admin create-user --username ops --role admin \
             (in this folder; the password is prompted, or read from stdin)"
                .to_string()
        })
    }

    fn start(&self, ctx: &RoleContext) -> Result<Mount, String> {
        let state = web::Data::new(state::init(ctx)?);
        // The process's verifier checks tokens with kms's own keys: no JWKS round trip here.
        ctx.verifier.use_local_keys(Arc::new(signing::LocalKeyRing {
            keys: state.keys.clone(),
            db: ctx.db.clone(),
            master_key: ctx.master_key.clone(),
        }));
        // Idle limiter entries go on a timer (and at once past a size bound): a spray of
        // distinct names or addresses cannot keep memory.
        let pruned = state.clone();
        ctx.spawn("kms-limiter-prune", async move {
            let mut ticks = actix_web::rt::time::interval(state::PRUNE_INTERVAL);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                pruned.prune_limiters();
            }
        });
        Ok(Mount::routes(move |cfg| routes(cfg, state.clone())))
    }
}

fn routes(cfg: &mut web::ServiceConfig, state: web::Data<KmsState>) {
    cfg.app_data(state);
    cfg.service(web::resource("/register").post(users::register))
        .service(web::resource("/login").post(users::login))
        .service(web::resource("/token").post(session::token))
        .service(web::resource("/logout").post(session::logout))
        .service(web::resource("/step-up").post(session::step_up))
        .service(web::resource("/.well-known/jwks.json").get(session::jwks))
        .service(web::resource("/signing-keys/rotate").post(session::rotate_signing_key))
        .service(web::resource("/users").get(users::list_users))
        .service(
            web::resource("/users/{username}")
                .get(users::get_user)
                .patch(users::update_user)
                .delete(users::delete_user),
        )
        .service(web::resource("/keys").post(keys::create_key).get(keys::list_keys))
        // Registered before /keys/{service_name} so that "verify" is never taken for a name.
        .service(web::resource("/keys/verify").post(keys::verify_key))
        .service(
            web::resource("/keys/{service_name}")
                .get(keys::get_key)
                .patch(keys::update_key)
                .delete(keys::delete_key),
        )
        .service(web::resource("/keys/{service_name}/rotate").post(keys::rotate_key))
        .service(web::resource("/audit").get(list_audit));
}

#[derive(OpenApi)]
#[openapi(
    paths(
        users::register, users::login, session::token, session::logout, session::step_up, session::jwks,
        session::rotate_signing_key, users::list_users, users::get_user, users::update_user,
        users::delete_user, keys::create_key, keys::list_keys, keys::get_key, keys::update_key, keys::delete_key,
        keys::rotate_key, keys::verify_key, list_audit
    ),
    components(schemas(
        users::RegisterRequest, users::RoleList, users::RegisterResponse, users::LoginRequest, users::UserView,
        users::UserList, users::UpdateUserRequest, session::TokenResponse, session::TokenRequest, session::GrantType,
        session::RotatedSigningKey, crate::platform::contracts::StepUpGrant, keys::CreateKeyRequest, keys::KeyResponse, keys::KeyMetadata,
        keys::KeyList, keys::RotateKeyRequest, keys::RotatedKey, keys::VerifyRequest,
        keys::VerifyResponse, keys::VerifyCode, keys::UpdateKeyRequest, keys::UpdatedKey, AuditPage, Entry, ErrorBody
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "Users", description = "Accounts and their roles"),
        (name = "Sessions", description = "Login, tokens, logout and signing keys"),
        (name = "API keys", description = "Per-service API keys"),
        (name = "Audit", description = "Who did what, when and from where")
    )
)]
struct KmsApi;

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditParams {
    /// Only entries older than this id (the `next` of a previous page).
    pub before: Option<i64>,
    /// Only entries by this actor (exact).
    pub actor: Option<String>,
    /// Only entries written by this role (exact name: gateway, kms, secrets, notify, search,
    /// sequence, twofa); all roles when absent.
    #[param(example = "kms")]
    pub role: Option<String>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<Entry>,
    pub next: Option<i64>,
}

/// The `role` filter: a role this binary knows, by its exact name.
fn audit_role(role: Option<&str>) -> ApiResult<Option<String>> {
    let Some(role) = role else { return Ok(None) };
    match crate::roles::find(role) {
        Some(known) => Ok(Some(known.name().to_string())),
        None => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("role: not a role name (known: {})", crate::roles::names().join(", ")),
        )),
    }
}

/// List audit records
///
/// Admin only. Every role's audit records, newest first (filter by role or actor): role, actor, action, target, outcome, address, request id, and the record's place in its role's hash chain (chainSeq, hash).
#[utoipa::path(
    get, path = "/audit", operation_id = "listAuditRecords", tag = "Audit", params(AuditParams),
    responses(
        (status = 200, description = "A page of records", body = AuditPage),
        (status = 400, description = "Unknown role or bad paging", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
async fn list_audit(
    state: web::Data<KmsState>,
    _admin: Admin,
    params: web::Query<AuditParams>,
) -> ApiResult<web::Json<AuditPage>> {
    let limit = crate::platform::extract::page_limit(params.limit, 100, audit::MAX_PAGE)?;
    let query = audit::Query {
        role: audit_role(params.role.as_deref())?,
        actor: params.actor.clone(),
        before_id: params.before,
        limit,
    };
    let entries = state.db.run(move |conn| audit::list(conn, &query)).await?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(web::Json(AuditPage { entries, next }))
}

/// Creates a user directly in the database, as the actor `cli` (the first admin; tests).
pub fn create_user_offline(
    platform: &Platform,
    username: &str,
    password: &str,
    roles: &[String],
) -> Result<String, String> {
    admin::OfflineAdmin::new(platform, "cli").create_user(username, password, roles)
}
