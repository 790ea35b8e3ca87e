//! The twofa domain: enrolment, activation with recovery codes, checking a second factor
//! (a TOTP code once per step, or a recovery code once), the lockout after repeated failures,
//! and the step-up itself. Every change is one unit of work with its audit record; a refused
//! code still commits (its failure counts), so refusals travel as the unit's value.

use chrono::NaiveDateTime;

use super::config::TwofaConfig;
use super::kms::KmsClient;
use super::store::{self, Factor};
use super::totp;
use crate::platform::audit::Outcome;
use crate::platform::contracts::TokenResponse;
use crate::platform::crypto::MasterKey;
use crate::platform::db::{Db, DbError};
use crate::platform::error::{ApiError, ErrorCode};
use crate::platform::unit::{Change, Who};

/// Recovery codes handed out at activation.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (without its dash): 50 bits each.
const RECOVERY_CODE_LEN: usize = 10;
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const RECOVERY_CONTEXT: &str = "twofa-recovery-code";

pub struct TwofaState {
    pub db: Db,
    pub master_key: std::sync::Arc<MasterKey>,
    pub config: TwofaConfig,
    pub kms: KmsClient,
}

/// A second factor as a request presents it.
#[derive(Debug)]
pub enum Proof {
    /// A 6-digit TOTP code.
    Code(String),
    /// One of the account's recovery codes.
    Recovery(String),
}

impl Proof {
    /// How the factor was proven, as the audit trail names it.
    pub fn method(&self) -> &'static str {
        match self {
            Proof::Code(_) => "totp",
            Proof::Recovery(_) => "recovery_code",
        }
    }
}

/// The account a request is about: name and identity from the caller's verified token.
#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub uid: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TwofaError {
    #[error("no active second factor: enrol and activate first")]
    NotEnrolled,
    #[error("no enrolment to activate: POST /2fa/enroll first")]
    NothingPending,
    #[error("a second factor is active: enrolling again needs a current code")]
    CodeRequired,
    #[error("the code is wrong, expired or already used")]
    Refused,
    #[error("too many wrong codes: try again later")]
    Locked { retry_after: u64 },
    #[error("no second factor is enrolled for this user")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Internal(String),
}

impl From<TwofaError> for ApiError {
    fn from(err: TwofaError) -> Self {
        match err {
            TwofaError::NotEnrolled | TwofaError::NothingPending => {
                ApiError::new(ErrorCode::Conflict, err.to_string())
            }
            TwofaError::CodeRequired => ApiError::validation("code", err.to_string()),
            TwofaError::Refused => ApiError::new(ErrorCode::Unauthorized, err.to_string()),
            TwofaError::Locked { retry_after } => {
                ApiError::new(ErrorCode::RateLimited, err.to_string()).with_retry_after(retry_after)
            }
            TwofaError::NotFound => ApiError::new(ErrorCode::NotFound, err.to_string()),
            TwofaError::Db(db) => db.into(),
            TwofaError::Internal(reason) => ApiError::internal(reason),
        }
    }
}

/// A unit of work whose refusals commit too: `Ok(Err(refusal))` keeps the failure count.
type Decided<T> = Result<Result<T, TwofaError>, DbError>;

fn flatten<T>(outcome: Result<Result<T, TwofaError>, TwofaError>) -> Result<T, TwofaError> {
    outcome.and_then(|inner| inner)
}

fn seal_context(account: &Account) -> String {
    format!("twofa-totp:{}:{}", account.username, account.uid)
}

fn open_secret(master: &MasterKey, account: &Account, sealed: &str) -> Result<Vec<u8>, DbError> {
    master
        .open(&seal_context(account), sealed)
        .map_err(|e| DbError::Data(format!("second factor of {}: {e}", account.username)))
}

