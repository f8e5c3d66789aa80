//! A person's review of a result (`POST /api/v1/analyses/{id}/feedback`), and what the reviews
//! say of a model (`GET /api/v1/capability`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most characters of a feedback comment.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// What the reviewer says of the analyzer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FeedbackVerdict {
    /// The verdict (OK or NG) is right.
    Confirmed,
    /// Judged NG, but the part is good (a false reject).
    FalseNg,
    /// Judged OK, but the part is defective (an escape).
    FalseOk,
    /// The reviewer cannot tell.
    Inconclusive,
}

impl FeedbackVerdict {
    pub const ALL: [FeedbackVerdict; 4] = [
        FeedbackVerdict::Confirmed,
        FeedbackVerdict::FalseNg,
        FeedbackVerdict::FalseOk,
        FeedbackVerdict::Inconclusive,
    ];

    /// The snake_case name on the wire (and in the `feedback=` filter).
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackVerdict::Confirmed => "confirmed",
            FeedbackVerdict::FalseNg => "false_ng",
            FeedbackVerdict::FalseOk => "false_ok",
            FeedbackVerdict::Inconclusive => "inconclusive",
        }
    }

    pub fn parse(name: &str) -> Option<FeedbackVerdict> {
        FeedbackVerdict::ALL
            .into_iter()
            .find(|v| v.as_str() == name)
    }

    /// Whether the verdict can be said of a result judged `defect_detected`: `false_ng` only of
    /// an NG result, `false_ok` only of an OK one.
    pub fn fits(self, defect_detected: bool) -> bool {
        match self {
            FeedbackVerdict::FalseNg => defect_detected,
            FeedbackVerdict::FalseOk => !defect_detected,
            FeedbackVerdict::Confirmed | FeedbackVerdict::Inconclusive => true,
        }
    }
}

/// `POST /api/v1/analyses/{id}/feedback`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewFeedback {
    pub verdict: FeedbackVerdict,
    /// At most [`MAX_COMMENT_CHARS`] characters.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Most results one bulk review may name: a whole results page (its largest `limit`), so
/// "select all" on any page can be reviewed at once.
pub const MAX_BULK_REVIEW: usize = 500;

/// What a bulk review says of each result it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BulkVerdict {
    /// The verdict (OK or NG) is right.
    Confirmed,
    /// The verdict is wrong: `false_ng` of an NG result, `false_ok` of an OK one.
    Incorrect,
    /// The reviewer cannot tell.
    Inconclusive,
}

impl BulkVerdict {
    pub const ALL: [BulkVerdict; 3] = [
        BulkVerdict::Confirmed,
        BulkVerdict::Incorrect,
        BulkVerdict::Inconclusive,
    ];

    /// The snake_case name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkVerdict::Confirmed => "confirmed",
            BulkVerdict::Incorrect => "incorrect",
            BulkVerdict::Inconclusive => "inconclusive",
        }
    }

    pub fn parse(name: &str) -> Option<BulkVerdict> {
        BulkVerdict::ALL.into_iter().find(|v| v.as_str() == name)
    }

    /// The review of a result judged `defect_detected`.
    pub fn for_result(self, defect_detected: bool) -> FeedbackVerdict {
        match self {
            BulkVerdict::Confirmed => FeedbackVerdict::Confirmed,
            BulkVerdict::Incorrect if defect_detected => FeedbackVerdict::FalseNg,
            BulkVerdict::Incorrect => FeedbackVerdict::FalseOk,
            BulkVerdict::Inconclusive => FeedbackVerdict::Inconclusive,
        }
    }
}

/// `POST /api/v1/feedback`'s body: one review of many results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkFeedback {
    /// The results, 1 to [`MAX_BULK_REVIEW`] (repeats count once).
    pub ids: Vec<uuid::Uuid>,
    pub verdict: BulkVerdict,
    /// At most [`MAX_COMMENT_CHARS`] characters, the same on each result.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A result a bulk review recorded, with the review it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkReviewedResult {
    pub id: uuid::Uuid,
    pub verdict: FeedbackVerdict,
}

/// A result a bulk review did not record, and why (`not_found`, `not_judged`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkRefusal {
    pub id: uuid::Uuid,
    pub error: crate::ErrorDetail,
}

/// `POST /api/v1/feedback`'s answer: each named result, reviewed or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkReviewed {
    pub reviewed: Vec<BulkReviewedResult>,
    pub refused: Vec<BulkRefusal>,
}

/// A review as stored; a result shows its latest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feedback {
    pub verdict: FeedbackVerdict,
    pub comment: Option<String>,
    /// The name of the key the reviewer signed in (or called) with.
    pub by: String,
    pub at: DateTime<Utc>,
}

/// `GET /api/v1/capability`: how a SKU's model (one version, or all) fares against its reviews.
/// Each reviewed result counts once, by its latest review; `inconclusive` reviews count in
/// none of the four.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capability {
    pub product_sku: String,
    /// `None`: every version.
    pub model_version: Option<String>,
    /// NG confirmed.
    pub true_positives: u64,
    /// NG, reviewed `false_ng`.
    pub false_positives: u64,
    /// OK confirmed.
    pub true_negatives: u64,
    /// OK, reviewed `false_ok`.
    pub false_negatives: u64,
    pub inconclusive: u64,
    /// TP / (TP + FP); `None` without such reviews.
    pub precision: Option<f64>,
    /// TP / (TP + FN).
    pub recall: Option<f64>,
    /// FP / (FP + TN): good parts rejected.
    pub false_reject_rate: Option<f64>,
}

impl Capability {
    /// The figures from the four counts (and the inconclusive ones).
    pub fn new(
        product_sku: String,
        model_version: Option<String>,
        [tp, fp, tn, fn_, inconclusive]: [u64; 5],
    ) -> Capability {
        let ratio = |a: u64, b: u64| (a + b > 0).then(|| a as f64 / (a + b) as f64);
        Capability {
            product_sku,
            model_version,
            true_positives: tp,
            false_positives: fp,
            true_negatives: tn,
            false_negatives: fn_,
            inconclusive,
            precision: ratio(tp, fp),
            recall: ratio(tp, fn_),
            false_reject_rate: ratio(fp, tn),
        }
    }
}
