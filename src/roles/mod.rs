//! The roles fountain can serve. Adding a role means a folder under `roles/`, a Cargo feature,
//! and one line in [`ALL`].

use std::fmt;

use actix_web::web;

use crate::platform::server::{RoleContext, RoleState};

#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "kms")]
pub mod kms;
#[cfg(feature = "notify")]
pub mod notify;
#[cfg(feature = "search")]
pub mod search;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "sequence")]
pub mod sequence;
#[cfg(feature = "twofa")]
pub mod twofa;

/// Everything the role host needs to know to serve a role.
pub struct RoleSpec {
    /// The `--role` name, also the metrics `role` label and the `[roles.<name>]` config key.
    pub name: &'static str,
    /// Human title shown on the landing page and in the OpenAPI `info`.
    pub title: &'static str,
    /// One-line description (≤300 characters, as the ecosystem contract requires).
    pub description: &'static str,
    pub default_port: u16,
    /// Registers the role's own endpoints (the standard ones are added by the host).
    pub routes: fn(&mut web::ServiceConfig, &RoleContext),
    /// The OpenAPI document of the role's own endpoints, merged with the standard ones.
    pub openapi: fn() -> utoipa::openapi::OpenApi,
    /// Builds the role's shared state once per process, before it serves (may block).
    pub init: fn(&RoleContext) -> Result<Option<RoleState>, String>,
}

impl RoleSpec {
    /// A role that so far serves only the standard endpoints.
    pub const fn standard_only(
        name: &'static str,
        title: &'static str,
        default_port: u16,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            title,
            description,
            default_port,
            routes: no_routes,
            openapi: no_operations,
            init: no_state,
        }
    }
}

impl fmt::Debug for RoleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleSpec").field("name", &self.name).field("port", &self.default_port).finish()
    }
}

fn no_routes(_: &mut web::ServiceConfig, _: &RoleContext) {}

fn no_state(_: &RoleContext) -> Result<Option<RoleState>, String> {
    Ok(None)
}

fn no_operations() -> utoipa::openapi::OpenApi {
    utoipa::openapi::OpenApiBuilder::new().build()
}

/// Every role compiled into this binary, in start-up order (identity first, the edge last).
pub const ALL: &[&RoleSpec] = &[
    #[cfg(feature = "kms")]
    &kms::ROLE,
    #[cfg(feature = "secrets")]
    &secrets::ROLE,
    #[cfg(feature = "notify")]
    &notify::ROLE,
    #[cfg(feature = "twofa")]
    &twofa::ROLE,
    #[cfg(feature = "search")]
    &search::ROLE,
    #[cfg(feature = "sequence")]
    &sequence::ROLE,
    #[cfg(feature = "gateway")]
    &gateway::ROLE,
];

/// Parses `--role`: `all`, or a comma-separated list of role names, each at most once.
pub fn select(spec: &str) -> Result<Vec<&'static RoleSpec>, String> {
    let spec = spec.trim();
    if spec == "all" {
        return Ok(ALL.to_vec());
    }
    let mut selected: Vec<&'static RoleSpec> = Vec::new();
    for name in spec.split(',').map(str::trim) {
        let role = find(name).ok_or_else(|| {
            let known: Vec<&str> = ALL.iter().map(|r| r.name).collect();
            format!("unknown role {name:?} (known: all, {})", known.join(", "))
        })?;
        if selected.iter().any(|r| r.name == role.name) {
            return Err(format!("role {name:?} is listed twice"));
        }
        selected.push(role);
    }
    Ok(selected)
}

/// The role with exactly this name, if compiled in.
pub fn find(name: &str) -> Option<&'static RoleSpec> {
    ALL.iter().copied().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_accepts_all_and_lists_and_refuses_unknown_or_repeated_names() {
        assert_eq!(select("all").unwrap().len(), ALL.len());
        let picked: Vec<_> = select("kms, gateway").unwrap().iter().map(|r| r.name).collect();
        assert_eq!(picked, ["kms", "gateway"]);
        assert!(select("kms,kms").unwrap_err().contains("twice"));
        assert!(select("kmsx").unwrap_err().contains("unknown role \"kmsx\""));
        assert!(select("").is_err());
    }

    #[test]
    fn names_ports_and_descriptions_follow_the_contract() {
        let mut ports: Vec<u16> = ALL.iter().map(|r| r.default_port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), ALL.len(), "default ports must be distinct");
        for role in ALL {
            assert!(role.description.chars().count() <= 300, "{}", role.name);
            assert!(!role.description.is_empty());
        }
    }
}
