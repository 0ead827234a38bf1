//! Compiling a class or object as OCSF does: the definitions along its
//! `extends` chain, root first, each with the profiles it includes, merged
//! over the dictionary's entry for every attribute.

use super::Schema;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One attribute of a compiled class or object.
#[derive(Debug, Clone)]
pub struct Attribute {
    /// The dictionary's entry with every definition's overrides merged in.
    pub spec: Value,
    /// The profile that brings it, if only a profile does.
    pub profile: Option<String>,
}

impl Attribute {
    pub fn requirement(&self) -> Option<&str> {
        self.spec["requirement"].as_str()
    }
}

#[derive(Debug)]
pub struct Compiled {
    pub name: String,
    pub attributes: BTreeMap<String, Attribute>,
    pub constraints: Option<Value>,
    pub profiles: BTreeSet<String>,
}

impl Schema {
    pub(super) fn compile_class(&self, name: &str) -> Compiled {
        let chain: Vec<Value> = self.class_chain(name).into_iter().cloned().collect();
        self.compile(name, chain)
    }

    /// `None` when the object's file is not shipped.
    pub(super) fn compile_object(&self, name: &str) -> Option<Compiled> {
        let mut chain = Vec::new();
        let mut next = Some(name.to_owned());
        while let Some(name) = next {
            let object = self.read(&format!("objects/{name}.json"))?;
            next = object["extends"].as_str().map(str::to_owned);
            chain.push(object);
        }
        Some(self.compile(name, chain))
    }

    /// `chain` is leaf first.
    fn compile(&self, name: &str, chain: Vec<Value>) -> Compiled {
        let mut compiled = Compiled {
            name: name.to_owned(),
            attributes: BTreeMap::new(),
            constraints: None,
            profiles: BTreeSet::new(),
        };
        for definition in chain.iter().rev() {
            let attributes = definition["attributes"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for profile in attributes
                .get("$include")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let profile = self
                    .read(profile.as_str().unwrap())
                    .expect("an included profile is shipped");
                let profile_name = profile["name"].as_str().unwrap().to_owned();
                for (attribute, spec) in profile["attributes"].as_object().unwrap() {
                    merge_attribute(&mut compiled, attribute, spec, Some(profile_name.clone()));
                }
            }
            for (attribute, spec) in attributes.iter().filter(|(k, _)| *k != "$include") {
                merge_attribute(&mut compiled, attribute, spec, None);
            }
            if !definition["constraints"].is_null() {
                compiled.constraints = Some(definition["constraints"].clone());
            }
            for profile in definition["profiles"].as_array().into_iter().flatten() {
                compiled
                    .profiles
                    .insert(profile.as_str().unwrap().to_owned());
            }
        }
        for (attribute, compiled_attribute) in compiled.attributes.iter_mut() {
            let mut spec = self.dictionary["attributes"][attribute].clone();
            assert!(
                spec.is_object(),
                "{name}.{attribute} is not in the shipped dictionary"
            );
            deep_merge(&mut spec, &compiled_attribute.spec);
            compiled_attribute.spec = spec;
        }
        compiled
    }
}

/// A definition's entry over what is already there. An explicit
/// `"profile": null` frees an attribute a profile brought (as API Activity
/// does for `api`).
fn merge_attribute(compiled: &mut Compiled, name: &str, spec: &Value, profile: Option<String>) {
    let entry = compiled
        .attributes
        .entry(name.to_owned())
        .or_insert_with(|| Attribute {
            spec: Value::Object(Map::new()),
            profile: profile.clone(),
        });
    if profile.is_some() && entry.profile.is_none() && !entry.spec.as_object().unwrap().is_empty() {
        // Already defined unconditionally: the profile adds nothing.
    } else if profile.is_some() {
        entry.profile = profile;
    } else if let Some(explicit) = spec.get("profile") {
        entry.profile = explicit.as_str().map(str::to_owned);
    }
    deep_merge(&mut entry.spec, spec);
}

fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                deep_merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over.clone(),
    }
}
