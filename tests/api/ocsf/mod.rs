//! A validator for OCSF events, from the schema's own definitions: the
//! part of OCSF 1.8.0 under `schema/` (copied from ocsf/ocsf-schema by
//! `extract-schema`). It compiles a class or object as the schema does —
//! the `extends` chain, included profiles, the dictionary's types and enums
//! beneath — and checks an event against it: no attribute the class does
//! not define, every required one present, each value of its type (with the
//! type's regex, range and length), enum values defined, siblings that name
//! their enum's caption, and `at_least_one` / `just_one` constraints.

mod compile;

use compile::{Attribute, Compiled};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The schema files shipped beside this module.
#[derive(Debug)]
pub struct Schema {
    dir: PathBuf,
    dictionary: Value,
    categories: Value,
    classes: HashMap<String, Value>,
    pub version: String,
}

impl Schema {
    pub fn load() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/ocsf/schema");
        let read = |rel: &str| -> Value {
            let text = std::fs::read_to_string(dir.join(rel))
                .unwrap_or_else(|e| panic!("read OCSF schema file {rel}: {e}"));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {rel}: {e}"))
        };
        let classes = [
            "events/base_event.json",
            "events/application/application.json",
            "events/application/api_activity.json",
        ]
        .into_iter()
        .map(|rel| {
            let class = read(rel);
            (class["name"].as_str().unwrap().to_owned(), class)
        })
        .collect();
        Self {
            version: read("version.json")["version"].as_str().unwrap().to_owned(),
            dictionary: read("dictionary.json"),
            categories: read("categories.json"),
            classes,
            dir,
        }
    }

    /// Every way `event` departs from class `class_name`; empty when it is
    /// a valid event of that class.
    pub fn validate(&self, class_name: &str, event: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let mut class = self.compile_class(class_name);
        self.classify(class_name, &mut class);
        let profiles: Vec<String> = event["metadata"]["profiles"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for profile in &profiles {
            if !class.profiles.contains(profile) {
                problems.push(format!(
                    "metadata.profiles: class {class_name} has no profile {profile:?}"
                ));
            }
        }
        let checker = Checker {
            schema: self,
            profiles: &profiles,
        };
        checker.object("", event, &class, &mut problems);
        self.check_classification(class_name, event, &mut problems);
        problems
    }

    /// The class's uid, its category's uid, and their captions.
    fn identity(&self, class_name: &str) -> (u64, u64, String, String) {
        let chain = self.class_chain(class_name);
        let uid = chain.iter().find_map(|c| c["uid"].as_u64()).unwrap();
        let category = chain.iter().find_map(|c| c["category"].as_str()).unwrap();
        let category = &self.categories["attributes"][category];
        let category_uid = category["uid"].as_u64().unwrap();
        let caption = chain[0]["caption"].as_str().unwrap().to_owned();
        let category_caption = category["caption"].as_str().unwrap().to_owned();
        (
            category_uid * 1000 + uid,
            category_uid,
            caption,
            category_caption,
        )
    }

    /// The enums the schema generates for a class, as its compiler does:
    /// `class_uid` and `category_uid` name this class and its category, and
    /// `type_uid` has one value per activity, captioned `<class>: <activity>`.
    fn classify(&self, class_name: &str, class: &mut Compiled) {
        let (class_uid, category_uid, caption, category_caption) = self.identity(class_name);
        let activities = class.attributes["activity_id"].spec["enum"].clone();
        let mut types = serde_json::Map::new();
        for (id, activity) in activities.as_object().unwrap() {
            let uid = class_uid * 100 + id.parse::<u64>().unwrap();
            let name = format!("{caption}: {}", activity["caption"].as_str().unwrap());
            types.insert(uid.to_string(), serde_json::json!({ "caption": name }));
        }
        let mut set = |attribute: &str, values: Value| {
            class.attributes.get_mut(attribute).unwrap().spec["enum"] = values;
        };
        set(
            "class_uid",
            serde_json::json!({ class_uid.to_string(): { "caption": caption } }),
        );
        set(
            "category_uid",
            serde_json::json!({ category_uid.to_string(): { "caption": category_caption } }),
        );
        set("type_uid", Value::Object(types));
    }

    /// `class_uid`, `category_uid` and `type_uid` as the schema computes them.
    fn check_classification(&self, class_name: &str, event: &Value, problems: &mut Vec<String>) {
        let (class_uid, category_uid, _, _) = self.identity(class_name);
        let expect = |name: &str, want: u64, problems: &mut Vec<String>| {
            if event[name].as_u64() != Some(want) {
                problems.push(format!("{name} is {}, the schema says {want}", event[name]));
            }
        };
        expect("category_uid", category_uid, problems);
        expect("class_uid", class_uid, problems);
        if let Some(activity) = event["activity_id"].as_u64() {
            expect("type_uid", class_uid * 100 + activity, problems);
        }
    }

    fn class_chain(&self, name: &str) -> Vec<&Value> {
        let mut chain = Vec::new();
        let mut next = Some(name.to_owned());
        while let Some(name) = next {
            let class = &self.classes[&name];
            chain.push(class);
            next = class["extends"].as_str().map(str::to_owned);
        }
        chain
    }

    fn read(&self, rel: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.dir.join(rel)).ok()?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {rel}: {e}")))
    }
}

struct Checker<'a> {
    schema: &'a Schema,
    profiles: &'a [String],
}

