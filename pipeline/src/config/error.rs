//! Config errors: each one names where (file, line, column, key path), what was wrong, and
//! what would be valid. Loading collects every error it can find and reports them together.

use std::fmt;
use std::path::PathBuf;

use super::yaml::Location;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// Where in the file; `None` for problems of the whole file (unreadable, empty).
    pub location: Option<Location>,
    /// Dotted key path (`receivers.pcap/a.speed`); empty for the document itself.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(loc) = self.location {
                write!(f, ":{}:{}", loc.line, loc.column)?;
            }
            f.write_str(": ")?;
        } else if let Some(loc) = self.location {
            write!(f, "line {} column {}: ", loc.line, loc.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the config has {n} error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`? valid: a, b, c" — the tail of every unknown-name message.
pub fn suggestion(name: &str, candidates: &[&str], what: &str) -> String {
    let mut msg = String::new();
    if let Some(best) = did_you_mean(name, candidates.iter().copied()) {
        msg.push_str(&format!("did you mean `{best}`? "));
    }
    if candidates.is_empty() {
        msg.push_str(&format!("no {what} are defined"));
    } else {
        msg.push_str(&format!("valid {what}: {}", candidates.join(", ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(did_you_mean("speeed", ["path", "speed"]), Some("speed"));
        assert_eq!(
            did_you_mean("recievers", ["receivers", "processors"]),
            Some("receivers")
        );
        assert_eq!(did_you_mean("zzz", ["path", "speed"]), None);
    }
}
