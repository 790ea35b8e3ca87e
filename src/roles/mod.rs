//! The roles fountain can serve. Adding a role means a folder under `roles/`, a Cargo feature,
//! and one line in [`ALL`].

use crate::platform::role::Role;

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

/// Every role compiled into this binary, in start-up order (identity first, the edge last).
pub const ALL: &[&dyn Role] = &[
    #[cfg(feature = "kms")]
    &kms::Kms,
    #[cfg(feature = "secrets")]
    &secrets::Secrets,
    #[cfg(feature = "notify")]
    &notify::Notify,
    #[cfg(feature = "twofa")]
    &twofa::Twofa,
    #[cfg(feature = "search")]
    &search::Search,
    #[cfg(feature = "sequence")]
    &sequence::Sequence,
    #[cfg(feature = "gateway")]
    &gateway::Gateway,
];

/// Parses `--role`: `all`, or a comma-separated list of role names, each at most once.
pub fn select(spec: &str) -> Result<Vec<&'static dyn Role>, String> {
    let spec = spec.trim();
    if spec == "all" {
        return Ok(ALL.to_vec());
    }
    let mut selected: Vec<&'static dyn Role> = Vec::new();
    for name in spec.split(',').map(str::trim) {
        let role = find(name)
            .ok_or_else(|| format!("unknown role {name:?} (known: all, {})", names().join(", ")))?;
        if selected.iter().any(|r| r.name() == role.name()) {
            return Err(format!("role {name:?} is listed twice"));
        }
        selected.push(role);
    }
    Ok(selected)
}

/// The role with exactly this name, if compiled in.
pub fn find(name: &str) -> Option<&'static dyn Role> {
    ALL.iter().copied().find(|r| r.name() == name)
}

/// The names of every role compiled in, in start-up order.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|r| r.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_accepts_all_and_lists_and_refuses_unknown_or_repeated_names() {
        assert_eq!(select("all").unwrap().len(), ALL.len());
        let picked: Vec<_> = select("kms, gateway").unwrap().iter().map(|r| r.name()).collect();
        assert_eq!(picked, ["kms", "gateway"]);
        assert!(select("kms,kms").unwrap_err().contains("twice"));
        assert!(select("kmsx").unwrap_err().contains("unknown role \"kmsx\""));
        assert!(select("").is_err());
    }

    #[test]
    fn names_ports_and_descriptions_follow_the_contract() {
        let mut ports: Vec<u16> = ALL.iter().map(|r| r.default_port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), ALL.len(), "default ports must be distinct");
        for role in ALL {
            assert!(role.description().chars().count() <= 300, "{}", role.name());
            assert!(!role.description().is_empty());
        }
    }
}
