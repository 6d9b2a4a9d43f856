//! Reading Prometheus text exposition.

#![allow(dead_code)]

use std::collections::BTreeMap;

// ------------------------------------------------------------------ exposition

/// One `/metrics` text: family types and samples.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// `# TYPE` per family.
    pub(crate) types: BTreeMap<String, String>,
    /// (sample name, labels, value).
    pub(crate) samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub(crate) fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                s.types.insert(name.to_owned(), kind.trim().to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample: series value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    (name.to_owned(), parse_labels(body))
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            s.samples.push((name, labels, value));
        }
        s
    }

    /// Whether the exporter shows `family` (a `# TYPE` line or any sample).
    pub(crate) fn has(&self, family: &str) -> bool {
        self.types.contains_key(family) || self.samples.iter().any(|(n, _, _)| n == family)
    }

    /// What moves for `family` among series with `labels`: the sum of a
    /// counter's or gauge's samples, the `_count` of a histogram or summary.
    /// Absent is 0.
    pub(crate) fn level(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        let sample = match self.types.get(family).map(String::as_str) {
            Some("histogram" | "summary") => format!("{family}_count"),
            _ => family.to_owned(),
        };
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                *n == sample
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| v)
            .sum::<f64>()
            + 0.0 // an empty sum is -0
    }
}

pub(crate) fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} value is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

pub(crate) fn show(family: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return family.to_owned();
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{family}{{{}}}", l.join(","))
}
