//! `--filter KEY=VALUE` as Docker reads it: the same key given twice
//! accepts either value, different keys must all accept. Each command
//! names the keys it knows, so a misspelt one fails in one line instead of
//! filtering nothing.

use std::collections::BTreeMap;

pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn parse(items: &[String], known: &[&str]) -> Result<Filters, String> {
        let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in items {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!("bad filter {item:?}: use KEY=VALUE"));
            };
            if !known.contains(&key) {
                return Err(format!(
                    "unknown filter {key:?}: filter by {}",
                    known.join(", ")
                ));
            }
            filters
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
        Ok(Filters(filters))
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// True when no `key` filter is given or one of its values is accepted.
    pub fn any(&self, key: &str, accept: impl Fn(&str) -> bool) -> bool {
        self.0
            .get(key)
            .is_none_or(|values| values.iter().any(|v| accept(v)))
    }

    /// Docker's `label` filter: every one given must match: `KEY` (any
    /// value) or `KEY=VALUE`, against `KEY=VALUE` labels.
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        self.values("label")
            .iter()
            .all(|wanted| match wanted.split_once('=') {
                Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
                None => labels.contains_key(wanted.as_str()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_or_different_keys_and() {
        let items = ["status=running", "status=exited", "label=a"].map(String::from);
        let filters = Filters::parse(&items, &["status", "label"]).unwrap();
        assert!(filters.any("status", |v| v == "exited"));
        assert!(!filters.any("status", |v| v == "created"));
        assert!(filters.any("name", |_| false), "no name filter accepts all");
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        assert!(filters.labels_match(&labels));
        assert!(!filters.labels_match(&BTreeMap::new()));
        let exact = Filters::parse(&["label=a=2".into()], &["label"]).unwrap();
        assert!(!exact.labels_match(&labels));
        assert_eq!(
            Filters::parse(&["colour=red".into()], &["status", "label"])
                .err()
                .unwrap(),
            "unknown filter \"colour\": filter by status, label"
        );
        assert!(Filters::parse(&["status".into()], &["status"]).is_err());
    }
}
