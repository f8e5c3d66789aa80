//! Image keys, content-addressed (the BLAKE3 of the bytes): writing a key again writes the same
//! bytes, so a retried upload rewrites nothing.

use chrono::{DateTime, Utc};

use super::ImageKey;

/// A part's image, grouped by the day it was taken: `images/20261126/<blake3>.jpg`.
pub(super) fn part(digest: &str, at: DateTime<Utc>) -> ImageKey {
    ImageKey(format!("images/{}/{digest}.jpg", at.format("%Y%m%d")))
}

/// A golden image: `golden/<blake3>.jpg` (one copy, whichever SKUs' sets hold it).
pub(super) fn golden(digest: &str) -> ImageKey {
    ImageKey(format!("golden/{digest}.jpg"))
}

/// The thumbnail of a part's image, beside it under `thumbs/`:
/// `thumbs/20261126/<blake3>.jpg`.
pub(super) fn thumbnail(image: &ImageKey) -> ImageKey {
    let rest = image.0.strip_prefix("images/").unwrap_or(&image.0);
    ImageKey(format!("thumbs/{rest}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_are_content_addressed_parts_by_day() {
        let t = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(part("ab", t).0, "images/20261126/ab.jpg");
        assert_eq!(golden("cd").0, "golden/cd.jpg");
        assert_eq!(thumbnail(&part("ab", t)).0, "thumbs/20261126/ab.jpg");
    }
}
