//! A JSON object built field by field, leaving out what the trail does not
//! hold: OCSF events carry an attribute only when it has a value.

use serde_json::{Map, Value};

#[derive(Debug, Default)]
pub struct Fields(Map<String, Value>);

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// Sets `key` only when there is a value.
    pub fn maybe<V: Into<Value>>(self, key: &str, value: Option<V>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    /// Sets `key` only when the object built for it has any field.
    pub fn nested(self, key: &str, fields: Fields) -> Self {
        let value = (!fields.0.is_empty()).then_some(fields);
        self.maybe(key, value)
    }
}

impl From<Fields> for Value {
    fn from(fields: Fields) -> Self {
        Value::Object(fields.0)
    }
}
