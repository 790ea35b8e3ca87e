//! The Key Management Service role: users, login, EdDSA JWTs with JWKS, and per-service API keys.

pub mod accounts;
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
use crate::platform::error::{ApiResult, ErrorBody};
use crate::platform::guards::{Admin, Origin};
use crate::platform::role::{About, Mount, Provisioning, Role, RoleContext};
use crate::platform::server::Platform;
use crate::platform::standard::BearerAuth;
use crate::platform::unit::Who;

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
        users::register, users::login, session::token, session::logout, session::jwks,
        session::rotate_signing_key, users::list_users, users::get_user, users::update_user,
        users::delete_user, keys::create_key, keys::list_keys, keys::get_key, keys::update_key, keys::delete_key,
        keys::rotate_key, keys::verify_key, list_audit
    ),
    components(schemas(
        users::RegisterRequest, users::RegisterResponse, users::LoginRequest, users::UserView,
        users::UserList, users::UpdateUserRequest, session::TokenResponse, session::TokenRequest,
        session::RotatedSigningKey, keys::CreateKeyRequest, keys::KeyResponse, keys::KeyMetadata,
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
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<Entry>,
    pub next: Option<i64>,
}

/// List audit records
///
/// Admin only. kms audit records, newest first: actor, action, target, outcome, address, request id.
#[utoipa::path(
    get, path = "/audit", operation_id = "listAuditRecords", tag = "Audit", params(AuditParams),
    responses((status = 200, description = "A page of records", body = AuditPage), (status = 403, description = "Not an admin", body = ErrorBody)),
    security(("bearer" = []))
)]
async fn list_audit(
    state: web::Data<KmsState>,
    _admin: Admin,
    params: web::Query<AuditParams>,
) -> ApiResult<web::Json<AuditPage>> {
    let limit = crate::platform::extract::page_limit(params.limit, 100, audit::MAX_PAGE)?;
    let query = audit::Query {
        role: Some(ROLE_NAME.to_string()),
        actor: params.actor.clone(),
        before_id: params.before,
        limit,
    };
    let entries = state.db.run(move |conn| audit::list(conn, &query)).await?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(web::Json(AuditPage { entries, next }))
}

/// `fountain admin create-user`: creates a user directly in the database (the first admin).
pub fn create_user_offline(
    platform: &Platform,
    username: &str,
    password: &str,
    roles: &[String],
) -> Result<String, String> {
    let username = users::validate_username(username).map_err(|e| e.message)?;
    let roles = users::validate_roles(roles).map_err(|e| e.message)?;
    users::validate_password(password).map_err(|e| e.message)?;
    let cost = platform.config.role_settings::<config::KmsConfig>(ROLE_NAME)?.bcrypt_cost;
    let hash = bcrypt::hash(password, cost).map_err(|e| e.to_string())?;
    let who = Who::new(ROLE_NAME, "cli", Origin::local("cli"));
    platform.db.change_blocking(who, |tx| accounts::create(tx, &username, &hash, &roles)).map_err(
        |e| match e {
            accounts::AccountError::Taken => format!("user {username} already exists"),
            other => other.to_string(),
        },
    )?;
    Ok(username)
}
