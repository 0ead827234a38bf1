//! Reading an action's JSON parameters with Zenlayer's parameter error codes.
//!
//! Zenlayer tells a missing parameter (`MISSING_PARAMETER`) from one of the
//! wrong JSON type (`INVALID_PARAMETER_TYPE`) and from one out of range
//! (`INVALID_PARAMETER_LESS_MINIMUM` / `..._EXCEED_MAXIMUM`); a client that
//! maps codes to behaviour needs the simulator to make the same distinctions.

use serde_json::{Map, Value};

use super::reply::ApiError;

/// The top-level fields of a request body. `null` counts as absent, as it
/// does for the official SDKs, which leave unset fields out.
#[derive(Debug)]
pub(crate) struct Params(Map<String, Value>);

impl Params {
    /// An empty body reads as `{}`, so it fails on the first required
    /// parameter rather than as unparseable.
    pub fn parse(body: &[u8]) -> Result<Params, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params(Map::new()));
        }
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => Ok(Params(fields)),
            _ => Err(ApiError::bad_request(
                "INVALID_PARAMETER_TYPE",
                "the request body must be a JSON object",
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    pub fn required_str(&self, name: &str) -> Result<&str, ApiError> {
        match self.optional_str(name)? {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ApiError::bad_request(
                "MISSING_PARAMETER",
                format!("{name} is required"),
            )),
        }
    }

    pub fn optional_str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// A list of strings, as long as the caller likes.
    pub fn optional_str_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        self.optional_list(
            name,
            usize::MAX,
            |item| item.as_str().map(str::to_owned),
            "an array of strings",
        )
    }

    pub fn optional_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(_) => Err(wrong_type(name, "true or false")),
        }
    }

    /// A list of at most `max` items, each read by `item`; a longer one is
    /// `INVALID_PARAMETER_EXCEED_LENGTH`, as Zenlayer caps its list filters.
    pub fn optional_list<T>(
        &self,
        name: &str,
        max: usize,
        item: impl Fn(&Value) -> Option<T>,
        expected: &str,
    ) -> Result<Option<Vec<T>>, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let items = value.as_array().ok_or_else(|| wrong_type(name, expected))?;
        if items.len() > max {
            return Err(ApiError::bad_request(
                "INVALID_PARAMETER_EXCEED_LENGTH",
                format!("{name} may hold at most {max} items, not {}", items.len()),
            ));
        }
        items
            .iter()
            .map(item)
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| wrong_type(name, expected))
    }

    /// An integer in `min..=max`, or `default` when absent.
    pub fn int_in_range(
        &self,
        name: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        let number = value
            .as_i64()
            .ok_or_else(|| wrong_type(name, "an integer"))?;
        // Widened so that negative numbers compare correctly with the bounds.
        let number = i128::from(number);
        if number < i128::from(min) {
            return Err(ApiError::bad_request(
                "INVALID_PARAMETER_LESS_MINIMUM",
                format!("{name} must be at least {min}"),
            ));
        }
        if number > i128::from(max) {
            return Err(ApiError::bad_request(
                "INVALID_PARAMETER_EXCEED_MAXIMUM",
                format!("{name} must be at most {max}"),
            ));
        }
        Ok(u64::try_from(number).expect("within min..=max"))
    }
}

fn wrong_type(name: &str, expected: &str) -> ApiError {
    ApiError::bad_request(
        "INVALID_PARAMETER_TYPE",
        format!("{name} must be {expected}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.unwrap_err().code
    }

    #[test]
    fn parameter_errors_carry_zenlayers_codes() {
        let params =
            Params::parse(br#"{"diskId": 7, "pageSize": 1001, "pageNum": 0, "ids": [1]}"#).unwrap();
        assert_eq!(
            code(params.required_str("diskId")),
            "INVALID_PARAMETER_TYPE"
        );
        assert_eq!(code(params.required_str("other")), "MISSING_PARAMETER");
        assert_eq!(
            code(params.int_in_range("pageSize", 20, 1, 1000)),
            "INVALID_PARAMETER_EXCEED_MAXIMUM"
        );
        assert_eq!(
            code(params.int_in_range("pageNum", 1, 1, u64::MAX)),
            "INVALID_PARAMETER_LESS_MINIMUM"
        );
        assert_eq!(
            code(params.optional_str_list("ids")),
            "INVALID_PARAMETER_TYPE"
        );
        assert_eq!(
            code(params.optional_list("ids", 0, |_| Some(()), "nothing")),
            "INVALID_PARAMETER_EXCEED_LENGTH"
        );
        assert_eq!(
            code(params.optional_bool("diskId")),
            "INVALID_PARAMETER_TYPE"
        );
        assert_eq!(code(Params::parse(b"not json")), "INVALID_PARAMETER_TYPE");
        assert_eq!(code(Params::parse(b"[1]")), "INVALID_PARAMETER_TYPE");
    }

    #[test]
    fn empty_bodies_and_nulls_read_as_absent() {
        let params = Params::parse(b"  ").unwrap();
        assert_eq!(code(params.required_str("diskId")), "MISSING_PARAMETER");
        let params = Params::parse(br#"{"diskId": null, "pageSize": null}"#).unwrap();
        assert_eq!(code(params.required_str("diskId")), "MISSING_PARAMETER");
        assert_eq!(params.int_in_range("pageSize", 20, 1, 1000).unwrap(), 20);
    }
}
