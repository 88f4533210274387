//! Query strings as dockerd reads them: first value of a key, its lenient booleans, and
//! the `filters` parameter in both of its JSON shapes.

use std::collections::{BTreeMap, BTreeSet};

/// A bad query parameter; a 400 that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid value for {key}: {value:?} is not a number")]
    NotANumber { key: String, value: String },
    #[error("invalid filter: {0}")]
    Filters(String),
    #[error("invalid filter '{0}'")]
    UnknownFilter(String),
}

/// The parameters of one request's query string, decoded.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Query { pairs }
    }

    /// The first value of `key`, as Go's `Form.Get`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order (`/images/get?names=a&names=b`).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// dockerd's boolean: absent, empty, `0`, `no`, `false` and `none` (any case) are
    /// false; anything else (`1`, `true`, `True`) is true.
    pub fn bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
        })
    }

    /// As [`Query::bool`], but `default` when the key is absent or empty.
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(v) if v.trim().is_empty() => default,
            Some(_) => self.bool(key),
        }
    }

    /// An integer parameter; absent or empty is `None`.
    pub fn int(&self, key: &str) -> Result<Option<i64>, QueryError> {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| QueryError::NotANumber {
                key: key.to_owned(),
                value: v.to_owned(),
            }),
        }
    }

    /// The `filters` parameter, checked against the keys the route accepts.
    pub fn filters(&self, allowed: &[&str]) -> Result<Filters, QueryError> {
        let filters = match self.get("filters") {
            None => Filters::default(),
            Some(json) => Filters::from_json(json)?,
        };
        if let Some(bad) = filters.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(QueryError::UnknownFilter(bad.clone()));
        }
        Ok(filters)
    }
}

/// `filters`: each key with its set of values. A key's values are alternatives (any may
/// match); different keys must all match.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, BTreeSet<String>>);

impl Filters {
    /// Both shapes clients send: `{"label":["a=b"]}` and the older `{"label":{"a=b":true}}`.
    pub fn from_json(json: &str) -> Result<Filters, QueryError> {
        if json.trim().is_empty() {
            return Ok(Filters::default());
        }
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| QueryError::Filters(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(QueryError::Filters("expected a JSON object".to_owned()));
        };
        let mut out = BTreeMap::new();
        for (key, values) in map {
            let set: BTreeSet<String> = match values {
                serde_json::Value::Array(list) => list
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(QueryError::Filters(format!(
                            "{key}: expected strings, got {other}"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(v, _)| v)
                    .collect(),
                other => {
                    return Err(QueryError::Filters(format!(
                        "{key}: expected a list or a map, got {other}"
                    )))
                }
            };
            out.insert(key, set);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.0.get(key)
    }

    /// True when `key` is not filtered on, or one of its values passes `pred`.
    pub fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        self.0
            .get(key)
            .is_none_or(|values| values.is_empty() || values.iter().any(|v| pred(v)))
    }

    /// `label` filters: each `k` or `k=v` must be among `labels` (all of them must hold,
    /// as dockerd's).
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.get("label").is_none_or(|wanted| {
            wanted.iter().all(|w| match w.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                None => labels.contains_key(w.as_str()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_as_dockerd_reads_them() {
        let q = Query::parse(Some("a=1&b=true&c=False&d=0&e=&f=no&g=yes&h=None&i=TRUE"));
        let got: Vec<bool> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "missing"]
            .iter()
            .map(|k| q.bool(k))
            .collect();
        assert_eq!(
            got,
            [true, true, false, false, false, false, true, false, true, false]
        );
        assert!(q.bool_or("missing", true));
        assert!(q.bool_or("e", true));
        assert!(!q.bool_or("d", true));
    }

    #[test]
    fn first_value_wins_and_decoding() {
        let q = Query::parse(Some("t=10&t=20&name=my%20box&names=a&names=b%2Fc"));
        assert_eq!(q.get("t"), Some("10"));
        assert_eq!(q.get("name"), Some("my box"));
        assert_eq!(q.all("names"), ["a", "b/c"]);
        assert_eq!(q.int("t").unwrap(), Some(10));
        assert_eq!(
            Query::parse(Some("t=ten"))
                .int("t")
                .unwrap_err()
                .to_string(),
            "invalid value for t: \"ten\" is not a number"
        );
        assert_eq!(Query::parse(None).int("t").unwrap(), None);
    }

    #[test]
    fn filters_in_both_shapes() {
        let new = Filters::from_json(r#"{"label":["a=b","c"],"status":["running"]}"#).unwrap();
        let old = Filters::from_json(
            r#"{"label":{"a=b":true,"c":true,"off":false},"status":{"running":true}}"#,
        )
        .unwrap();
        assert_eq!(new, old);
        let mut labels = BTreeMap::new();
        labels.insert("a".to_owned(), "b".to_owned());
        labels.insert("c".to_owned(), "".to_owned());
        assert!(new.labels_match(&labels));
        labels.insert("a".to_owned(), "x".to_owned());
        assert!(!new.labels_match(&labels));
        assert!(new.any("status", |s| s == "running"));
        assert!(!new.any("status", |s| s == "exited"));
        assert!(new.any("name", |_| false), "an absent key filters nothing");
    }

    #[test]
    fn bad_filters_are_named() {
        let q = Query::parse(Some("filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D"));
        assert_eq!(
            q.filters(&["label"]).unwrap_err(),
            QueryError::UnknownFilter("bogus".into())
        );
        assert!(Filters::from_json("[1]").is_err());
        assert!(Filters::from_json(r#"{"label":[1]}"#).is_err());
        assert!(Filters::from_json(r#"{"label":"x"}"#).is_err());
        assert!(Filters::from_json("{").is_err());
        assert_eq!(Filters::from_json("").unwrap(), Filters::default());
    }
}
