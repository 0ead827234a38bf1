//! Turning policy text into a policy set the gateway may enforce: parsed,
//! each policy named by its `@id` annotation, and validated strictly
//! against the schema. What fails is reported with the policy's id and
//! the line and column at fault, so that a bad file can be fixed from the
//! message alone.

use super::schema::schema;
use cedar_policy::{Effect, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::Arc;

/// A validated policy set, and what it was built from.
#[derive(Debug)]
pub struct LoadedSet {
    pub(super) set: PolicySet,
    /// Hex SHA-256 of the text: for a file, what `sha256sum` prints.
    pub hash: Arc<str>,
}

/// The policies in force without `GATEWAY_POLICY_FILE`: today's rules, as
/// policies. The roles are the configured ones.
pub fn default_policy_text(release_role: &str, audit_role: &str) -> String {
    let release_role = cedar_string(release_role);
    let audit_role = cedar_string(audit_role);
    format!(
        r#"// The gateway's policies when GATEWAY_POLICY_FILE is not set.

// A caller holding the release role may release any disk.
@id("release-role")
permit (principal, action == Action::"ReleaseDisk", resource is Disk)
when {{ principal.roles.contains({release_role}) }};

// A caller reads its own calls with GetRelease ...
@id("read-own-calls")
permit (principal, action == Action::"GetRelease", resource is Release)
when {{
  resource has caller_issuer && resource has caller_subject &&
  resource.caller_issuer == principal.issuer && resource.caller_subject == principal.subject
}};

// ... and the audit role reads every call.
@id("audit-role-reads-all")
permit (principal, action == Action::"GetRelease", resource is Release)
when {{ principal.roles.contains({audit_role}) }};
"#
    )
}

/// A Cedar string literal; Cedar reads Rust's escapes.
fn cedar_string(text: &str) -> String {
    format!("{text:?}")
}

impl LoadedSet {
    /// Parses and validates `text`; `origin` (a variable and path) prefixes
    /// every problem.
    pub fn from_text(text: &str, origin: &str) -> anyhow::Result<Self> {
        let parsed: PolicySet = text
            .parse()
            .map_err(|e: cedar_policy::ParseErrors| problem(origin, None, text, &e))?;
        let set = named_by_annotation(parsed).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let validated = Validator::new(schema().clone()).validate(&set, ValidationMode::Strict);
        let mut problems = validated
            .validation_errors()
            .map(|e| problem_line(Some(e.policy_id()), text, e))
            .collect::<Vec<_>>();
        if !problems.is_empty() {
            problems.sort();
            anyhow::bail!(
                "{origin} does not validate against the gateway's policy schema:\n  {}",
                problems.join("\n  ")
            );
        }
        // An empty file (one being rewritten, caught between truncation and
        // write) validates, and would deny every call until the next change:
        // a set must permit something. Stopping releases is a freeze's job.
        if !set.policies().any(|p| p.effect() == Effect::Permit) {
            anyhow::bail!(
                "{origin} holds no permit policy, so it would deny every call: not loaded (to stop releases, use `zenlayer-gateway freeze`)"
            );
        }
        Ok(Self {
            set,
            hash: hex::encode(Sha256::digest(text.as_bytes())).into(),
        })
    }

    /// The policies' ids, in a stable order.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids = self
            .set
            .policies()
            .map(|p| p.id().to_string())
            .collect::<Vec<_>>();
        ids.sort();
        ids
    }
}

/// The same policies, each under the id its `@id("…")` annotation gives
/// (Cedar numbers them `policy0`, `policy1`, … otherwise), so that the ids
/// the audit trail and callers see are the ones their authors chose.
fn named_by_annotation(parsed: PolicySet) -> anyhow::Result<PolicySet> {
    let mut named = PolicySet::new();
    for policy in parsed.policies() {
        let policy = match policy.annotation("id") {
            Some(id) => policy.new_id(PolicyId::new(id)),
            None => policy.clone(),
        };
        let id = policy.id().clone();
        named.add(policy).map_err(|_| {
            anyhow::anyhow!("two policies have the id {id}: each @id must be unique")
        })?;
    }
    Ok(named)
}

