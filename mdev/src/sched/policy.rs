//! The scheduling policies a physical GPU can be configured with.

use std::fmt;
use std::str::FromStr;

use super::SchedError;

/// How one physical GPU's engine time is divided among its vGPUs.
///
/// The names are the configuration's (`scheduler = "equal-share"`):
/// [`FromStr`] parses them and [`fmt::Display`] prints them back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SchedulingPolicy {
    /// `best-effort`: the vGPUs that have work share the engine evenly, one
    /// time slice a turn; the engine never idles while any vGPU has work.
    #[default]
    BestEffort,
    /// `equal-share`: each registered vGPU owns 1/N of engine time, N the
    /// number registered, and gets no more; a share its owner leaves
    /// unused idles the engine.
    EqualShare,
    /// `fixed-share`: each registered vGPU owns weight / (sum of the
    /// registered vGPUs' weights) of engine time, whether it uses it or
    /// not, and gets no more.
    FixedShare,
}

impl SchedulingPolicy {
    /// Every policy, in the order the documentation lists them.
    pub const ALL: [Self; 3] = [Self::BestEffort, Self::EqualShare, Self::FixedShare];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BestEffort => "best-effort",
            Self::EqualShare => "equal-share",
            Self::FixedShare => "fixed-share",
        }
    }

    /// Whether the engine may idle while a vGPU has work (the share
    /// policies give nobody more than its share, so a share its owner
    /// leaves unused idles the engine).
    pub const fn reserves_shares(self) -> bool {
        !matches!(self, Self::BestEffort)
    }
}

impl fmt::Display for SchedulingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulingPolicy {
    type Err = SchedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|policy| policy.name() == s)
            .ok_or_else(|| SchedError::UnknownPolicy(s.to_owned()))
    }
}
