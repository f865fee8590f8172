//! What validation found wrong, each problem naming its field.

use std::fmt;

/// One problem with one field of an input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    /// Where, as a path into the input: `nodes[2].ipv4`, `base.sha256`, `prerequisites[0]`; empty
    /// for the input as a whole.
    pub field: String,
    /// What is wrong, for a person: a whole sentence that names the field and may quote the value
    /// (`node "w1": ipv4 10.0.3.5 is outside 10.0.2.0/24`).
    pub message: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The message (which names the field in words).
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every problem validation found in one input (a recipe, a cluster spec), in the order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// What was validated ("the recipe", "the cluster spec"), for the heading.
    pub input: &'static str,
    /// The problems.
    pub list: Vec<Problem>,
}

impl Problems {
    /// No problems yet with `input`.
    pub fn new(input: &'static str) -> Self {
        Problems {
            input,
            list: Vec::new(),
        }
    }

    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem::new(field, message));
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Ok(())` when nothing was found, else the problems.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The problems' messages.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.list.iter().map(Problem::to_string)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in {}:", self.list.len(), self.input)?;
        for p in &self.list {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
