//! A claim of the project's about one of its figures, judged on a run of `segpool bench`, and
//! the lines that list claims: every section judges its own, the report and the docs list them.

use serde::{Deserialize, Serialize};

/// A claim of the project's about its figures, and whether this run's table meets it: the
/// figures depend on the machine, so a claim not met is reported, not treated as a failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    #[serde(alias = "target")]
    pub claim: String,
    pub holds: bool,
    pub detail: String,
}

impl Claim {
    /// The claim, what this run measured, and whether the measurement meets the claim, said
    /// neutrally: the figures depend on the machine, which the output names above its tables.
    pub fn text(&self) -> String {
        format!(
            "{}; measured: {} ({})",
            self.claim,
            self.detail,
            if self.holds {
                "met"
            } else {
                "not met on this machine"
            }
        )
    }
}

/// One `claim: ...` line per claim.
pub fn claim_lines(claims: &[Claim]) -> String {
    claims
        .iter()
        .map(|c| format!("claim: {}\n", c.text()))
        .collect()
}

/// One Markdown list item per claim, as the docs list them.
pub fn claim_lines_md(claims: &[Claim]) -> String {
    claims.iter().map(|c| format!("- {}\n", c.text())).collect()
}