impl Checker<'_> {
    fn applies(&self, attribute: &Attribute) -> bool {
        attribute
            .profile
            .as_ref()
            .is_none_or(|p| self.profiles.contains(p))
    }

    fn object(&self, path: &str, value: &Value, compiled: &Compiled, problems: &mut Vec<String>) {
        let Some(fields) = value.as_object() else {
            problems.push(format!("{path}: {value} is not an object"));
            return;
        };
        let at = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        for (name, value) in fields {
            match compiled.attributes.get(name) {
                None => problems.push(format!(
                    "{}: not an attribute of {}",
                    at(name),
                    compiled.name
                )),
                Some(attribute) if !self.applies(attribute) => problems.push(format!(
                    "{}: belongs to profile {:?}, which metadata.profiles does not apply",
                    at(name),
                    attribute.profile.as_deref().unwrap_or_default()
                )),
                Some(attribute) => {
                    self.value(&at(name), value, attribute, problems);
                    self.enumeration(&at(name), value, attribute, fields, problems);
                }
            }
        }
        for (name, attribute) in &compiled.attributes {
            let present = fields.get(name).is_some_and(|v| !v.is_null());
            if attribute.requirement() == Some("required") && self.applies(attribute) && !present {
                problems.push(format!(
                    "{}: required by {} but missing",
                    at(name),
                    compiled.name
                ));
            }
        }
        self.constraints(path, fields, compiled, problems);
    }

    fn constraints(
        &self,
        path: &str,
        fields: &serde_json::Map<String, Value>,
        compiled: &Compiled,
        problems: &mut Vec<String>,
    ) {
        let Some(constraints) = compiled.constraints.as_ref().and_then(Value::as_object) else {
            return;
        };
        for (rule, names) in constraints {
            let names: Vec<&str> = names
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let present = names
                .iter()
                .filter(|n| fields.get(**n).is_some_and(|v| !v.is_null()))
                .count();
            let ok = match rule.as_str() {
                "at_least_one" => present >= 1,
                "just_one" => present == 1,
                other => panic!("constraint {other} is not known to this validator"),
            };
            if !ok {
                problems.push(format!(
                    "{path}: {} breaks {rule} of {names:?}",
                    compiled.name
                ));
            }
        }
    }

    fn value(&self, path: &str, value: &Value, attribute: &Attribute, problems: &mut Vec<String>) {
        if attribute.spec["is_array"].as_bool() == Some(true) {
            match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.single(&format!("{path}[{i}]"), item, attribute, problems);
                    }
                }
                None => problems.push(format!("{path}: {value} is not an array")),
            }
        } else {
            self.single(path, value, attribute, problems);
        }
    }

    fn single(&self, path: &str, value: &Value, attribute: &Attribute, problems: &mut Vec<String>) {
        let type_name = attribute.spec["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no type"));
        match type_name {
            "object" if !value.is_object() => {
                problems.push(format!("{path}: {value} is not an object"))
            }
            "object" | "json_t" => {}
            scalar if scalar.ends_with("_t") => self.scalar(path, value, scalar, problems),
            object => match self.schema.compile_object(object) {
                Some(compiled) => self.object(path, value, &compiled, problems),
                None => problems.push(format!(
                    "{path}: object {object} is not among the shipped definitions"
                )),
            },
        }
    }

    /// A value of a dictionary type: its base type, and every regex, range
    /// and length limit along the way to it.
    fn scalar(&self, path: &str, value: &Value, type_name: &str, problems: &mut Vec<String>) {
        let types = &self.schema.dictionary["types"]["attributes"];
        let mut name = type_name;
        loop {
            let definition = &types[name];
            assert!(definition.is_object(), "{path}: type {name} is not defined");
            if let (Some(regex), Some(text)) = (definition["regex"].as_str(), value.as_str()) {
                let regex =
                    regex::Regex::new(regex).unwrap_or_else(|e| panic!("regex of {name}: {e}"));
                if !regex.is_match(text) {
                    problems.push(format!("{path}: {text:?} does not match {name}"));
                }
            }
            if let (Some(max), Some(text)) = (definition["max_len"].as_u64(), value.as_str())
                && text.len() as u64 > max
            {
                problems.push(format!("{path}: longer than {name} allows ({max})"));
            }
            if let (Some(range), Some(number)) = (definition["range"].as_array(), value.as_i64()) {
                let (low, high) = (range[0].as_i64().unwrap(), range[1].as_i64().unwrap());
                if !(low..=high).contains(&number) {
                    problems.push(format!(
                        "{path}: {number} is outside {name}'s {low}..={high}"
                    ));
                }
            }
            match definition["type"].as_str() {
                Some(base) => name = base,
                None => break,
            }
        }
        let fits = match name {
            "string_t" => value.is_string(),
            "integer_t" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "long_t" => value.is_i64() || value.is_u64(),
            "float_t" => value.is_number(),
            "boolean_t" => value.is_boolean(),
            other => panic!("base type {other} is not known to this validator"),
        };
        if !fits {
            problems.push(format!("{path}: {value} is not a {type_name}"));
        }
    }

    /// An enum's value must be one it defines; its sibling, when present,
    /// must be that value's caption (except for 99, Other, whose sibling
    /// is the source's own word).
    fn enumeration(
        &self,
        path: &str,
        value: &Value,
        attribute: &Attribute,
        fields: &serde_json::Map<String, Value>,
        problems: &mut Vec<String>,
    ) {
        let Some(values) = attribute.spec["enum"].as_object() else {
            return;
        };
        let key = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let Some(defined) = values.get(&key) else {
            problems.push(format!(
                "{path}: {key} is not one of {:?}",
                values.keys().collect::<Vec<_>>()
            ));
            return;
        };
        let sibling = attribute.spec["sibling"].as_str();
        if let Some(sibling) = sibling.filter(|_| key != "99")
            && let Some(given) = fields.get(sibling)
            && given != &defined["caption"]
        {
            problems.push(format!(
                "{path}: {key} is {}, but {sibling} says {given}",
                defined["caption"]
            ));
        }
    }
}