/// The account's factor row, locked for the change, unless it belongs to an earlier account of
/// the same name.
fn own_factor(tx: &mut Change<'_>, account: &Account) -> Result<Option<Factor>, DbError> {
    Ok(store::find_for_update(tx.conn(), &account.username)?.filter(|f| f.uid == account.uid))
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Seconds until `until`, at least one.
fn seconds_until(until: NaiveDateTime) -> u64 {
    (until - store::now()).num_seconds().max(1) as u64
}

/// What an authenticator needs to start.
pub struct Enrolment {
    pub provisioning: totp::Provisioning,
}

/// Starts an enrolment: a new secret, pending until activated. While a factor is active the
/// caller proves it with a current code first (a stolen token alone cannot replace it).
pub async fn enroll(
    state: &TwofaState,
    who: Who,
    account: Account,
    code: Option<String>,
) -> Result<Enrolment, TwofaError> {
    let secret = totp::new_secret();
    let sealed = state.master_key.seal(&seal_context(&account), &secret);
    let username = account.username.clone();
    let (master, config) = (state.master_key.clone(), state.config.clone());
    let outcome = state
        .db
        .change(who, move |tx| -> Decided<()> {
            match own_factor(tx, &account)? {
                Some(factor) if factor.active_secret.is_some() => {
                    let Some(code) = code else { return Ok(Err(TwofaError::CodeRequired)) };
                    if let Err(refused) =
                        check_active(tx, &master, &config, &account, &factor, &Proof::Code(code))?
                    {
                        return Ok(Err(refused));
                    }
                }
                Some(_) => {}
                // A factor left by an earlier account of this name is not this account's.
                None => {
                    store::delete(tx.conn(), &account.username)?;
                }
            }
            store::set_pending(tx.conn(), &account.username, account.uid, &sealed)?;
            tx.audit("2fa.enroll", &account.username, None)?;
            Ok(Ok(()))
        })
        .await;
    flatten(outcome.map_err(TwofaError::from))?;
    // Drawn only once the enrolment is accepted (~1 ms of CPU for the QR code): a refused
    // request costs no drawing.
    let provisioning = totp::provisioning(&secret, &username).map_err(TwofaError::Internal)?;
    Ok(Enrolment { provisioning })
}

/// Activates the pending secret with a code from it; returns the new recovery codes (shown
/// once, stored as keyed hashes). The code's step counts as used.
pub async fn activate(
    state: &TwofaState,
    who: Who,
    account: Account,
    code: String,
) -> Result<Vec<String>, TwofaError> {
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes: Vec<String> = codes.iter().map(|c| recovery_hash(&state.master_key, &account, c)).collect();
    let (master, config) = (state.master_key.clone(), state.config.clone());
    let outcome = state
        .db
        .change(who, move |tx| -> Decided<()> {
            let factor = own_factor(tx, &account)?;
            let Some((factor, pending)) = factor.and_then(|f| f.pending_secret.clone().map(|p| (f, p)))
            else {
                return Ok(Err(TwofaError::NothingPending));
            };
            if let Some(until) = factor.locked_until.filter(|until| *until > store::now()) {
                return Ok(Err(TwofaError::Locked { retry_after: seconds_until(until) }));
            }
            let secret = open_secret(&master, &account, &pending)?;
            let step = totp::matching_step(&secret, &account.username, &code, totp::step_at(unix_now()))
                .map_err(DbError::Data)?;
            let Some(step) = step else {
                return Ok(Err(count_failure(tx, &config, &account)?));
            };
            store::activate(tx.conn(), &account.username, &pending, step)?;
            store::replace_recovery_codes(tx.conn(), &account.username, &hashes)?;
            tx.audit("2fa.activate", &account.username, None)?;
            Ok(Ok(()))
        })
        .await;
    flatten(outcome.map_err(TwofaError::from))?;
    Ok(codes)
}

/// Checks a second factor and asks kms for a step-up token bound to the caller's session.
pub async fn step_up(
    state: &TwofaState,
    who: Who,
    account: Account,
    proof: Proof,
    presented_token: String,
) -> Result<TokenResponse, ApiError> {
    let method = proof.method();
    prove(state, who, account, proof, move |tx, account| {
        tx.audit("2fa.verify", &account.username, Some(serde_json::json!({ "method": method })))
    })
    .await?;
    state.kms.step_up(&presented_token, state.config.step_up_ttl_seconds).await
}

/// Removes the caller's own factor after checking it (a current or a recovery code).
pub async fn disable(state: &TwofaState, who: Who, account: Account, proof: Proof) -> Result<(), TwofaError> {
    prove(state, who, account, proof, |tx, account| {
        store::delete(tx.conn(), &account.username)?;
        tx.audit("2fa.disable", &account.username, None)
    })
    .await
}

/// Removes a user's factor on an admin's word (HTTP with a step-up token, or the command line).
pub fn reset_blocking(db: &Db, who: Who, username: &str) -> Result<(), TwofaError> {
    db.change_blocking(who, |tx| reset_in(tx, username))
}

pub async fn reset(state: &TwofaState, who: Who, username: String) -> Result<(), TwofaError> {
    state.db.change(who, move |tx| reset_in(tx, &username)).await
}

fn reset_in(tx: &mut Change<'_>, username: &str) -> Result<(), TwofaError> {
    if !store::delete(tx.conn(), username)? {
        return Err(TwofaError::NotFound);
    }
    tx.audit("2fa.reset", username, None)?;
    Ok(())
}

/// Checks `proof` against the account's active factor and, when it is accepted, does `then` in
/// the same unit of work. A refusal commits too (it counts towards the lockout).
async fn prove<F>(
    state: &TwofaState,
    who: Who,
    account: Account,
    proof: Proof,
    then: F,
) -> Result<(), TwofaError>
where
    F: FnOnce(&mut Change<'_>, &Account) -> Result<(), DbError> + Send + 'static,
{
    let (master, config) = (state.master_key.clone(), state.config.clone());
    let outcome = state
        .db
        .change(who, move |tx| -> Decided<()> {
            let Some(factor) = own_factor(tx, &account)?.filter(|f| f.active_secret.is_some()) else {
                return Ok(Err(TwofaError::NotEnrolled));
            };
            if let Err(refused) = check_active(tx, &master, &config, &account, &factor, &proof)? {
                return Ok(Err(refused));
            }
            then(tx, &account)?;
            Ok(Ok(()))
        })
        .await;
    flatten(outcome.map_err(TwofaError::from))
}

/// Checks `proof` against the active factor: a locked factor refuses everything; a TOTP code
/// must be of a step later than the last one accepted; a recovery code must be unused. A
/// refusal counts, and the failure that reaches `max_failures` locks the factor (audited).
fn check_active(
    tx: &mut Change<'_>,
    master: &MasterKey,
    config: &TwofaConfig,
    account: &Account,
    factor: &Factor,
    proof: &Proof,
) -> Decided<()> {
    if let Some(until) = factor.locked_until.filter(|until| *until > store::now()) {
        return Ok(Err(TwofaError::Locked { retry_after: seconds_until(until) }));
    }
    let accepted = match proof {
        Proof::Code(code) => {
            let sealed = factor.active_secret.as_deref().unwrap_or_default();
            let secret = open_secret(master, account, sealed)?;
            match totp::matching_step(&secret, &account.username, code, totp::step_at(unix_now()))
                .map_err(DbError::Data)?
            {
                Some(step) => store::take_step(tx.conn(), &account.username, step)?,
                None => false,
            }
        }
        Proof::Recovery(code) => {
            let hash = recovery_hash(master, account, code);
            store::use_recovery_code(tx.conn(), &account.username, &hash)?
        }
    };
    if accepted {
        Ok(Ok(()))
    } else {
        Ok(Err(count_failure(tx, config, account)?))
    }
}

/// Counts a refused code; the one that reaches the limit locks the factor and is answered 429.
fn count_failure(
    tx: &mut Change<'_>,
    config: &TwofaConfig,
    account: &Account,
) -> Result<TwofaError, DbError> {
    let failures = store::add_failure(tx.conn(), &account.username)?;
    if failures < config.max_failures as i32 {
        return Ok(TwofaError::Refused);
    }
    let until = store::now() + chrono::Duration::seconds(config.lockout_seconds as i64);
    store::lock(tx.conn(), &account.username, until)?;
    tx.audit_outcome(
        "2fa.locked",
        &account.username,
        Outcome::Denied,
        Some(
            serde_json::json!({ "failures": failures, "lockedUntil": crate::platform::time::format(until) }),
        ),
    )?;
    Ok(TwofaError::Locked { retry_after: config.lockout_seconds })
}

/// A new recovery code: `xxxxx-xxxxx`, 50 random bits.
fn new_recovery_code() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; RECOVERY_CODE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // 256 is a multiple of 32: masking keeps every character equally likely.
    let chars: String = bytes.iter().map(|b| RECOVERY_ALPHABET[usize::from(b & 31)] as char).collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// The keyed hash a recovery code is stored as, bound to the account. Case, spaces and the
/// dash do not matter when typed back.
fn recovery_hash(master: &MasterKey, account: &Account, code: &str) -> String {
    let normalized: String =
        code.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    master.lookup_hash(
        RECOVERY_CONTEXT,
        format!("{}:{}:{normalized}", account.username, account.uid).as_bytes(),
    )
}

/// An account's factor as `GET /2fa/status` shows it.
#[derive(Debug, Clone)]
pub struct Standing {
    pub enrolled: bool,
    pub pending: bool,
    pub activated_at: Option<NaiveDateTime>,
    pub recovery_codes_left: i64,
    pub locked_until: Option<NaiveDateTime>,
}

/// The standing of `username`'s factor (of the account `uid`, when known).
pub async fn standing(
    state: &TwofaState,
    username: String,
    uid: Option<i64>,
) -> Result<Standing, TwofaError> {
    let standing = state
        .db
        .run(move |conn| {
            let factor = store::find(conn, &username)?.filter(|f| uid.is_none_or(|uid| f.uid == uid));
            let left = match &factor {
                Some(f) if f.active_secret.is_some() => store::recovery_codes_left(conn, &username)?,
                _ => 0,
            };
            Ok::<_, DbError>(Standing {
                enrolled: factor.as_ref().is_some_and(|f| f.active_secret.is_some()),
                pending: factor.as_ref().is_some_and(|f| f.pending_secret.is_some()),
                activated_at: factor.as_ref().and_then(|f| f.activated_at),
                recovery_codes_left: left,
                locked_until: factor.and_then(|f| f.locked_until).filter(|until| *until > store::now()),
            })
        })
        .await?;
    Ok(standing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_random_and_match_however_they_are_typed_back() {
        let master = MasterKey::from_bytes(&[3; 32]);
        let account = Account { username: "ann".into(), uid: 1 };
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_ne!(code, new_recovery_code());
        let hash = recovery_hash(&master, &account, &code);
        assert_eq!(hash, recovery_hash(&master, &account, &code.to_uppercase().replace('-', " ")));
        assert!(!hash.contains(&code.replace('-', "")));
        let other = Account { username: "ann".into(), uid: 2 };
        assert_ne!(hash, recovery_hash(&master, &other, &code), "bound to the account");
    }
}