fn problem(
    origin: &str,
    id: Option<&PolicyId>,
    text: &str,
    error: &dyn Diagnostic,
) -> anyhow::Error {
    anyhow::anyhow!("{origin} does not parse: {}", problem_line(id, text, error))
}

/// `policy <id>, line L, column C: <what>` for the first place the
/// diagnostic points at.
fn problem_line(id: Option<&PolicyId>, text: &str, error: &dyn Diagnostic) -> String {
    let mut line = String::new();
    if let Some(id) = id {
        let _ = write!(line, "policy {id}, ");
    }
    let first = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    match first {
        Some(offset) => {
            let (row, column) = line_and_column(text, offset);
            let _ = write!(line, "line {row}, column {column}: ");
        }
        None => line.push_str("(no position): "),
    }
    line.push_str(&error.to_string());
    if let Some(help) = error.help() {
        let _ = write!(line, " ({help})");
    }
    line
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let row = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (row, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policies_validate_with_any_configured_role() {
        for (release, audit) in [
            ("disk:release", "disk:audit"),
            ("a \"quoted\" \\ role", "é"),
        ] {
            let set =
                LoadedSet::from_text(&default_policy_text(release, audit), "default").unwrap();
            assert_eq!(
                set.policy_ids(),
                ["audit-role-reads-all", "read-own-calls", "release-role"]
            );
        }
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let text = "@id(\"ok\")\npermit (principal, action, resource);\n\npermit (principal, action resource);\n";
        let error = LoadedSet::from_text(text, "GATEWAY_POLICY_FILE p.cedar").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("GATEWAY_POLICY_FILE p.cedar does not parse: line 4, column"),
            "{message}"
        );
    }

    #[test]
    fn a_policy_that_does_not_fit_the_schema_is_named_with_its_position() {
        let text = "@id(\"fine\")\npermit (principal, action == Action::\"ReleaseDisk\", resource);\n@id(\"typo\")\nforbid (principal, action == Action::\"ReleaseDisk\", resource)\n  when { resource.zonee == \"FRA-A\" };\n";
        let message = LoadedSet::from_text(text, "F").unwrap_err().to_string();
        assert!(
            message.contains("policy typo, line 5, column 10:"),
            "{message}"
        );
    }

    #[test]
    fn an_optional_attribute_must_be_tested_before_use() {
        let text = "forbid (principal, action == Action::\"ReleaseDisk\", resource)\n  when { resource.zone == \"FRA-A\" };\n";
        let message = LoadedSet::from_text(text, "F").unwrap_err().to_string();
        assert!(message.contains("policy policy0, line 2"), "{message}");
    }

    #[test]
    fn two_policies_with_one_id_are_refused() {
        let text = "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);";
        let message = LoadedSet::from_text(text, "F").unwrap_err().to_string();
        assert!(message.contains("two policies have the id a"), "{message}");
    }

    #[test]
    fn readme_shows_the_default_policies_and_the_schema_as_they_are() {
        let readme = include_str!("../../README.md");
        assert!(readme.contains(&default_policy_text("disk:release", "disk:audit")));
        assert!(readme.contains(super::super::schema::SCHEMA_TEXT));
    }

    #[test]
    fn the_hash_is_the_texts_sha256() {
        let set = LoadedSet::from_text("permit (principal, action, resource);", "F").unwrap();
        assert_eq!(
            &*set.hash,
            "70dc852b2e8a27d8bbc7dea7c75fb0f79f634420db4b4ccc0c1c8b6e8a432baa"
        );
    }

    #[test]
    fn a_set_that_permits_nothing_is_refused() {
        for text in [
            "",
            "  \n",
            "@id(\"no\") forbid (principal, action, resource);",
        ] {
            let message = LoadedSet::from_text(text, "F").unwrap_err().to_string();
            assert!(message.contains("F holds no permit policy"), "{message}");
        }
    }
}
