//! A strict parser for the Prometheus text exposition format 0.0.4, as a test oracle: it accepts
//! only what the format allows and checks the rules scrapers rely on (declared types, contiguous
//! families, no duplicate series, well-formed histograms).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family: its `# TYPE`, `# HELP` and samples.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: HashMap<String, Family>,
}

impl Exposition {
    /// The value of the one sample `name{labels}` (labels must match exactly).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .values()
            .flat_map(|family| family.samples.iter())
            .find(|sample| sample.name == name && sample.labels == wanted)
            .map(|sample| sample.value)
    }

    /// Like [`Exposition::value`], but a missing series reads as 0 (counters not yet touched).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.value(name, labels).map_or(0, |v| v as u64)
    }

    /// Every sample named `name`.
    pub fn samples(&self, name: &str) -> Vec<&Sample> {
        self.families
            .values()
            .flat_map(|family| family.samples.iter())
            .filter(|sample| sample.name == name)
            .collect()
    }

    /// Sum of every sample named `name` whose labels include `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .into_iter()
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("bad sample value {text:?}")),
    }
}

/// Splits `name{a="b",...} value` into its parts, honouring escapes in label values.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value on line {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut consumed = None;
        loop {
            // Label name up to '='.
            let mut label = String::new();
            let mut closed = false;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                if c == '}' && label.is_empty() {
                    consumed = Some(i + 1);
                    closed = true;
                    break;
                }
                label.push(c);
            }
            if closed {
                break;
            }
            if !is_label_name(&label) {
                return Err(format!("bad label name {label:?} in {line:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line:?}"));
            }
            let mut value = String::new();
            let mut terminated = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    '"' => {
                        terminated = true;
                        break;
                    }
                    '\n' => return Err(format!("raw newline in label value: {line:?}")),
                    c => value.push(c),
                }
            }
            if !terminated {
                return Err(format!("unterminated label value in {line:?}"));
            }
            if labels.insert(label.clone(), value).is_some() {
                return Err(format!("label {label:?} repeated in {line:?}"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    consumed = Some(i + 1);
                    break;
                }
                other => return Err(format!("expected , or }} but got {other:?} in {line:?}")),
            }
        }
        let consumed = consumed.ok_or_else(|| format!("unterminated labels in {line:?}"))?;
        rest = &after[consumed..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("expected one space before the value in {line:?}"))?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().unwrap_or(""))?;
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp in {line:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("trailing fields in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(sample: &'a str, types: &HashMap<String, Family>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(|f| f.kind.as_str()),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    sample
}

/// Parses `text` strictly; any violation is an `Err` naming the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = words.next().ok_or_else(|| format!("no name in {line:?}"))?;
            if !is_metric_name(name) {
                return Err(format!("bad metric name in {line:?}"));
            }
            let rest = words.next().unwrap_or("");
            if current.as_deref() != Some(name) {
                if finished.contains(name) {
                    return Err(format!("family {name} is not contiguous"));
                }
                if let Some(previous) = current.replace(name.to_string()) {
                    finished.insert(previous);
                }
            }
            let family = families.entry(name.to_string()).or_default();
            if keyword == "TYPE" {
                if !family.kind.is_empty() {
                    return Err(format!("second TYPE for {name}"));
                }
                if !family.samples.is_empty() {
                    return Err(format!("TYPE for {name} after its samples"));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                    return Err(format!("unknown type {rest:?} for {name}"));
                }
                family.kind = rest.to_string();
            } else {
                if family.help.is_some() {
                    return Err(format!("second HELP for {name}"));
                }
                family.help = Some(rest.to_string());
            }
            continue;
        }
        let sample = parse_sample(line)?;
        let base = family_of(&sample.name, &families).to_string();
        if current.as_deref() != Some(base.as_str()) {
            if finished.contains(&base) {
                return Err(format!("family {base} is not contiguous"));
            }
            if let Some(previous) = current.replace(base.clone()) {
                finished.insert(previous);
            }
        }
        if !series.insert((sample.name.clone(), sample.labels.clone())) {
            return Err(format!("duplicate series {line:?}"));
        }
        let family = families.entry(base.clone()).or_default();
        if family.kind.is_empty() {
            return Err(format!("sample {line:?} before any TYPE for {base}"));
        }
        match family.kind.as_str() {
            "counter" => {
                if !base.ends_with("_total") {
                    return Err(format!("counter {base} should end in _total"));
                }
                if sample.value.is_nan() || sample.value < 0.0 {
                    return Err(format!("negative or NaN counter: {line:?}"));
                }
            }
            "histogram" => {
                let ok = match sample.name.strip_prefix(&base) {
                    Some("_bucket") => sample.labels.contains_key("le"),
                    Some("_sum") | Some("_count") => !sample.labels.contains_key("le"),
                    _ => false,
                };
                if !ok {
                    return Err(format!("{line:?} is not a histogram series of {base}"));
                }
            }
            _ => {}
        }
        family.samples.push(sample);
    }
    for (name, family) in &families {
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(Exposition { families })
}

/// Buckets ascend, counts are cumulative, `+Inf` exists and equals `_count`, `_sum` exists.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut sums = BTreeSet::new();
    for sample in &family.samples {
        let mut labels = sample.labels.clone();
        if sample.name.ends_with("_bucket") {
            let le = labels.remove("le").unwrap_or_default();
            let le = parse_value(&le).map_err(|e| format!("{name}: le: {e}"))?;
            groups.entry(labels).or_default().push((le, sample.value));
        } else if sample.name.ends_with("_count") {
            counts.insert(labels, sample.value);
        } else {
            sums.insert(labels);
        }
    }
    for (labels, buckets) in &groups {
        let mut previous = (f64::NEG_INFINITY, 0.0);
        for (le, count) in buckets {
            if *le <= previous.0 {
                return Err(format!("{name}{labels:?}: le {le} not ascending"));
            }
            if *count < previous.1 {
                return Err(format!("{name}{labels:?}: bucket le={le} not cumulative"));
            }
            previous = (*le, *count);
        }
        if previous.0 != f64::INFINITY {
            return Err(format!("{name}{labels:?}: no +Inf bucket"));
        }
        if counts.get(labels) != Some(&previous.1) {
            return Err(format!("{name}{labels:?}: +Inf bucket differs from _count"));
        }
        if !sums.contains(labels) {
            return Err(format!("{name}{labels:?}: no _sum"));
        }
    }
    Ok(())
}

/// The parser's own checks, run by tests/metrics.rs so a lax oracle cannot pass silently.
pub fn self_test() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"q\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let parsed = parse(good).expect("valid exposition");
    assert_eq!(parsed.value("a_total", &[("x", "1\"q")]), Some(3.0));
    let bad = [
        "a_total 1\n",                                    // no TYPE
        "# TYPE a_total counter\na_total 1",              // no final newline
        "# TYPE a_total counter\na_total{x=\"1} 1\n",     // unterminated
        "# TYPE a_total counter\na_total 1\na_total 2\n", // duplicate
        "# TYPE a_total counter\na_total -1\n",           // negative counter
        "# TYPE a counter\na 1\n",                        // counter name
        "# TYPE g gauge\n# TYPE b gauge\nb 1\ng 1\n",     // not contiguous
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", // count mismatch
        "# TYPE g gauge\ng{x=\"a\\q\"} 1\n",                              // bad escape
        "# TYPE g gauge\ng  1\n",                                         // two spaces
    ];
    for text in bad {
        assert!(
            parse(text).is_err(),
            "the oracle accepted invalid input: {text:?}"
        );
    }
}
