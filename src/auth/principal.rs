//! Who is calling, as established from a verified token, and the proof that
//! they may release disks.

use super::AuthError;
use serde_json::Value;

/// The caller behind a verified token. Holds what the audit trail keeps;
/// never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`.
    pub subject: String,
    /// `iss`.
    pub issuer: String,
    /// `azp`, else `client_id`: the OAuth client the token was issued to.
    pub client_id: Option<String>,
    /// `jti`.
    pub token_id: Option<String>,
    /// The roles found under the configured claim path.
    pub roles: Vec<String>,
    /// The groups found under the configured claim path (`JWT_GROUPS_CLAIM`),
    /// for policies to decide on.
    pub groups: Vec<String>,
}

/// Proof that a principal holds the release role. Only [`Principal::authorize`]
/// makes one, and forwarding a release requires one.
#[derive(Debug, Clone)]
pub struct Authorized {
    principal: Principal,
}

impl Authorized {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

impl Principal {
    /// Reads the principal from verified claims; `roles_claim` and
    /// `groups_claim` are dotted paths.
    pub(super) fn from_claims(
        claims: &Value,
        roles_claim: &str,
        groups_claim: &str,
    ) -> Result<Self, AuthError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Self {
            subject: text("sub").ok_or_else(|| AuthError::MissingClaim("sub".into()))?,
            issuer: text("iss").ok_or_else(|| AuthError::MissingClaim("iss".into()))?,
            client_id: text("azp").or_else(|| text("client_id")),
            token_id: text("jti"),
            roles: roles_at(claims, roles_claim),
            groups: roles_at(claims, groups_claim),
        })
    }

    /// Default deny: only a principal holding `role` is authorized.
    pub fn authorize(self, role: &str, roles_claim: &str) -> Result<Authorized, AuthError> {
        if self.roles.iter().any(|r| r == role) {
            Ok(Authorized { principal: self })
        } else {
            Err(AuthError::MissingRole {
                subject: self.subject,
                role: role.to_owned(),
                claim: roles_claim.to_owned(),
            })
        }
    }
}

/// Roles (or groups) under a dotted claim path (`realm_access.roles`), given
/// as an array of strings or as one space-separated string (OAuth `scope`, `scp`).
fn roles_at(claims: &Value, path: &str) -> Vec<String> {
    let found = path
        .split('.')
        .try_fold(claims, |node, segment| node.get(segment));
    match found {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(list)) => list.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn principal(claims: Value, path: &str) -> Principal {
        Principal::from_claims(&claims, path, "groups").unwrap()
    }

    #[test]
    fn roles_are_read_from_arrays_strings_and_nested_paths() {
        let base = json!({"sub": "svc", "iss": "idp"});
        let mut array = base.clone();
        array["roles"] = json!(["a", "disk:release"]);
        assert_eq!(principal(array, "roles").roles, ["a", "disk:release"]);
        let mut scope = base.clone();
        scope["scope"] = json!("openid disk:release");
        assert_eq!(principal(scope, "scope").roles, ["openid", "disk:release"]);
        let mut nested = base;
        nested["realm_access"] = json!({"roles": ["disk:release"]});
        assert_eq!(
            principal(nested, "realm_access.roles").roles,
            ["disk:release"]
        );
    }

    #[test]
    fn the_role_must_be_under_the_configured_path() {
        let claims = json!({"sub": "svc", "iss": "idp", "scope": "disk:release"});
        let error = principal(claims, "roles")
            .authorize("disk:release", "roles")
            .unwrap_err();
        assert!(matches!(error, AuthError::MissingRole { .. }));
        assert_eq!(
            error.to_string(),
            "caller svc lacks the role disk:release (looked for in claim roles)"
        );
    }

    #[test]
    fn groups_are_read_like_roles_from_their_own_claim() {
        let claims = json!({"sub": "s", "iss": "i", "groups": ["team-billing", "oncall"]});
        assert_eq!(
            principal(claims.clone(), "roles").groups,
            ["team-billing", "oncall"]
        );
        let nested = json!({"sub": "s", "iss": "i", "idp": {"teams": "a b"}});
        let p = Principal::from_claims(&nested, "roles", "idp.teams").unwrap();
        assert_eq!(p.groups, ["a", "b"]);
    }

    #[test]
    fn client_id_comes_from_azp_or_client_id() {
        let azp =
            json!({"sub": "s", "iss": "i", "azp": "billing", "client_id": "other", "jti": "j1"});
        let p = principal(azp, "roles");
        assert_eq!(
            (p.client_id.as_deref(), p.token_id.as_deref()),
            (Some("billing"), Some("j1"))
        );
        let client = json!({"sub": "s", "iss": "i", "client_id": "cleanup"});
        assert_eq!(
            principal(client, "roles").client_id.as_deref(),
            Some("cleanup")
        );
    }
}
